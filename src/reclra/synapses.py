"""Error synapses ``E_{j→i}``: how an error ``e_j`` becomes a displacement ``d_i`` (SPEC §1).

Three shapes of synapse, all linear in ``e_j``:

- **dense**, ``E ∈ R^{n_i × n_j}``: ``d_i = E e_j`` (the papers' form; any pair of layers);
- **channel**, ``E ∈ R^{C_i × 1 × n_j}``, from a vector layer (e.g. the output) to an image-shaped
  layer: ``d_i[c, :, :] = (E e_j)[c]``, the same displacement at every position of a channel.
  A random dense ``E`` gives every position its own random sign, which a network whose head
  pools globally (a ResNet) cannot align with — rec-LRA, like DFA, then does not learn (measured:
  ``docs/results.md``); a channel synapse matches the pooled head's structure;
- **convolutional**, ``E ∈ R^{C_j × C_i × k × k}``, between two image-shaped layers whose spatial
  sizes divide (``H_i = r H_j``): ``d_i = conv_transpose(e_j, E, stride r)``. A dense matrix between
  two 64×32×32 maps would hold 4·10⁹ numbers; a 3×3 kernel holds 37k. It is the same rule with
  the synapse's operator changed, exactly as a layer's operator may be dense or convolutional.

The synapse update of either kind is the VJP of the synapse operator w.r.t. ``E`` at ``e_j`` with a
cotangent on ``d_i``: ``−γ d_i`` for eq. 6 (dense: ``ΔE = −γ d_i e_jᵀ``), ``γ z*_i`` for the
transpose rule (dense: ``ΔE = γ z*_i e_jᵀ``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from reclra.functional import displacement

__all__ = ["synapse_grad", "synapse_shape", "transmit"]


def synapse_shape(
    out_shape_j: tuple[int, ...],
    out_shape_i: tuple[int, ...],
    kernel_size: int = 3,
    *,
    channel: bool = True,
) -> tuple[int, ...]:
    """Shape of ``E_{j→i}``: a conv kernel between image-shaped layers whose sizes divide; with
    ``channel``, a channel synapse from a vector layer to an image-shaped one; else a dense
    ``(n_i, n_j)`` matrix."""
    if _stride(out_shape_j, out_shape_i) is not None:
        return (out_shape_j[0], out_shape_i[0], kernel_size, kernel_size)
    if channel and len(out_shape_j) == 1 and len(out_shape_i) == 3:
        return (out_shape_i[0], 1, out_shape_j[0])
    n_i = 1
    for s in out_shape_i:
        n_i *= s
    n_j = 1
    for s in out_shape_j:
        n_j *= s
    return (n_i, n_j)


def _stride(out_shape_j: tuple[int, ...], out_shape_i: tuple[int, ...]) -> int | None:
    if len(out_shape_j) != 3 or len(out_shape_i) != 3:
        return None
    (_, hj, wj), (_, hi, wi) = out_shape_j, out_shape_i
    if hi % hj or wi % wj or hi // hj != wi // wj:
        return None
    return hi // hj


def transmit(
    E: Tensor, e_j: Tensor, out_shape_i: tuple[int, ...], *, record: bool = False
) -> Tensor:
    """``d_i`` from ``e_j`` through ``E``; returned flattened, ``(B, n_i)``.

    With ``record=True`` a convolutional synapse keeps the autograd graph from ``E`` to ``d_i``,
    so that :func:`synapse_grad` can reuse it instead of transmitting a second time.
    """
    if E.dim() == 2:
        return displacement(E, e_j)
    if E.dim() == 3:  # channel synapse: (B, C_i) broadcast over the positions of each channel
        d = displacement(E[:, 0, :], e_j)
        return d[:, :, None].expand(-1, -1, math.prod(out_shape_i[1:])).reshape(d.shape[0], -1)
    with torch.set_grad_enabled(record and E.requires_grad):
        return _conv_transmit(E, e_j, out_shape_i).flatten(1)


def _conv_transmit(E: Tensor, e_j: Tensor, out_shape_i: tuple[int, ...]) -> Tensor:
    r = out_shape_i[1] // e_j.shape[-2]
    k = E.shape[-1]
    return F.conv_transpose2d(e_j, E, stride=r, padding=k // 2, output_padding=r - 1)


def synapse_grad(E: Tensor, e_j: Tensor, cotangent: Tensor, *, d: Tensor | None = None) -> Tensor:
    """Batch-mean VJP of the synapse operator w.r.t. ``E`` at ``e_j`` with ``cotangent`` on ``d_i``.

    Dense: ``mean_b c_b e_jᵀ``; convolutional: the kernel-gradient correlation, through the graph
    of ``d`` when :func:`transmit` recorded one, else by transmitting again.
    """
    batch = e_j.shape[0]
    if E.dim() == 2:
        return cotangent.flatten(1).t() @ e_j.flatten(1) / batch  # (n_i, B) @ (B, n_j)
    if E.dim() == 3:  # channel synapse: the cotangent summed over each channel's positions
        c = cotangent.reshape(batch, E.shape[0], -1).sum(2)  # (B, C_i)
        return (c.t() @ e_j.flatten(1) / batch).unsqueeze(1)  # (C_i, 1, n_j)
    with torch.enable_grad():
        if d is None or d.grad_fn is None:
            E = E.detach().requires_grad_(True)
            d = _conv_transmit(E, e_j.detach(), tuple(cotangent.shape[1:]))
        (grad,) = torch.autograd.grad(d, E, cotangent.reshape(d.shape))
    return grad / batch
