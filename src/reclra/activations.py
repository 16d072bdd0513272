"""Activations φ, split as ``z* = g(f(h))`` (001 §2.3.2; SPEC §5).

``f`` is the differentiable part: targets are set on ``z = f(h)`` and every rule that needs a
derivative uses ``f'``. ``g`` is the discretizer (sign, Bernoulli sample, lateral competition): the
forward pass propagates ``z* = g(z)``. For ordinary activations ``g`` is the identity. Under
autograd ``g`` passes gradients straight through (sign, Bernoulli) or through its winners' mask
(LWTA), so backprop and FA stay defined on every activation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ACTIVATIONS", "Activation", "activation_names", "get_activation"]


def _identity(t: Tensor) -> Tensor:
    return t


def _straight_through(z: Tensor, hard: Tensor) -> Tensor:
    """Value ``hard``, gradient of ``z`` (the straight-through estimator)."""
    return z + (hard - z).detach()


def _blocks(z: Tensor, n: int) -> Tensor:
    """View the units of each example as competition blocks: (B, m) → (B, m/n, n)."""
    if z.dim() != 2 or z.shape[1] % n != 0:
        raise ValueError(
            f"lateral competition needs a (batch, units) input with units divisible by the block "
            f"size {n}, got shape {tuple(z.shape)}"
        )
    return z.view(z.shape[0], -1, n)


def _sign_pm1(z: Tensor) -> Tensor:
    return _straight_through(z, torch.where(z >= 0, 1.0, -1.0).to(z.dtype))


def _sign_01(z: Tensor) -> Tensor:
    return _straight_through(z, (z >= 0).to(z.dtype))


def _bernoulli(z: Tensor) -> Tensor:
    return _straight_through(z, torch.bernoulli(z.detach()))


def _lwta(z: Tensor, n: int = 4) -> Tensor:
    """Hard local winner-take-all in blocks of ``n``; ties go to the lowest index (001 eq. 7)."""
    zb = _blocks(z, n)  # (B, m/n, n)
    winner = zb.detach().argmax(dim=2, keepdim=True)  # first maximum on ties
    mask = torch.zeros_like(zb).scatter_(2, winner, 1.0)
    return (zb * mask).view_as(z)


def _slwta(z: Tensor, n: int = 4) -> Tensor:
    """Soft LWTA: softmax inside each block of ``n`` (001 eq. 8)."""
    return torch.softmax(_blocks(z, n), dim=2).view_as(z)


@dataclass(frozen=True)
class Activation:
    """An activation ``z* = g(f(h))``.

    ``name`` is the registry name; ``stochastic`` marks activations whose forward pass samples
    (evaluation then averages class posteriors over several passes).
    """

    name: str
    f: Callable[[Tensor], Tensor]
    g: Callable[[Tensor], Tensor] = _identity
    stochastic: bool = False

    def __call__(self, h: Tensor) -> Tensor:
        return self.g(self.f(h))

    @property
    def plain(self) -> bool:
        """Whether ``z* = z`` (no discretizer ``g``): the representation is ``f(h)`` itself."""
        return self.g is _identity


def _softmax(h: Tensor) -> Tensor:
    return torch.softmax(h, dim=1)


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in [
        Activation("tanh", torch.tanh),
        Activation("sigmoid", torch.sigmoid),
        Activation("relu", torch.relu),
        Activation("leaky_relu", F.leaky_relu),
        Activation("elu", F.elu),
        Activation("relu6", F.relu6),
        Activation("softplus", F.softplus),
        Activation("softsign", F.softsign),
        Activation("hardtanh", F.hardtanh),
        Activation("identity", _identity),
        Activation("softmax", _softmax),
        # Non-differentiable and stochastic units (SPEC §5): targets on f, forward through g.
        Activation("sign", torch.tanh, _sign_pm1),  # sign(v) ∈ {−1, +1}
        Activation("sign01", torch.tanh, _sign_01),  # 001 footnote 6: 1 if v ≥ 0 else 0
        Activation("bernoulli", torch.sigmoid, _bernoulli, stochastic=True),
        Activation("lwta", torch.tanh, _lwta),  # LWTA-1
        Activation("lwta2", F.hardtanh, _lwta),  # LWTA-2
        Activation("slwta", torch.tanh, _slwta),  # SLWTA-1
        Activation("slwta2", F.hardtanh, _slwta),  # SLWTA-2
    ]
}
"""Every activation by name. ``softmax`` is for the output layer only."""


def activation_names() -> list[str]:
    """Registered activation names (hidden-layer ones; ``softmax`` is the output's)."""
    return [n for n in ACTIVATIONS if n != "softmax"]


def get_activation(name: str | Activation) -> Activation:
    """Look an activation up by name (an :class:`Activation` is returned as is)."""
    if isinstance(name, Activation):
        return name
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose from {', '.join(activation_names())}"
        ) from None
