"""Per-layer diagnostics of a local rule: its signals, its directions and backprop's gradient.

:func:`diagnose` takes one step of a local rule on a batch and reports, for every layer, the
norm of its error neurons, the norm of its update direction, backprop's gradient at the same
weights and the angle between the two (001 Figure 7's measure: 0° is backprop's direction, 90°
orthogonal to it), and the effective rank of the layer's error neurons and targets over the
batch (a rule whose errors all come from a 10-class output through fixed synapses teaches each
layer through a signal of rank ≤ 10). It leaves the model exactly as it found it: weights,
``.grad``, batch-norm statistics and the random state.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from reclra.functional import angle_degrees
from reclra.rules import Backprop, LocalRule

__all__ = ["LayerDiagnostics", "diagnose", "effective_rank"]


@dataclass(frozen=True)
class LayerDiagnostics:
    """One layer ``ℓ`` at one step (norms are of the layer's parameters' directions, joined)."""

    layer: int
    error_norm: float  # batch mean of ‖e_ℓ‖ (nan where the rule gave the layer no error)
    update_norm: float  # ‖rule's direction‖
    gradient_norm: float  # ‖backprop's gradient‖
    angle: float  # degrees between the two (nan where either is zero)
    error_rank: float  # effective rank of e_ℓ, (B × n_ℓ) (nan where there is none)
    target_rank: float  # effective rank of the target z_ℓ − e_ℓ (nan where there is none)

    def as_dict(self) -> dict:
        return asdict(self)


def effective_rank(m: Tensor) -> float:
    """Effective rank of a matrix (Roy & Vetterli 2007): ``exp`` of the entropy of its normalised
    singular values — between 1 (rank one) and ``min(m.shape)`` (all equal)."""
    s = torch.linalg.svdvals(m.detach().flatten(1).double())
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def _joined(tensors: list[Tensor | None]) -> Tensor | None:
    parts = [t.detach().flatten() for t in tensors if t is not None]
    return torch.cat(parts) if parts else None


def diagnose(rule: LocalRule, x: Tensor, y: Tensor) -> list[LayerDiagnostics]:
    """One step of ``rule`` on ``(x, y)`` against backprop at the same weights, layer by layer."""
    if not isinstance(rule, LocalRule):
        raise TypeError(f"diagnose takes a local rule (rec-LRA, LRA, FA, DFA), got {rule.name}")
    net = rule.net
    params = list(rule.parameters())
    kept_grads = [p.grad for p in params]
    kept_buffers = {name: b.clone() for name, b in rule.named_buffers()}
    try:
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            state = torch.random.get_rng_state()
            for p in params:
                p.grad = None
            step, updates = rule.walk(x, y)
            rows = {}
            for ell in range(1, net.num_layers + 1):
                u = updates.get(ell)
                e = None if u is None else u.error
                rows[ell] = {
                    "direction": _joined([p.grad for p in net.layer(ell).parameters()]),
                    "error_norm": math.nan if e is None else float(e.flatten(1).norm(dim=1).mean()),
                    "error_rank": math.nan if e is None else effective_rank(e),
                    "target_rank": (
                        math.nan if e is None else effective_rank(step.trace.z[ell] - e)
                    ),
                }
            for p in params:
                p.grad = None
            torch.random.set_rng_state(state)  # the same samples as the rule's forward pass
            for name, b in rule.named_buffers():
                b.copy_(kept_buffers[name])
            Backprop(net).compute_grads(x, y)
            out = []
            for ell, row in rows.items():
                grad = _joined([p.grad for p in net.layer(ell).parameters()])
                d = row["direction"]
                both = d is not None and grad is not None and d.norm() > 0 and grad.norm() > 0
                out.append(
                    LayerDiagnostics(
                        layer=ell,
                        error_norm=row["error_norm"],
                        update_norm=0.0 if d is None else float(d.norm()),
                        gradient_norm=0.0 if grad is None else float(grad.norm()),
                        angle=angle_degrees(d, grad) if both else math.nan,
                        error_rank=row["error_rank"],
                        target_rank=row["target_rank"],
                    )
                )
            return out
    finally:
        for p, g in zip(params, kept_grads, strict=True):
            p.grad = g
        with torch.no_grad():
            for name, b in rule.named_buffers():
                b.copy_(kept_buffers[name])
