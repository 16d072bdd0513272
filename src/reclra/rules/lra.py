"""Local representation alignment, LRA-fdbk and LRA-diff (paper 001 Algorithm 1, SPEC §2).

Walking down from the output while the layer's local loss is at least ε (the halting criterion,
which makes the depth of credit assignment vary per batch)::

    ∇W_ℓ = Normalize(∂L_ℓ(z_ℓ, y_ℓ)/∂W_ℓ, c1)                       (through f'_ℓ)
    Δh   = E_ℓ ∂L_ℓ/∂h_ℓ                (LRA-fdbk, fixed random E_ℓ, one step)
         = ∂L_ℓ/∂h_{ℓ−1}, K times       (LRA-diff, re-running the subgraph: "manifold walking")
    h̄_{ℓ−1} ← h̄_{ℓ−1} − β Normalize(Δh, c2),    y_{ℓ−1} = f_{ℓ−1}(h̄_{ℓ−1})

The output's loss is the cross-entropy against the label; hidden layers use L2, L1 or Cauchy.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from reclra.functional import LOCAL_LOSSES, reproject
from reclra.layers import accumulate_grad, local_grads, replay
from reclra.network import LayeredNet
from reclra.rules.base import Rule, StepStats, SynapseDict, error_norm
from reclra.synapses import synapse_shape, transmit

__all__ = ["LRA"]

MODES = ("fdbk", "diff")


class LRA(Rule):
    """LRA (001): layer-wise targets with a halting criterion.

    LRA walks the chain of layers ``L → L−1 → … → 1``. On a residual model the residual input of a
    layer (``z*_{ℓ−g}``) is a constant input of that layer's subgraph: it shapes ``h_ℓ`` and the
    layer's local update, and receives no displacement from it.

    Args:
        net: the network.
        mode: ``"fdbk"`` (fixed random error synapses ``E_ℓ``, ``K = 1``) or ``"diff"`` (true
            derivatives, ``K`` steps).
        beta: β, the step along the displacement.
        K: number of displacement steps (``diff`` only).
        loss: hidden layers' local loss, ``l2``, ``l1`` or ``cauchy``.
        c1: re-projection bound of the weight updates (``None``: off).
        c2: re-projection bound of each example's displacement (``None``: off).
        epsilon: halting criterion ε: stop descending once a layer's batch-mean loss is below it.
        e_init: initialisation scheme of ``E`` (``fdbk``; dense, or a 3×3 kernel between two
            image-shaped layers — see :mod:`reclra.synapses`).
        e_init_std: standard deviation of ``E`` (σ_E ≈ 1 in 001).
    """

    name = "lra"

    def __init__(
        self,
        net: LayeredNet,
        *,
        mode: Literal["fdbk", "diff"] = "fdbk",
        beta: float = 0.1,
        K: int = 1,
        loss: str = "l2",
        c1: float | None = 1.0,
        c2: float | None = 1.0,
        epsilon: float = 0.0,
        e_init: str = "gaussian",
        e_init_std: float = 1.0,
    ) -> None:
        super().__init__(net)
        if mode not in MODES:
            raise ValueError(f"unknown LRA mode {mode!r}; choose from {MODES}")
        if loss not in LOCAL_LOSSES:
            raise ValueError(f"unknown local loss {loss!r}; choose from {sorted(LOCAL_LOSSES)}")
        if K < 1 or (mode == "fdbk" and K != 1):
            raise ValueError(f"K must be >= 1 (and 1 for LRA-fdbk), got K={K} with mode={mode!r}")
        if beta <= 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        if epsilon < 0:
            raise ValueError(f"epsilon must be >= 0, got {epsilon}")
        for name, c in (("c1", c1), ("c2", c2)):
            if c is not None and c <= 0:
                raise ValueError(f"{name} must be > 0 or None, got {c}")
        self.mode, self.beta, self.K, self.loss = mode, beta, K, loss
        self.c1, self.c2, self.epsilon = c1, c2, epsilon
        L = net.num_layers
        shapes = {}
        if mode == "fdbk":  # E_ℓ carries δ_ℓ to layer ℓ−1: dense, or a conv kernel between maps
            shapes = {
                str(ell): synapse_shape(net.layer(ell).out_shape, net.layer(ell - 1).out_shape)
                for ell in range(2, L + 1)
            }
        self.E = SynapseDict(shapes, learnable=False, init=e_init, std=e_init_std)

    def _layer_loss(self, ell: int, h: Tensor, target: Tensor) -> Tensor:
        """Per-example loss of layer ``ℓ`` at pre-activation ``h``: CE at the output, else local."""
        if ell == self.net.num_layers:
            return F.cross_entropy(h, target, reduction="none")
        return LOCAL_LOSSES[self.loss](self.net.layer(ell).activation.f(h), target)

    def _loss_grad(self, ell: int, h: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Batch-mean loss of layer ``ℓ`` and the per-example ``∂L_ℓ/∂h_ℓ``."""
        with torch.enable_grad():
            h_ = h.detach().requires_grad_(True)
            per_example = self._layer_loss(ell, h_, target)
            (grad,) = torch.autograd.grad(per_example.sum(), h_)
        return per_example.detach().mean(), grad

    def _diff_step(self, ell: int, h_bar: Tensor, target: Tensor, skip: Tensor | None) -> Tensor:
        """``∂L_ℓ/∂h̄_{ℓ−1}``, re-running layer ``ℓ`` on ``φ_{ℓ−1}(h̄_{ℓ−1})`` (per example)."""
        below, layer = self.net.layer(ell - 1), self.net.layer(ell)
        with torch.enable_grad():
            hb = h_bar.detach().requires_grad_(True)
            h = replay(layer, below.activation(hb), skip)
            (grad,) = torch.autograd.grad(self._layer_loss(ell, h, target).sum(), hb)
        return grad

    def compute_grads(self, x: Tensor, y: Tensor) -> StepStats:
        self.check_batch(x, y)
        net, L = self.net, self.net.num_layers
        with torch.no_grad():
            trace = net.trace(x, local_graphs=True)
        target: Tensor = y
        norms: dict[int, Tensor] = {}
        out_loss = None
        depth = 0
        for ell in range(L, 0, -1):
            loss_val, delta_h = self._loss_grad(ell, trace.h[ell], target)
            if ell == L:
                out_loss = loss_val
            if self.epsilon > 0 and float(loss_val) < self.epsilon:  # halting criterion
                break
            depth += 1
            norms[ell] = error_norm(delta_h)
            layer_grads = local_grads(
                net.layer(ell), trace.inp[ell], delta_h, trace.skip[ell], h=trace.local[ell]
            )
            for p, g in layer_grads:
                accumulate_grad(p, reproject(g, self.c1))
            if ell == 1:
                break
            with torch.no_grad():
                h_bar = trace.h[ell - 1]
                for _ in range(self.K):
                    if self.mode == "fdbk":
                        out_shape = net.layer(ell - 1).out_shape
                        step = transmit(self.E[str(ell)], delta_h, out_shape)
                    else:
                        step = self._diff_step(ell, h_bar, target, trace.skip[ell])
                    step = reproject(step.view_as(h_bar), self.c2, per_row=True)
                    h_bar = h_bar - self.beta * step
                target = net.layer(ell - 1).activation.f(h_bar)
        assert out_loss is not None
        return StepStats(loss=out_loss, error_norms=norms, depth=float(depth))
