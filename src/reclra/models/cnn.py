"""A plain convolutional network: conv layers (conv or pseudo-conv, pooling inside) then dense."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import nn

from reclra.layers import Layer
from reclra.network import LayeredNet
from reclra.ops import ConvOp, DenseOp, PseudoConvOp, out_shape_of

__all__ = ["CNN", "conv_op"]


def conv_op(
    kind: Literal["standard", "pseudo"],
    in_shape: tuple[int, ...],
    channels: int,
    *,
    kernel_size: int = 3,
    stride: int = 1,
    batch_norm: bool = False,
    pool: str | None = None,
    masks: int = 64,
    noise: float = 0.1,
) -> nn.Module:
    """A standard convolution or a pseudo-convolution with the same interface."""
    if kind == "standard":
        return ConvOp(
            in_shape, channels, kernel_size=kernel_size, stride=stride,
            batch_norm=batch_norm, pool=pool,
        )  # fmt: skip
    if kind == "pseudo":
        return PseudoConvOp(
            in_shape, channels, masks=masks, noise=noise, stride=stride,
            batch_norm=batch_norm, pool=pool,
        )  # fmt: skip
    raise ValueError(f"unknown conv {kind!r}; choose from standard, pseudo")


class CNN(LayeredNet):
    """Conv layers (each: conv → [batch-norm] → pool, then φ), dense layers, softmax output.

    Args:
        input_shape: ``(C, H, W)``.
        num_classes: output width.
        channels: filters of each conv layer.
        kernel_size: conv kernel size.
        pool: pooling inside each conv layer (``max``, ``avg`` or ``None``).
        hidden: widths of the dense layers after the convolutions.
        activation: φ of every hidden layer.
        conv: ``standard`` or ``pseudo`` (``masks`` fixed noise masks of level σ = ``noise``).
        batch_norm: batch-norm inside the conv operators.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        *,
        channels: Sequence[int] = (32, 64),
        kernel_size: int = 5,
        pool: str | None = "max",
        hidden: Sequence[int] = (256,),
        activation: str = "relu",
        conv: Literal["standard", "pseudo"] = "standard",
        masks: int = 64,
        noise: float = 0.1,
        batch_norm: bool = False,
    ) -> None:
        if len(input_shape) != 3:
            raise ValueError(f"a CNN needs image inputs (C, H, W), got input shape {input_shape}")
        sizes = {"channels": list(channels), "hidden": list(hidden)}
        sizes.update(kernel_size=[kernel_size], masks=[masks])
        for name, values in sizes.items():
            if any(v < 1 for v in values):
                raise ValueError(f"model.{name} must be positive, got {values}")
        layers, shape = [], tuple(input_shape)
        for c in channels:
            op = conv_op(
                conv, shape, c, kernel_size=kernel_size, batch_norm=batch_norm, pool=pool,
                masks=masks, noise=noise,
            )  # fmt: skip
            try:
                shape = out_shape_of(op, shape)
            except RuntimeError as exc:  # the maps shrank below one position
                detail = " ".join(str(exc).split())
                raise ValueError(
                    f"conv layer {len(layers) + 1} on maps {shape}: {detail}"
                ) from None
            layers.append(Layer(op, activation, out_shape=shape))
        for n in hidden:
            op = DenseOp(shape, n) if len(shape) == 3 else nn.Linear(shape[0], n)
            layers.append(Layer(op, activation, out_shape=(n,)))
            shape = (n,)
        out = DenseOp(shape, num_classes) if len(shape) == 3 else nn.Linear(shape[0], num_classes)
        layers.append(Layer(out, "softmax", out_shape=(num_classes,)))
        super().__init__(layers, input_shape=tuple(input_shape))
