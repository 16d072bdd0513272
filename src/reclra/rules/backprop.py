"""Backpropagation: the reference rule (exact gradient of the cross-entropy by autograd)."""

from __future__ import annotations

import torch
from torch import Tensor

from reclra.network import LayeredNet
from reclra.rules.base import Rule, StepStats, error_norm
from reclra.walk import apply_directions

__all__ = ["Backprop"]


class Backprop(Rule):
    """Exact gradient of the mean cross-entropy, by torch autograd through the whole network.

    Non-differentiable discretizers pass gradients straight through (see
    :mod:`reclra.activations`).

    Args:
        net: the network.
        error_norms: report ``‖∂L/∂h_ℓ‖`` per layer (per example, as ``error_norms``), the
            backprop counterpart of the local rules' error neurons; it asks autograd for every
            ``∂L/∂h_ℓ`` and costs up to a fifth of a small-batch MLP step. ``False`` takes the
            plain torch step — ``cross_entropy(net(x), y).backward()`` — and reports the loss
            alone: torch's own step, the reference for speed (``docs/PERFORMANCE.md``).
    """

    name = "backprop"

    def __init__(self, net: LayeredNet, *, error_norms: bool = True) -> None:
        super().__init__(net)
        self.error_norms = error_norms

    def compute_grads(self, x: Tensor, y: Tensor) -> StepStats:
        self.check_batch(x, y)
        depth = float(self.net.num_layers)
        if not self.error_norms:
            with torch.enable_grad():
                loss = torch.nn.functional.cross_entropy(self.net(x), y)
                loss.backward()  # adds into .grad, as the walk does
            return StepStats(loss=loss.detach(), depth=depth)
        params = [p for p in self.net.parameters() if p.requires_grad]
        with torch.enable_grad():
            trace = self.net.trace(x)
            loss = torch.nn.functional.cross_entropy(trace.logits, y)
            hs = trace.h[1:]
            grads = torch.autograd.grad(loss, params + hs, allow_unused=True)
        apply_directions(
            tuple(
                (p, g) for p, g in zip(params, grads[: len(params)], strict=True) if g is not None
            )
        )
        batch = x.shape[0]  # ∂L/∂h_ℓ of the mean loss is e_ℓ / B: ‖e_ℓ‖ = B ‖∂L/∂h_ℓ‖
        norms = {ell: error_norm(g) * batch for ell, g in enumerate(grads[len(params) :], start=1)}
        return StepStats(loss=loss.detach(), error_norms=norms, depth=depth)
