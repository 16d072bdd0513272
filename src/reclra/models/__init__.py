"""Models: every network is a :class:`LayeredNet` of recording layers; built by name."""

from __future__ import annotations

import math
from collections.abc import Sequence

from reclra.models.cnn import CNN
from reclra.models.mlp import MLP
from reclra.models.resnet import MLPResNet, ResNet18
from reclra.network import Block, LayeredNet
from reclra.registry import Registry

__all__ = [
    "CNN",
    "MLP",
    "MODELS",
    "Block",
    "LayeredNet",
    "MLPResNet",
    "ResNet18",
    "build_model",
    "model_names",
]

MODELS: Registry[LayeredNet] = Registry("model")


def build_model(
    name: str, *, input_shape: tuple[int, ...], num_classes: int, **options
) -> LayeredNet:
    """Build a registered model for inputs of ``input_shape`` and ``num_classes`` classes."""
    return MODELS.build(name, input_shape=tuple(input_shape), num_classes=num_classes, **options)


def model_names() -> list[str]:
    return MODELS.names()


@MODELS.register("mlp")
def mlp(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    hidden: Sequence[int] = (256, 256, 256, 256, 256),
    sizes: Sequence[int] | None = None,
    activation: str = "tanh",
    init: str = "gaussian",
    init_std: float = 0.05,
) -> MLP:
    """MLP with ``hidden`` widths (or the full ``sizes`` list, input and classes included)."""
    n_in = math.prod(input_shape)
    if sizes is None:
        if not hidden:
            raise ValueError(
                "model.hidden must list at least one width, e.g. [256] (without hidden layers "
                "there is no credit to assign)"
            )
        sizes = [n_in, *hidden, num_classes]
    sizes = list(sizes)
    if sizes[0] != n_in or sizes[-1] != num_classes:
        raise ValueError(
            f"model.sizes {sizes} does not fit the data: the first width must be the input size "
            f"{n_in} and the last the number of classes {num_classes}"
        )
    return MLP(sizes, activation, init=init, init_std=init_std, input_shape=tuple(input_shape))


MODELS.register("cnn")(CNN)
MODELS.register("mlp-resnet")(MLPResNet)
MODELS.register("resnet18")(ResNet18)
