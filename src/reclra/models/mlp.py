"""Multilayer perceptron (the papers' fully connected models)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from torch import nn

from reclra.activations import Activation
from reclra.layers import Layer, init_weight
from reclra.network import LayeredNet

__all__ = ["MLP"]


class MLP(LayeredNet):
    """A fully connected network ``sizes[0] → … → sizes[-1]`` with a softmax output.

    Args:
        sizes: layer widths, input first, number of classes last (e.g. ``[784, 256, 256, 10]``).
        activation: hidden activation, by name (see :func:`reclra.activations.activation_names`).
        init: weight initialisation (``gaussian``, ``uniform``, ``xavier``, ``orthogonal``).
        init_std: standard deviation of the ``gaussian`` init (0 is the null initialisation).
        input_shape: shape of one example; defaults to ``(sizes[0],)``.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str | Activation = "tanh",
        *,
        init: str = "gaussian",
        init_std: float = 0.05,
        input_shape: tuple[int, ...] | None = None,
    ) -> None:
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or any(s < 1 for s in sizes):
            raise ValueError(f"sizes must list at least 2 positive widths, got {sizes}")
        layers = []
        for ell, (n_in, n_out) in enumerate(pairwise(sizes), start=1):
            linear = nn.Linear(n_in, n_out)
            init_weight(linear.weight, init, init_std)
            nn.init.zeros_(linear.bias)
            is_output = ell == len(sizes) - 1
            layers.append(Layer(linear, "softmax" if is_output else activation))
        super().__init__(layers, input_shape=input_shape or (sizes[0],))
        self.sizes = sizes

    @property
    def linears(self) -> list[nn.Linear]:
        """The ``nn.Linear`` operators, bottom to top."""
        return [layer.op for layer in self.layers]
