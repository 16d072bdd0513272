"""Local representation alignment, LRA-fdbk and LRA-diff (paper 001 Algorithm 1, SPEC §2).

Walking down from the output while the layer's local loss is at least ε (the halting criterion,
which makes the depth of credit assignment vary per batch)::

    ∇W_ℓ = Normalize(∂L_ℓ(z_ℓ, y_ℓ)/∂W_ℓ, c1)                       (through f'_ℓ)
    Δh   = E_ℓ ∂L_ℓ/∂h_ℓ                (LRA-fdbk, fixed random E_ℓ, one step)
         = ∂L_ℓ/∂h_{ℓ−1}, K times       (LRA-diff, re-running the subgraph: "manifold walking")
    h̄_{ℓ−1} ← h̄_{ℓ−1} − β Normalize(Δh, c2),    y_{ℓ−1} = f_{ℓ−1}(h̄_{ℓ−1})

The output's loss is the cross-entropy against the label; hidden layers use L2, L1 or Cauchy.
LRA is a walk of the core (:mod:`reclra.walk`) down the chain, one layer per level: the work of
layer ``ℓ`` returns its update and sends the target ``y_{ℓ−1}`` to the layer below, or halts.
How ``Δh`` is made (feedback synapses or derivatives) is chosen once, by ``mode``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from reclra.executors import Executor
from reclra.functional import LOCAL_LOSSES, reproject
from reclra.layers import replay
from reclra.network import LayeredNet
from reclra.rules.base import LocalRule, Step, SynapseDict
from reclra.synapses import synapse_shape, transmit
from reclra.walk import LayerUpdate

__all__ = ["LRA"]


def _feedback_displacement(
    rule: LRA, ell: int, delta_h: Tensor, h_bar: Tensor, target: Tensor, skip: Tensor | None
) -> Tensor:
    """LRA-fdbk: ``Δh = E_ℓ ∂L_ℓ/∂h_ℓ`` through the fixed synapse of layer ``ℓ``."""
    return transmit(rule.E[str(ell)], delta_h, rule.net.layer(ell - 1).out_shape)


def _diff_displacement(
    rule: LRA, ell: int, delta_h: Tensor, h_bar: Tensor, target: Tensor, skip: Tensor | None
) -> Tensor:
    """LRA-diff: ``Δh = ∂L_ℓ/∂h̄_{ℓ−1}``, re-running layer ``ℓ`` on ``φ_{ℓ−1}(h̄_{ℓ−1})``."""
    below, layer = rule.net.layer(ell - 1), rule.net.layer(ell)
    with torch.enable_grad():
        hb = h_bar.detach().requires_grad_(True)
        h = replay(layer, below.activation(hb), skip)
        (grad,) = torch.autograd.grad(rule.layer_loss(ell, h, target).sum(), hb)
    return grad


#: how each mode makes a displacement step ``Δh`` for the layer below ``ℓ``
DISPLACEMENTS: dict[str, Callable[..., Tensor]] = {
    "fdbk": _feedback_displacement,
    "diff": _diff_displacement,
}
MODES = tuple(DISPLACEMENTS)


class LRA(LocalRule):
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
        executor: how the work of one level runs (LRA's levels hold one layer each).
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
        executor: str | Executor = "serial",
    ) -> None:
        super().__init__(net, executor=executor)
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
        self._displacement = DISPLACEMENTS[mode]
        self.c1, self.c2, self.epsilon = c1, c2, epsilon
        L = net.num_layers
        shapes = {}
        if mode == "fdbk":  # E_ℓ carries δ_ℓ to layer ℓ−1: dense, or a conv kernel between maps
            shapes = {
                str(ell): synapse_shape(net.layer(ell).out_shape, net.layer(ell - 1).out_shape)
                for ell in range(2, L + 1)
            }
        self.E = SynapseDict(shapes, learnable=False, init=e_init, std=e_init_std)
        self._levels = tuple((ell,) for ell in range(L, 0, -1))

    def layer_loss(self, ell: int, h: Tensor, target: Tensor) -> Tensor:
        """Per-example loss of layer ``ℓ`` at pre-activation ``h``: CE at the output, else local."""
        if ell == self.net.num_layers:
            return F.cross_entropy(h, target, reduction="none")
        return LOCAL_LOSSES[self.loss](self.net.layer(ell).activation.f(h), target)

    def _loss_grad(self, ell: int, h: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Batch-mean loss of layer ``ℓ`` and the per-example ``∂L_ℓ/∂h_ℓ``."""
        with torch.enable_grad():
            h_ = h.detach().requires_grad_(True)
            per_example = self.layer_loss(ell, h_, target)
            (grad,) = torch.autograd.grad(per_example.sum(), h_)
        return per_example.detach().mean(), grad

    def levels(self) -> tuple[tuple[int, ...], ...]:
        return self._levels

    def depth(self, updates: Mapping[int, LayerUpdate]) -> float:
        """The per-batch depth: how many layers the halting criterion let the walk update."""
        return float(len(updates))

    def layer_work(self, step: Step, ell: int, done: Mapping[int, LayerUpdate]) -> LayerUpdate:
        """Layer ``ℓ``'s loss against its target (halting if below ε), its re-projected update,
        and the target ``y_{ℓ−1}`` it sends below after ``K`` displacement steps."""
        trace, net = step.trace, self.net
        target = step.y if ell == net.num_layers else done[ell + 1].sends[ell]
        loss_val, delta_h = self._loss_grad(ell, trace.h[ell], target)
        if self.epsilon > 0 and float(loss_val) < self.epsilon:  # halting criterion
            return LayerUpdate.halted()
        directions = tuple(
            (p, reproject(g, self.c1)) for p, g in net.local_grads(trace, ell, delta_h)
        )
        if ell == 1:
            return LayerUpdate(delta_h, directions)
        h_bar = trace.h[ell - 1]
        for _ in range(self.K):
            step_h = self._displacement(self, ell, delta_h, h_bar, target, trace.skip[ell])
            h_bar = h_bar - self.beta * reproject(step_h.view_as(h_bar), self.c2, per_row=True)
        return LayerUpdate(delta_h, directions, {ell - 1: net.layer(ell - 1).activation.f(h_bar)})
