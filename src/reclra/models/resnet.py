"""Residual networks: a fully connected MLP-ResNet and a CIFAR-style ResNet-18 (SPEC §3).

A residual block is ``g`` layers; the last ("block output", the meta-representation) adds the
block's input: ``h_ℓ = op_ℓ(z_{ℓ−1}) + shortcut(z_{ℓ−g})``. Each model names its blocks, so the
``blocks`` error pathway (000 Algorithm 2 / 002 Algorithm 1) can wire output → block output →
support layers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from torch import Tensor, nn

from reclra.layers import Layer, init_weight
from reclra.models.cnn import conv_op
from reclra.network import Block, LayeredNet
from reclra.ops import DenseOp, out_shape_of

__all__ = ["MLPResNet", "ResNet18", "Shortcut"]


class MLPResNet(LayeredNet):
    """Fully connected residual network: stem, ``blocks`` blocks of ``gap`` layers, softmax output.

    Args:
        input_shape: shape of one example (flattened to ``D``).
        num_classes: output width.
        width: units of every hidden layer.
        blocks: number of residual blocks.
        gap: layers per block ``g`` (the skip spans ``g`` layers; ``g ≥ 2``).
        activation: φ of every hidden layer.
        init, init_std: weight initialisation (see :data:`reclra.layers.INITS`).
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        width: int = 256,
        blocks: int = 2,
        gap: int = 2,
        activation: str = "tanh",
        init: str = "gaussian",
        init_std: float = 0.05,
    ) -> None:
        if gap < 2 or blocks < 1 or width < 1:
            raise ValueError(
                f"need gap >= 2, blocks >= 1, width >= 1; got {gap}, {blocks}, {width}"
            )
        n_in = math.prod(input_shape)

        def linear(a: int, b: int) -> nn.Linear:
            lin = nn.Linear(a, b)
            init_weight(lin.weight, init, init_std)
            nn.init.zeros_(lin.bias)
            return lin

        layers = [Layer(linear(n_in, width), activation)]
        block_list = []
        for _ in range(blocks):
            start = len(layers)  # index of the block's input representation
            for k in range(1, gap + 1):
                skip = start if k == gap else None
                layers.append(Layer(linear(width, width), activation, skip_from=skip))
            block_list.append(
                Block(output=start + gap, support=tuple(range(start + 1, start + gap)))
            )
        layers.append(Layer(linear(width, num_classes), "softmax"))
        super().__init__(layers, input_shape=tuple(input_shape), blocks=tuple(block_list))


class Shortcut(nn.Module):
    """Residual input of a conv block: identity, or a 1×1 projection (+ batch-norm) on a change of
    shape."""

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        out_channels: int,
        stride: int,
        *,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.in_shape = tuple(in_shape)
        if stride == 1 and in_shape[0] == out_channels:
            self.proj = nn.Identity()
        else:
            self.proj = nn.Sequential(
                nn.Conv2d(in_shape[0], out_channels, 1, stride, bias=not batch_norm),
                nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity(),
            )

    def forward(self, z: Tensor) -> Tensor:
        return self.proj(z.view(-1, *self.in_shape))  # (B, C, H, W)


class ResNet18(LayeredNet):
    """CIFAR-style ResNet-18: a 3×3 stem, four stages of two basic blocks, global pooling, softmax.

    Every convolution is ``conv → batch-norm`` inside its layer's operator, φ = relu by default.
    Stage ``s`` has ``width·2^s`` channels and stride 2 from the second stage on. With
    ``conv="pseudo"`` every 3×3 convolution becomes a pseudo-convolution with ``masks`` fixed
    noise masks (σ = ``noise``); the 1×1 projection shortcuts stay standard.

    Args:
        input_shape: ``(C, H, W)`` — e.g. ``(1, 28, 28)`` or ``(3, 32, 32)``.
        num_classes: output width.
        width: channels of the first stage (64 in the papers).
        stages: basic blocks per stage (``(2, 2, 2, 2)`` is ResNet-18).
        conv: ``standard`` or ``pseudo``.
        masks, noise: pseudo-convolution settings.
        activation: φ of every hidden layer.
        batch_norm: batch-norm after every convolution (and in projection shortcuts).
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        *,
        width: int = 64,
        stages: Sequence[int] = (2, 2, 2, 2),
        conv: Literal["standard", "pseudo"] = "standard",
        masks: int = 64,
        noise: float = 0.1,
        activation: str = "relu",
        batch_norm: bool = True,
    ) -> None:
        if len(input_shape) != 3:
            raise ValueError(f"ResNet18 needs image inputs (C, H, W), got {input_shape}")
        if width < 1 or masks < 1 or not stages or min(stages) < 1:
            raise ValueError(
                f"need width >= 1, masks >= 1 and stages of >= 1 blocks; got {width}, {masks}, "
                f"{list(stages)}"
            )

        def op(shape, channels, stride=1):
            return conv_op(
                conv, shape, channels, stride=stride, batch_norm=batch_norm, masks=masks,
                noise=noise,
            )  # fmt: skip

        stem = op(tuple(input_shape), width)
        shape = out_shape_of(stem, tuple(input_shape))
        layers = [Layer(stem, activation, out_shape=shape)]
        block_list = []
        for s, n_blocks in enumerate(stages):
            channels = width * 2**s
            for b in range(n_blocks):
                stride = 2 if (s > 0 and b == 0) else 1
                start, block_in = len(layers), shape
                support = op(block_in, channels, stride)
                shape = out_shape_of(support, block_in)
                layers.append(Layer(support, activation, out_shape=shape))
                output = op(shape, channels)
                layers.append(
                    Layer(
                        output, activation, skip_from=start,
                        shortcut=Shortcut(block_in, channels, stride, batch_norm=batch_norm),
                        out_shape=shape,
                    )
                )  # fmt: skip
                block_list.append(Block(output=start + 2, support=(start + 1,)))
        head = DenseOp(shape, num_classes, pool="global")
        layers.append(Layer(head, "softmax", out_shape=(num_classes,)))
        super().__init__(layers, input_shape=tuple(input_shape), blocks=tuple(block_list))
