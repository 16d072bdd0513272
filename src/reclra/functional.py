"""Pure maths of the learning rules: targets, error neurons, local losses, re-projection.

Every function here is stateless and works on batches in row-major layout (``B × n``); the rules
in :mod:`reclra.rules` keep the state (error synapses, feedback matrices) and call these.
Names follow SPEC §1–2: ``h`` pre-activation, ``z`` post-activation, ``d`` displacement,
``y`` target, ``e`` error neurons, ``E`` error synapse, ``beta``/``gamma`` the two step sizes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "LOCAL_LOSSES",
    "angle_degrees",
    "displacement",
    "error_neurons",
    "local_loss",
    "output_error",
    "reproject",
    "target",
]


def output_error(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Output error neurons ``e_L = softmax(h_L) − onehot(y)`` (= ∂CE/∂h_L) and the mean CE.

    ``logits``: (B, C) pre-activation of the output layer; ``labels``: (B,) class indices.
    """
    log_probs = torch.log_softmax(logits, dim=1)  # (B, C), one pass for the error and the loss
    loss = torch.nn.functional.nll_loss(log_probs, labels)  # = cross_entropy(logits, labels)
    e = log_probs.exp_()  # softmax(h_L), in place
    e.scatter_add_(1, labels[:, None], e.new_full((labels.shape[0], 1), -1.0))  # − onehot(y)
    return e, loss


def displacement(E: Tensor, e_j: Tensor) -> Tensor:
    """``d_i = E_{j→i} e_j`` for a batch: ``E`` is (n_i, n_j), ``e_j`` is (B, n_j) → (B, n_i)."""
    return e_j.flatten(1) @ E.t()


def target(f: Callable[[Tensor], Tensor], h: Tensor, d: Tensor, beta: float) -> Tensor:
    """Target of a layer, eq. 3: ``y_i = f_i(h_i − β d_i)`` (``d`` is reshaped to ``h``'s shape)."""
    return f(h - beta * d.view_as(h))


def error_neurons(z: Tensor, y: Tensor) -> Tensor:
    """Error neurons, eq. 4: ``e_i = z_i − y_i``."""
    return z - y


def reproject(delta: Tensor, c: float | None, *, per_row: bool = False) -> Tensor:
    """Re-projection ``Nm(Δ, c) = c·Δ/‖Δ‖ if ‖Δ‖ ≥ c else Δ`` (001 eq. 1; 000 appendix).

    The norm is the Frobenius norm of the whole tensor, or, with ``per_row=True``, the norm of
    each example's slice (used for displacements, one vector per example). ``c=None`` is a no-op.
    """
    if c is None:
        return delta
    if c <= 0:
        raise ValueError(f"re-projection bound must be > 0, got {c}")
    if per_row:
        norms = delta.flatten(1).norm(dim=1).view(-1, *([1] * (delta.dim() - 1)))
    else:
        norms = delta.norm()
    scale = torch.where(norms >= c, c / norms.clamp_min(torch.finfo(delta.dtype).tiny), 1.0)
    return delta * scale


def _l2(z: Tensor, y: Tensor) -> Tensor:
    return 0.5 * (z - y).pow(2).flatten(1).sum(1)


def _l1(z: Tensor, y: Tensor) -> Tensor:
    return (z - y).abs().flatten(1).sum(1)


def _cauchy(z: Tensor, y: Tensor) -> Tensor:
    return torch.log1p((z - y).pow(2)).flatten(1).sum(1)


LOCAL_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "l2": _l2,
    "l1": _l1,
    "cauchy": _cauchy,
}
"""Per-example local losses of 001: L2 ``½Σ(y−z)²``, L1 ``Σ|y−z|``, Cauchy ``Σ log(1+(y−z)²)``."""


def local_loss(name: str, z: Tensor, y: Tensor) -> Tensor:
    """Batch-mean local loss ``L(z, y)`` by name (``l2``, ``l1``, ``cauchy``)."""
    try:
        fn = LOCAL_LOSSES[name]
    except KeyError:
        raise ValueError(
            f"unknown local loss {name!r}; choose from {sorted(LOCAL_LOSSES)}"
        ) from None
    return fn(z, y).mean()


def angle_degrees(a: Tensor, b: Tensor) -> float:
    """Angle in degrees between two update directions (flattened), as in 001 Figure 7."""
    a, b = a.flatten().double(), b.flatten().double()
    cos = torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-300)
    return float(torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0))))
