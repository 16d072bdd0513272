"""Operators that live inside a layer: convolution stacks and pseudo-convolution (SPEC §3–4).

An operator maps a layer's input (flattened or not) to its pre-activation ``h``. Whatever is not
a representation point — the reshape from the flattened input, batch-norm, pooling — is part of
the operator, so its parameters receive the layer's local update (the VJP of the operator alone).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["ConvOp", "DenseOp", "PseudoConvOp", "out_shape_of"]

Pool = Literal["max", "avg", "global"] | None


def _pool(kind: Pool, size: int) -> nn.Module:
    if kind is None:
        return nn.Identity()
    if kind == "max":
        return nn.MaxPool2d(size)
    if kind == "avg":
        return nn.AvgPool2d(size)
    if kind == "global":
        return nn.AdaptiveAvgPool2d(1)
    raise ValueError(f"unknown pooling {kind!r}; choose from max, avg, global or None")


def out_shape_of(op: nn.Module, in_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of ``op``'s output for one example of ``in_shape`` (a dry run in eval mode)."""
    was_training = op.training
    op.eval()
    with torch.no_grad():
        out = op(torch.zeros(1, *in_shape))
    op.train(was_training)
    return tuple(out.shape[1:])


class ConvOp(nn.Module):
    """``h = pool(bn(conv(z)))``: a 2-D convolution with optional batch-norm and pooling.

    Args:
        in_shape: ``(C, H, W)`` of one input example (inputs may arrive flattened).
        out_channels: number of filters.
        kernel_size, stride, padding: as ``nn.Conv2d`` (padding defaults to ``kernel_size // 2``).
        batch_norm: add ``nn.BatchNorm2d`` after the convolution.
        pool: ``"max"``, ``"avg"``, ``"global"`` (average to 1×1) or ``None``.
        pool_size: window of max/avg pooling.
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        out_channels: int,
        *,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        batch_norm: bool = False,
        pool: Pool = None,
        pool_size: int = 2,
    ) -> None:
        super().__init__()
        self.in_shape = tuple(in_shape)
        pad = kernel_size // 2 if padding is None else padding
        self.conv = nn.Conv2d(
            in_shape[0], out_channels, kernel_size, stride, pad, bias=not batch_norm
        )
        self.bn = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()
        self.pool = _pool(pool, pool_size)

    def forward(self, z: Tensor) -> Tensor:
        z = z.view(-1, *self.in_shape)  # (B, C, H, W)
        return self.pool(self.bn(self.conv(z)))


class PseudoConvOp(nn.Module):
    """Pseudo-convolution (perturbative layer, Juefei-Xu et al. 2018; SPEC §4).

    ``M`` fixed Gaussian noise masks ``n^m ~ N(0, σ²)`` perturb the input maps, a relu follows, and
    a learnable 1×1 convolution mixes the ``M`` perturbed maps into ``C_out`` channels::

        h^c = Σ_m w_c^m relu(z^{a(m)} + n^m)

    Input channel ``a(m) = m mod C_in`` feeds map ``m`` when ``C_in ≤ M``; with more input channels
    than masks, map ``m`` reads the sum of the channels ``c ≡ m (mod M)``, so no channel is lost.
    The masks and the channel assignment are buffers: saved in checkpoints, never updated. Only
    the mixing weights (and bias / batch-norm) learn; under rec-LRA their update is
    ``Δw_c^m = Σ_{i,j} (e_c ⊙ relu(z^m + n^m))[i, j]`` — the VJP of the 1×1 mixing.

    Args:
        in_shape: ``(C, H, W)`` of one input example.
        out_channels: ``C_out``.
        masks: ``M``, the number of noise masks.
        noise: σ, the noise level (0.1 in the papers).
        stride: spatial downsampling, by average pooling of the mixed maps (a 1×1 mixing has no
            spatial extent, so pooling — not a strided 1×1 that would drop 3 pixels of 4 — is
            what widens the receptive field).
        batch_norm, pool, pool_size: as :class:`ConvOp`.
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        out_channels: int,
        *,
        masks: int = 64,
        noise: float = 0.1,
        stride: int = 1,
        batch_norm: bool = False,
        pool: Pool = None,
        pool_size: int = 2,
    ) -> None:
        super().__init__()
        if masks < 1:
            raise ValueError(f"masks must be >= 1, got {masks}")
        if noise < 0:
            raise ValueError(f"noise level must be >= 0, got {noise}")
        c_in, height, width = in_shape
        self.in_shape = tuple(in_shape)
        assign = torch.zeros(masks, c_in)  # (M, C_in): which input channels feed map m
        if c_in <= masks:
            assign[torch.arange(masks), torch.arange(masks) % c_in] = 1.0
        else:
            assign[torch.arange(c_in) % masks, torch.arange(c_in)] = 1.0
        self.register_buffer("assign", assign)
        self.register_buffer("masks", noise * torch.randn(masks, height, width))  # (M, H, W)
        self.mix = nn.Conv2d(masks, out_channels, 1, bias=not batch_norm)
        self.down = nn.AvgPool2d(stride, ceil_mode=True) if stride > 1 else nn.Identity()
        self.bn = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()
        self.pool = _pool(pool, pool_size)

    def perturbed(self, z: Tensor) -> Tensor:
        """The relu'd perturbed maps ``relu(z^{a(m)} + n^m)``, shape ``(B, M, H, W)``."""
        z = z.view(-1, *self.in_shape)  # (B, C_in, H, W)
        maps = torch.einsum("mc,bchw->bmhw", self.assign, z)  # (B, M, H, W)
        return torch.relu(maps + self.masks)

    def forward(self, z: Tensor) -> Tensor:
        return self.pool(self.bn(self.down(self.mix(self.perturbed(z)))))


class DenseOp(nn.Module):
    """``h = W pool(z) + b`` on image-shaped inputs: (optional pooling) → flatten → linear."""

    def __init__(
        self, in_shape: tuple[int, ...], out_features: int, *, pool: Pool = None, pool_size: int = 2
    ) -> None:
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.pool = _pool(pool, pool_size)
        pooled = out_shape_of(self.pool, self.in_shape) if pool else self.in_shape
        self.linear = nn.Linear(math.prod(pooled), out_features)

    def forward(self, z: Tensor) -> Tensor:
        z = self.pool(z.view(-1, *self.in_shape))
        return self.linear(z.flatten(1))
