"""The network type every learning rule works on: layers in forward order, recorded in a trace.

This is core: a model builder (:mod:`reclra.models`, :func:`reclra.from_module`) only assembles
:class:`~reclra.layers.Layer` objects into a :class:`LayeredNet`; a rule only reads the
:class:`Trace` of a forward pass and the net's layers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from reclra.layers import Layer, local_grads

__all__ = ["Block", "LayeredNet", "Trace"]


@dataclass(frozen=True)
class Block:
    """A residual block: its output layer (the "meta-representation") and its support layers."""

    output: int
    support: tuple[int, ...]


@dataclass
class Trace:
    """What a forward pass recorded, indexed by layer ``ℓ = 1 … L`` (index 0 is the input).

    ``inp[ℓ]`` operator input ``z*_{ℓ−1}``; ``skip[ℓ]`` residual input ``z*_{ℓ−g}`` or ``None``;
    ``h[ℓ]`` pre-activation (residual input included); ``z[ℓ]`` ``f(h)``, where targets live;
    ``out[ℓ]`` ``z* = g(z)``, what the next layer sees.
    """

    inp: list[Tensor | None] = field(default_factory=list)
    skip: list[Tensor | None] = field(default_factory=list)
    #: per layer, ``h`` with the autograd graph of that layer's operator alone (inputs detached),
    #: recorded for non-dense layers when asked (``local_graphs=True``), else ``None``
    local: list[Tensor | None] = field(default_factory=list)
    h: list[Tensor | None] = field(default_factory=list)
    z: list[Tensor | None] = field(default_factory=list)
    out: list[Tensor] = field(default_factory=list)

    @property
    def logits(self) -> Tensor:
        """Output pre-activation ``h_L``."""
        h = self.h[-1]
        assert h is not None
        return h


class LayeredNet(nn.Module):
    """A feedforward network as a sequence of :class:`~reclra.layers.Layer` (``ℓ = 1 … L``).

    Layer ``ℓ`` reads ``z*_{ℓ−1}`` (``z*_0 = x``, flattened to ``(B, D)``) and, if it closes a
    residual block, adds ``z*_{skip_from}``. The last layer's activation is the softmax; calling
    the network returns the logits ``h_L``. Subclasses only build the layers (and name the blocks).

    Args:
        layers: the layers, bottom to top (fixed once the network is built).
        input_shape: shape of one example (e.g. ``(1, 28, 28)``); inputs arrive flattened.
        blocks: residual blocks, for the ``blocks`` error pathway.
    """

    def __init__(
        self,
        layers: list[Layer],
        *,
        input_shape: tuple[int, ...],
        blocks: tuple[Block, ...] = (),
    ) -> None:
        super().__init__()
        if not layers:
            raise ValueError("a network needs at least one layer")
        self.layers = nn.ModuleList(layers)
        self._by_index = (None, *layers)  # layer ℓ by index: asked many times per step
        self.input_shape = tuple(input_shape)
        self.blocks = tuple(blocks)
        for ell, layer in enumerate(self.layers, start=1):
            if layer.skip_from is not None and not 0 <= layer.skip_from < ell:
                raise ValueError(
                    f"layer {ell} takes a residual input from {layer.skip_from}, "
                    f"which is not an earlier representation"
                )
        # per representation k, the last layer that reads it as a residual input: a plain forward
        # keeps z*_k alive until then and no longer
        self._last_skip_reader = {
            layer.skip_from: ell
            for ell, layer in enumerate(self.layers, start=1)
            if layer.skip_from is not None
        }

    @property
    def num_layers(self) -> int:
        """``L``, the index of the output layer."""
        return len(self.layers)

    def layer(self, ell: int) -> Layer:
        """Layer ``ℓ`` (1-based, as in the papers). The layers are fixed at construction."""
        if not 1 <= ell < len(self._by_index):
            raise IndexError(f"layer {ell} is outside 1..{self.num_layers}")
        return self._by_index[ell]

    @property
    def stochastic(self) -> bool:
        """Whether any layer samples in its forward pass (Bernoulli units)."""
        return any(layer.activation.stochastic for layer in self.layers)

    def trace(self, x: Tensor, *, local_graphs: bool = False) -> Trace:
        """Forward pass recording ``(input, h, z, z*)`` of every layer.

        With ``local_graphs=True`` (used under ``no_grad`` by the local rules), every non-dense
        layer with parameters also keeps the autograd graph of its own operator, from detached
        inputs to ``h`` (``trace.local``), so its local update needs no second forward pass.
        """
        t = Trace(inp=[None], skip=[None], local=[None], h=[None], z=[None], out=[x.flatten(1)])
        for ell, layer in enumerate(self.layers, start=1):
            z_in = t.out[ell - 1]
            skip = None if layer.skip_from is None else t.out[layer.skip_from]
            if local_graphs and not layer.is_dense and layer.has_parameters:
                with torch.enable_grad():
                    h_local = layer(z_in.detach(), None if skip is None else skip.detach())
                h = h_local.detach()
            else:
                h_local, h = None, layer(z_in, skip)
            z = layer.activation.f(h)
            t.inp.append(z_in)
            t.skip.append(skip)
            t.local.append(h_local)
            t.h.append(h)
            t.z.append(z)
            t.out.append(layer.activation.g(z))
        return t

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``h_L`` of a batch ``x`` of shape ``(B, D)`` or ``(B, *input_shape)``.

        Unlike :meth:`trace`, only the representations a later layer still reads (the current one
        and pending residual inputs) are kept alive.
        """
        z = x.flatten(1)
        kept: dict[int, Tensor] = {0: z} if 0 in self._last_skip_reader else {}
        *hidden, output = self.layers
        for ell, layer in enumerate(hidden, start=1):
            z = layer.activation(layer(z, self._residual_input(kept, ell)))  # h_ℓ is not kept
            if ell in self._last_skip_reader:
                kept[ell] = z
        return output(z, self._residual_input(kept, self.num_layers))

    def _residual_input(self, kept: dict[int, Tensor], ell: int) -> Tensor | None:
        """``z*_k`` for layer ``ℓ`` (``k`` = its ``skip_from``), dropped after its last reader."""
        k = self.layer(ell).skip_from
        if k is None:
            return None
        return kept[k] if self._last_skip_reader[k] > ell else kept.pop(k)

    def local_grads(self, trace: Trace, ell: int, cotangent: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Directions of layer ``ℓ``'s own parameters from a cotangent on its ``h``: the VJP of its
        operator alone at the inputs ``trace`` recorded (:func:`~reclra.layers.local_grads`)."""
        return local_grads(
            self.layer(ell), trace.inp[ell], cotangent, trace.skip[ell], h=trace.local[ell]
        )

    @torch.no_grad()
    def recalibrate_norms(self, batches: Iterable[Tensor]) -> int:
        """Re-estimate every batch-norm layer's running statistics over ``batches`` of inputs.

        The statistics become the plain (cumulative) average of the batches' own statistics, as
        in train mode, instead of the exponential average the training steps left; no parameter
        changes, and the training flag, each layer's momentum and the random state are restored.
        Returns the number of batch-norm layers re-estimated (0: nothing to do).
        """
        norms = [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return 0
        momenta = [m.momentum for m in norms]
        was_training = self.training
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
        self.train()
        try:
            with torch.random.fork_rng(devices=[]):  # stochastic units must not move the RNG
                for x in batches:
                    self(x)
        finally:
            for m, momentum in zip(norms, momenta, strict=True):
                m.momentum = momentum
            self.train(was_training)
        return len(norms)

    @torch.no_grad()
    def predict_proba(self, x: Tensor, *, samples: int = 100) -> Tensor:
        """Class posteriors; averaged over ``samples`` forward passes for stochastic networks."""
        if not self.stochastic:
            return torch.softmax(self(x), dim=1)
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        return sum(torch.softmax(self(x), dim=1) for _ in range(samples)) / samples
