"""Feedback alignment (FA, Lillicrap et al. 2016) and direct feedback alignment (DFA, Nøkland 2016).

Both are walks of the core (:mod:`reclra.walk`) with a fixed random feedback pathway in place of
the weight transpose: FA walks the chain ``L → … → 1`` (each layer sends its input cotangents to
the layers it reads), DFA feeds every hidden layer from the output in one level. Each layer's
update is the local VJP of its own operator (:func:`reclra.layers.local_grads`) with the stand-in
of ``δ_ℓ = ∂L/∂h_ℓ`` as cotangent.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from reclra.activations import Activation
from reclra.executors import Executor
from reclra.functional import displacement
from reclra.layers import Layer, replay
from reclra.network import LayeredNet
from reclra.rules.base import LocalRule, Step, SynapseDict
from reclra.walk import LayerUpdate

__all__ = ["DFA", "FA"]


def activation_vjp(act: Activation, h: Tensor, v: Tensor) -> Tensor:
    """``vᵀ ∂φ(h)/∂h`` for ``φ = g∘f`` (straight-through for discretizers)."""
    with torch.enable_grad():
        h_ = h.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(act(h_), h_, v.view_as(h_))
    return grad


def _feedback_params(layer: Layer) -> list[str]:
    """Names of the layer parameters a feedback matrix stands in for (matrices and kernels)."""
    return [n for n, p in layer.named_parameters() if p.dim() >= 2]


def _key(ell: int, pname: str) -> str:
    return f"{ell}:{pname}".replace(".", "/")


def input_vjp(
    layer: Layer, z_in: Tensor, skip: Tensor | None, delta_h: Tensor, swap: dict[str, Tensor]
) -> tuple[Tensor, Tensor | None]:
    """Cotangents on the layer's inputs (operator input, residual input), with the parameters in
    ``swap`` replaced (FA's ``B`` standing in for ``W``)."""
    if layer.is_dense:
        delta_skip = None if skip is None else delta_h.view_as(skip)
        return delta_h @ swap["op.weight"], delta_skip  # (B, n_out) @ (n_out, n_in)
    with torch.enable_grad():
        inputs = [z_in.detach().requires_grad_(True)]
        if skip is not None:
            inputs.append(skip.detach().requires_grad_(True))
        h = replay(layer, inputs[0], inputs[1] if skip is not None else None, swap)
        grads = torch.autograd.grad(h, inputs, delta_h.view_as(h))
    return grads[0], (grads[1] if skip is not None else None)


class _Feedback(LocalRule):
    """A walk with fixed random feedback tensors ``B`` (buffers) of the shapes the rule names."""

    def __init__(
        self,
        net: LayeredNet,
        *,
        feedback_init: str = "uniform",
        feedback_std: float = 0.05,
        executor: str | Executor = "serial",
    ) -> None:
        super().__init__(net, executor=executor)
        shapes = self.feedback_shapes(net)
        self.B = SynapseDict(shapes, learnable=False, init=feedback_init, std=feedback_std)
        self._levels = self.plan(net)

    @staticmethod
    def feedback_shapes(net: LayeredNet) -> dict[str, tuple[int, ...]]:  # pragma: no cover
        """The shape of every feedback tensor, by name."""
        raise NotImplementedError

    def plan(self, net: LayeredNet) -> tuple[tuple[int, ...], ...]:  # pragma: no cover
        """The levels of the walk (worked out once)."""
        raise NotImplementedError

    def levels(self) -> tuple[tuple[int, ...], ...]:
        return self._levels


class FA(_Feedback):
    """Feedback alignment: ``δ_{ℓ−1} = φ'(h_{ℓ−1}) ⊙ (B_ℓ-transported δ_ℓ)``, ``B_ℓ`` fixed random.

    ``B_ℓ`` has the shape of ``W_ℓ`` and replaces it in the backward pass only; with ``B_ℓ = W_ℓ``
    FA is exactly backprop. Residual inputs pass their error straight through, as in backprop.

    Args:
        net: the network.
        feedback_init: init scheme of ``B`` (see :data:`reclra.layers.INITS`).
        feedback_std: its std for the ``gaussian`` scheme.
        executor: how the work of one level runs (FA's levels hold one layer each).
    """

    name = "fa"

    def plan(self, net: LayeredNet) -> tuple[tuple[int, ...], ...]:
        """The chain ``L → … → 1``; also which layers read each ``z*_k``."""
        L = net.num_layers
        # the layers that read z*_k (k+1, and residual outputs), top first: the order in which
        # their cotangents on z*_k are summed
        self._readers: dict[int, list[int]] = {k: [] for k in range(1, L)}
        for ell in range(L, 1, -1):
            skip_from = net.layer(ell).skip_from
            if skip_from and skip_from != ell - 1:
                self._readers[skip_from].append(ell)
            self._readers[ell - 1].append(ell)
        for readers in self._readers.values():
            readers.sort(reverse=True)
        return tuple((ell,) for ell in range(L, 0, -1))

    @staticmethod
    def feedback_shapes(net: LayeredNet) -> dict[str, tuple[int, ...]]:
        """``B_ℓ`` for every weight or kernel of layers ``2 … L``, shaped like it."""
        return {
            _key(ell, n): tuple(net.layer(ell).get_parameter(n).shape)
            for ell in range(2, net.num_layers + 1)
            for n in _feedback_params(net.layer(ell))
        }

    def feedback(self, ell: int) -> dict[str, Tensor]:
        """The feedback tensors of layer ``ℓ``, by operator-parameter name."""
        return {n: self.B[_key(ell, n)] for n in _feedback_params(self.net.layer(ell))}

    def depth(self, updates: Mapping[int, LayerUpdate]) -> float:
        return float(self.net.num_layers)

    def layer_work(self, step: Step, ell: int, done: Mapping[int, LayerUpdate]) -> LayerUpdate:
        """``δ_ℓ`` from the cotangents its readers sent, the layer's update, and the cotangents
        it sends to the layers it reads (through ``B_ℓ``)."""
        trace, layer = step.trace, self.net.layer(ell)
        if ell == self.net.num_layers:
            delta_h = step.e_L
        else:
            parts = [done[reader].sends[ell] for reader in self._readers[ell]]
            delta_z = parts[0]
            for part in parts[1:]:
                delta_z = delta_z + part
            delta_h = activation_vjp(layer.activation, trace.h[ell], delta_z)
        directions = tuple(self.net.local_grads(trace, ell, delta_h))
        if ell == 1:
            return LayerUpdate(delta_h, directions)
        delta_in, delta_skip = input_vjp(
            layer, trace.inp[ell], trace.skip[ell], delta_h, self.feedback(ell)
        )
        sends = {ell - 1: delta_in}
        if layer.skip_from:  # the residual input's cotangent goes straight back to its source
            k = layer.skip_from
            sends[k] = delta_skip if k not in sends else sends[k] + delta_skip
        return LayerUpdate(delta_h, directions, sends)


class DFA(_Feedback):
    """Direct feedback alignment: ``δ_ℓ = φ'(h_ℓ) ⊙ B_ℓ e_L`` for every hidden layer.

    ``B_ℓ`` (``n_ℓ × n_L``) is fixed and random; the output layer uses ``e_L`` itself. Every hidden
    layer reads the output alone, so they form one level: the executor may run them at once.

    Args:
        net: the network.
        feedback_init: init scheme of ``B`` (see :data:`reclra.layers.INITS`).
        feedback_std: its std for the ``gaussian`` scheme.
        executor: how the work of the hidden layers' level runs.
    """

    name = "dfa"

    def plan(self, net: LayeredNet) -> tuple[tuple[int, ...], ...]:
        """The output, then every hidden layer in one level."""
        L = net.num_layers
        return ((L,), tuple(range(1, L))) if L > 1 else ((L,),)

    @staticmethod
    def feedback_shapes(net: LayeredNet) -> dict[str, tuple[int, ...]]:
        """``B_ℓ`` of shape ``(n_ℓ, n_L)`` for every hidden layer."""
        L = net.num_layers
        return {str(ell): (net.layer(ell).size, net.layer(L).size) for ell in range(1, L)}

    def layer_work(self, step: Step, ell: int, done: Mapping[int, LayerUpdate]) -> LayerUpdate:
        trace, layer = step.trace, self.net.layer(ell)
        if ell == self.net.num_layers:
            delta_h = step.e_L
        else:
            delta_z = displacement(self.B[str(ell)], step.e_L)
            delta_h = activation_vjp(layer.activation, trace.h[ell], delta_z)
        return LayerUpdate(delta_h, tuple(self.net.local_grads(trace, ell, delta_h)))
