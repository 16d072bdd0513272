"""Recursive local representation alignment (rec-LRA; papers 000 and 002, SPEC §1).

After one forward pass, error neurons are computed from the output down the error pathway::

    e_L = softmax(h_L) − onehot(y)
    d_i = Σ_j E_{j→i} e_j        y_i = f_i(h_i − β d_i)        e_i = z_i − y_i

and every layer is updated as soon as its ``e_i`` is known, by the VJP of its own operator with
cotangent ``e_i`` (dense: ``ΔW = e_i z_{i−1}ᵀ``) — no global backward pass, no derivative of φ.
The layers of one pathway level are independent: :meth:`RecLRA.levels` are the pathway's levels,
and the walk's executor may run the work of a level in any order or at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import reduce
from typing import Literal

import torch
from torch import Tensor

from reclra.executors import Executor
from reclra.functional import error_neurons, reproject, target
from reclra.network import LayeredNet, Trace
from reclra.pathway import Pathway, edge_key
from reclra.rules.base import LocalRule, Step, StepStats, SynapseDict, error_norm
from reclra.rules.rec_lra_dense import DenseSkipKernel
from reclra.synapses import synapse_grad, synapse_shape, transmit
from reclra.walk import Directions, LayerUpdate

__all__ = ["ERROR_RULES", "RecLRA", "SynapseRule"]


class SynapseRule:
    """How the error synapses ``E_{j→i}`` learn: the cotangent on ``d_i`` whose VJP w.r.t. ``E``
    (at ``e_j``) is ``ΔE`` (before γ). Chosen once, by name, when the rule is built."""

    name = "fixed"
    #: whether ``E`` learns (``nn.Parameter``) or stays fixed (buffer)
    learnable = False

    def cotangent(self, d_ji: Tensor, out_i: Tensor) -> Tensor:  # pragma: no cover - fixed
        """Cotangent on ``d_i`` (flattened, ``(B, n_i)``) from ``d_ji = E_{j→i} e_j`` and
        ``z*_i``."""
        raise NotImplementedError("fixed synapses do not learn")


class PaperSynapses(SynapseRule):
    """Eq. 6: ``ΔE_{j→i} = −γ d_i e_jᵀ`` (each synapse with its own part ``E_{j→i} e_j``)."""

    name, learnable = "paper", True

    def cotangent(self, d_ji: Tensor, out_i: Tensor) -> Tensor:
        return -d_ji


class TransposeSynapses(SynapseRule):
    """``ΔE_{j→i} = γ z*_i e_jᵀ`` — on a chain edge ``γ ΔW_{i+1}ᵀ``, as in the LRA-E code."""

    name, learnable = "transpose", True

    def cotangent(self, d_ji: Tensor, out_i: Tensor) -> Tensor:
        return out_i


SYNAPSE_RULES: dict[str, SynapseRule] = {
    r.name: r for r in (PaperSynapses(), SynapseRule(), TransposeSynapses())
}
ERROR_RULES = tuple(SYNAPSE_RULES)


def _level_betas(beta: float | Sequence[float], depth: int) -> tuple[float, ...]:
    """β of each of the ``depth`` pathway levels below the output, from one number or a list."""
    betas = (beta,) * depth if isinstance(beta, (int, float)) else tuple(beta)
    if len(betas) != depth:
        raise ValueError(
            f"beta has {len(betas)} values for a pathway of {depth} levels below the output; "
            f"give one number or {depth}"
        )
    if not all(b > 0 for b in betas):
        raise ValueError(f"beta must be > 0, got {beta}")
    return betas


class RecLRA(LocalRule):
    """rec-LRA over any error pathway.

    The defaults (``skip`` pathway — ``blocks`` on residual models —, ``fixed`` synapses,
    β = 0.1, E ~ N(0, 0.05²)) are the best of the project's own measurements on Fashion-MNIST
    (see ``docs/results.md``): on the MLP the three synapse rules are within seed noise, and on a
    batch-norm ResNet the learned ones grow without bound under Adam.

    Args:
        net: the network.
        pathway: ``"chain"``, ``"skip"``, ``"blocks"``, a list of edges ``(j, i)``, or a
            :class:`~reclra.pathway.Pathway`. Default: ``"blocks"`` for residual models (000
            Algorithm 2), ``"skip"`` otherwise.
        beta: β, the step of the target displacement (eq. 3): one number for every layer, or
            one per pathway level below the output (``[β_1, β_2, …]``, level 1 first — on
            ``blocks``: the block outputs, then their support layers).
        gamma: γ, the scale of the error-synapse update (eq. 6 / transpose rule).
        error_rule: how the synapses ``E`` learn — ``"paper"`` (``ΔE_{j→i} = −γ d_i e_jᵀ``),
            ``"fixed"`` (never; buffers, as in LRA-fdbk) or ``"transpose"`` (``ΔE_{j→i} =
            γ z*_i e_jᵀ``, which on a chain edge is ``γ ΔW_{i+1}ᵀ``: E tracks the transpose of
            its forward counterpart, as in the authors' LRA-E code).
        e_init: initialisation scheme of ``E`` (``gaussian`` by default).
        e_init_std: standard deviation of the Gaussian init of ``E``.
        e_kernel: kernel size of convolutional error synapses (edges between image-shaped layers;
            see :mod:`reclra.synapses`).
        e_to_maps: synapses from a vector layer (the output) to an image-shaped layer:
            ``"channel"`` (one displacement per channel, shared over positions) or ``"dense"``
            (one weight per position; the papers' literal ``E``).
        clip: re-projection bound ``c`` applied to every parameter update (Frobenius norm) and to
            every displacement ``d_i`` (per example); ``None`` disables it.
        executor: how the work of one pathway level runs (``serial``, ``threads``, ``streams``
            or an :class:`~reclra.executors.Executor`).
        epsilon: adaptive depth: a layer whose error neurons' batch-mean norm ``mean ‖e_i‖`` is
            below ε is not updated this step (its weight and synapse GEMMs are not computed);
            its error still feeds the layers it reaches. 0 (the default) updates every layer.
        fused: run the level below the root as batched kernels where that applies (a plain MLP
            of one hidden width on the ``skip`` pathway, no ``clip``, ``serial`` executor: see
            :mod:`reclra.rules.rec_lra_dense`); the same maths as the layer-by-layer walk, to
            float rounding. ``False`` always walks layer by layer.
        native: run that kernel's step compiled (C++, :mod:`reclra.rules.rec_lra_native`, built
            on first use) where it applies — fixed synapses, ``tanh`` or ``sigmoid`` hidden
            layers, a CPU float32/float64 batch; the Python kernel
            otherwise, or where it cannot be built (no C++ compiler: a warning says so).
    """

    name = "rec-lra"

    def __init__(
        self,
        net: LayeredNet,
        *,
        pathway: str | Sequence[Sequence[int]] | Pathway | None = None,
        beta: float | Sequence[float] = 0.1,
        gamma: float = 1.0,
        error_rule: Literal["paper", "fixed", "transpose"] = "fixed",
        e_init: str = "gaussian",
        e_init_std: float = 0.05,
        clip: float | None = None,
        e_kernel: int = 3,
        e_to_maps: Literal["channel", "dense"] = "channel",
        epsilon: float = 0.0,
        executor: str | Executor = "serial",
        fused: bool = True,
        native: bool = True,
    ) -> None:
        super().__init__(net, executor=executor)
        if error_rule not in SYNAPSE_RULES:
            raise ValueError(f"unknown error_rule {error_rule!r}; choose from {ERROR_RULES}")
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if clip is not None and clip <= 0:
            raise ValueError(f"clip must be > 0 or None, got {clip}")
        if not epsilon >= 0:
            raise ValueError(f"epsilon must be >= 0, got {epsilon}")
        self.epsilon = epsilon
        L = net.num_layers
        if pathway is None:
            pathway = "blocks" if net.blocks else "skip"
        if isinstance(pathway, Pathway):
            if pathway.num_layers != L:
                raise ValueError(f"pathway is for {pathway.num_layers} layers, the net has {L}")
            self.pathway = pathway
        elif isinstance(pathway, str):
            self.pathway = Pathway.preset(pathway, L, net.blocks)
        else:
            self.pathway = Pathway.from_edges(pathway, L)
        self.betas = _level_betas(beta, self.pathway.depth)
        #: β of every layer below the output (its level's)
        below = zip(self.pathway.levels[1:], self.betas, strict=True)
        self.beta_of = {i: b for level, b in below for i in level}
        self.gamma, self.error_rule, self.clip = gamma, error_rule, clip
        self.synapses = SYNAPSE_RULES[error_rule]
        if e_kernel < 1 or e_kernel % 2 == 0:
            raise ValueError(f"e_kernel must be a positive odd size, got {e_kernel}")
        if e_to_maps not in ("channel", "dense"):
            raise ValueError(f"e_to_maps must be 'channel' or 'dense', got {e_to_maps!r}")
        channel = e_to_maps == "channel"
        shapes = {
            edge_key(j, i): synapse_shape(
                net.layer(j).out_shape, net.layer(i).out_shape, e_kernel, channel=channel
            )
            for j, i in self.pathway.edges
        }
        self.E = SynapseDict(shapes, learnable=self.synapses.learnable, init=e_init, std=e_init_std)
        # (parent j, synapse name) of every layer, looked up once instead of at every step
        self._inputs = {
            i: [(j, edge_key(j, i)) for j in self.pathway.parents(i)]
            for level in self.pathway.levels[1:]
            for i in level
        }
        self.native = native
        self.kernel = DenseSkipKernel.for_rule(self) if fused else None

    def levels(self) -> tuple[tuple[int, ...], ...]:
        """The pathway's levels, the output's first: each is a group of independent layers."""
        return self.pathway.levels

    def compute_grads(self, x: Tensor, y: Tensor) -> StepStats:
        if self.kernel is None:
            return super().compute_grads(x, y)
        self.check_batch(x, y)
        with torch.no_grad():
            return self.kernel.step(x, y)

    def record(self, x: Tensor) -> Trace:
        return super().record(x) if self.kernel is None else self.kernel.record(x)

    def level_work(
        self, step: Step, level: Sequence[int], done: Mapping[int, LayerUpdate]
    ) -> list[LayerUpdate] | None:
        return None if self.kernel is None else self.kernel.level_work(step, level, done)

    def depth(self, updates: Mapping[int, LayerUpdate]) -> float:
        return float(self.pathway.depth)

    def layer_directions(self, step: Step, i: int, e_i: Tensor) -> Directions:
        """Update of layer ``i``'s parameters from its error neurons (eq. 5: its operator's VJP)."""
        return tuple(self.net.local_grads(step.trace, i, e_i))

    def layer_work(self, step: Step, i: int, done: Mapping[int, LayerUpdate]) -> LayerUpdate:
        """Target, error neurons and directions of layer ``i`` (its parents are in ``done``)."""
        if i == self.net.num_layers:
            e_L = step.e_L
            learns, norm = self._learns(e_L)
            directions = self._reprojected(self.layer_directions(step, i, e_L)) if learns else ()
            return LayerUpdate(e_L, directions, norm=norm)
        trace, layer, synapses = step.trace, self.net.layer(i), self.synapses
        d_parts = []  # (synapse, e_j, E_{j→i} e_j); conv synapses keep their graph for ΔE
        for j, key in self._inputs[i]:
            e_j = done[j].error
            d_ji = transmit(self.E[key], e_j, layer.out_shape, record=synapses.learnable)
            d_parts.append((key, e_j, d_ji))
        d_i = reduce(torch.add, (d.detach() for _, _, d in d_parts))  # Σ_j E_{j→i} e_j
        d_i = reproject(d_i, self.clip, per_row=True)
        y_i = target(layer.activation.f, trace.h[i], d_i, self.beta_of[i])
        e_i = error_neurons(trace.z[i], y_i)
        learns, norm = self._learns(e_i)
        if not learns:
            return LayerUpdate(e_i, (), norm=norm)
        directions = list(self.layer_directions(step, i, e_i))
        if synapses.learnable:
            out_i = trace.out[i].flatten(1)  # z*_i, (B, n_i)
            for key, e_j, d_ji in d_parts:
                E = self.E[key]
                cotangent = self.gamma * synapses.cotangent(d_ji.detach(), out_i)
                cotangent = cotangent.view(-1, *layer.out_shape)
                directions.append((E, synapse_grad(E, e_j, cotangent, d=d_ji)))
        return LayerUpdate(e_i, self._reprojected(directions), norm=norm)

    def _learns(self, e_i: Tensor) -> tuple[bool, Tensor | None]:
        """Whether a layer with error neurons ``e_i`` learns this step (adaptive depth: its
        ``mean ‖e_i‖`` reaches ε), and that norm where it was computed."""
        if self.epsilon == 0:
            return True, None
        norm = error_norm(e_i)
        return float(norm) >= self.epsilon, norm

    def _reprojected(self, directions: Sequence[tuple[Tensor, Tensor]]) -> Directions:
        """Every direction re-projected to the bound ``clip`` (Frobenius norm), if set."""
        if self.clip is None:
            return tuple(directions)
        return tuple((p, reproject(g, self.clip)) for p, g in directions)
