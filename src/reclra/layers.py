"""The recording layer type and the per-operator local update (SPEC §1, DESIGN "Layers").

A :class:`Layer` is one representation point ``ℓ`` of a network::

    h_ℓ = op_ℓ(z*_{ℓ−1}) (+ z*_{ℓ−g} when the layer closes a residual block)
    z_ℓ = f_ℓ(h_ℓ),   z*_ℓ = g_ℓ(z_ℓ)

Everything that is not a representation point (flatten, pooling, batch-norm) lives inside ``op``.
A network (:class:`reclra.network.LayeredNet`) is a sequence of layers; its trace records what a
training forward pass saw at every layer, without keeping any state in the modules.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.func import functional_call

from reclra.activations import Activation, get_activation

__all__ = [
    "INITS",
    "Layer",
    "init_weight",
    "local_grads",
    "replay",
]


class Layer(nn.Module):
    """One representation point: an operator, an activation and an optional residual input.

    Calling the layer gives the pre-activation ``h = op(z_in) (+ shortcut(skip))``; the network
    applies ``activation`` (``z = f(h)``, ``z* = g(z)``) so that ``h`` and ``z`` can be recorded.

    Args:
        op: the operator ``h = op(z_in)`` (``nn.Linear``, a conv stack, a pseudo-conv, …).
        activation: name or :class:`~reclra.activations.Activation`.
        skip_from: index ``k`` of the representation ``z*_k`` added to ``h`` (residual output
            layer with gap ``g = ℓ − k``); ``None`` for a plain layer.
        shortcut: module applied to the residual input (a projection when shapes change);
            identity by default. It is part of this layer's operator: its parameters get this
            layer's local update.
        out_shape: shape of ``h`` for one example (default: ``(op.out_features,)``).
    """

    def __init__(
        self,
        op: nn.Module,
        activation: str | Activation,
        *,
        skip_from: int | None = None,
        shortcut: nn.Module | None = None,
        out_shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        self.op = op
        self.activation = get_activation(activation)
        self.skip_from = skip_from
        if shortcut is not None and skip_from is None:
            raise ValueError("a shortcut needs skip_from (the representation it reads)")
        self.shortcut = shortcut if shortcut is not None else nn.Identity()
        if out_shape is None:
            if not isinstance(op, nn.Linear):
                raise ValueError("out_shape is required for operators other than nn.Linear")
            out_shape = (op.out_features,)
        self.out_shape = tuple(out_shape)

    @property
    def size(self) -> int:
        """Number of units ``n_ℓ`` (the flattened size of ``h``)."""
        return math.prod(self.out_shape)

    @property
    def has_parameters(self) -> bool:
        """Whether the layer has parameters that learn."""
        return any(p.requires_grad for p in self.parameters())

    @property
    def is_dense(self) -> bool:
        """A plain ``nn.Linear`` with a parameter-free shortcut: the GEMM fast paths apply.

        Worked out once and again whenever ``op`` or ``shortcut`` is replaced (it is asked at
        every step).
        """
        return self._dense

    def __setattr__(self, name: str, value) -> None:
        super().__setattr__(name, value)
        if name in ("op", "shortcut") and "shortcut" in self._modules:
            op, shortcut = self._modules["op"], self._modules["shortcut"]
            dense = isinstance(op, nn.Linear) and not any(True for _ in shortcut.parameters())
            super().__setattr__("_dense", dense)

    def forward(self, z_in: Tensor, skip: Tensor | None = None) -> Tensor:
        """Pre-activation ``h = op(z_in) (+ shortcut(skip))``."""
        h = self.op(z_in)
        return h if skip is None else h + self.shortcut(skip)

    def extra_repr(self) -> str:
        skip = "" if self.skip_from is None else f", skip_from={self.skip_from}"
        return f"activation={self.activation.name}{skip}"


def replay(
    layer: Layer,
    z_in: Tensor,
    skip: Tensor | None = None,
    swap: dict[str, Tensor] | None = None,
) -> Tensor:
    """Re-run ``layer`` on recorded inputs without touching its buffers.

    Batch-norm running statistics are updated once, by the recorded forward pass; a replay works on
    copies of the buffers (same batch statistics in training mode). ``swap`` replaces parameters by
    name (FA's feedback matrices stand in for the weights this way).
    """
    state = {n: b.clone() for n, b in layer.named_buffers()}
    state.update(swap or {})
    return functional_call(layer, state, (z_in, skip))


def local_grads(
    layer: Layer,
    z_in: Tensor,
    cotangent: Tensor,
    skip: Tensor | None = None,
    *,
    h: Tensor | None = None,
) -> list[tuple[Tensor, Tensor]]:
    """The local update of ``layer``'s own parameters, as ``(parameter, direction)`` pairs.

    The update is the vector–Jacobian product of the layer's operator alone w.r.t. its parameters,
    at its recorded inputs (detached), with cotangent ``cotangent`` on ``h`` (SPEC §1), as a batch
    mean. For a dense layer this is ``ΔW = mean e z_inᵀ`` and ``Δb = mean e``, computed by a GEMM
    fast path; every other operator goes through autograd on the operator alone (it never
    differentiates through another layer or through φ): on ``h``, the pre-activation recorded
    with that layer's local graph if given, else on a replay of the layer.
    """
    e = cotangent / cotangent.shape[0]
    if layer.is_dense:
        op = layer.op
        out = [(op.weight, e.t() @ z_in)]  # (n_out, B) @ (B, n_in)
        if op.bias is not None:
            out.append((op.bias, e.sum(0)))
        return out
    params = [p for p in layer.parameters() if p.requires_grad]
    if not params:
        return []
    with torch.enable_grad():
        if h is None:
            h = replay(layer, z_in.detach(), None if skip is None else skip.detach())
        grads = torch.autograd.grad(
            h, params, grad_outputs=e.view_as(h), allow_unused=True, retain_graph=True
        )
    return [(p, g) for p, g in zip(params, grads, strict=True) if g is not None]


def _gaussian(w: Tensor, std: float) -> None:
    nn.init.normal_(w, 0.0, std) if std > 0 else nn.init.zeros_(w)


def _uniform(w: Tensor, _std: float) -> None:
    fan_in = w[0].numel() if w.dim() > 1 else w.shape[0]
    bound = 1.0 / math.sqrt(fan_in)
    nn.init.uniform_(w, -bound, bound)


def _xavier(w: Tensor, _std: float) -> None:
    nn.init.xavier_uniform_(w)


def _orthogonal(w: Tensor, _std: float) -> None:
    nn.init.orthogonal_(w)


INITS = {"gaussian": _gaussian, "uniform": _uniform, "xavier": _xavier, "orthogonal": _orthogonal}
"""Weight initialisations: Gaussian N(0, std²) (std 0 = null init), uniform ±1/√n_in, Xavier,
orthogonal."""


def init_weight(w: Tensor, scheme: str, std: float = 0.05) -> None:
    """Initialise a weight tensor in place with a named scheme (see :data:`INITS`)."""
    try:
        fn = INITS[scheme]
    except KeyError:
        raise ValueError(f"unknown init {scheme!r}; choose from {sorted(INITS)}") from None
    if std < 0:
        raise ValueError(f"init std must be >= 0, got {std}")
    with torch.no_grad():
        fn(w, std)
