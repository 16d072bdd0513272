"""Backpropagation: the reference rule (exact gradient of the cross-entropy by autograd)."""

from __future__ import annotations

import torch
from torch import Tensor

from reclra.rules.base import Rule, StepStats, error_norm
from reclra.walk import apply_directions

__all__ = ["Backprop"]


class Backprop(Rule):
    """Exact gradient of the mean cross-entropy, by torch autograd through the whole network.

    Non-differentiable discretizers pass gradients straight through (see
    :mod:`reclra.activations`). ``error_norms`` reports ``‖∂L/∂h_ℓ‖`` per layer (per example).
    """

    name = "backprop"

    def compute_grads(self, x: Tensor, y: Tensor) -> StepStats:
        self.check_batch(x, y)
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
        batch = x.shape[0]
        norms = {ell: error_norm(g * batch) for ell, g in enumerate(grads[len(params) :], start=1)}
        return StepStats(loss=loss.detach(), error_norms=norms, depth=float(self.net.num_layers))
