"""Recursive local representation alignment (rec-LRA; papers 000 and 002, SPEC §1).

After one forward pass, error neurons are computed from the output down the error pathway::

    e_L = softmax(h_L) − onehot(y)
    d_i = Σ_j E_{j→i} e_j        y_i = f_i(h_i − β d_i)        e_i = z_i − y_i

and every layer is updated as soon as its ``e_i`` is known, by the VJP of its own operator with
cotangent ``e_i`` (dense: ``ΔW = e_i z_{i−1}ᵀ``) — no global backward pass, no derivative of φ.
The layers of one pathway level are independent; :meth:`RecLRA.schedule` exposes that structure.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import reduce
from typing import Literal

import torch
from torch import Tensor

from reclra.functional import error_neurons, output_error, reproject, target
from reclra.layers import accumulate_grad, local_update
from reclra.network import LayeredNet, Trace
from reclra.pathway import Pathway, edge_key
from reclra.rules.base import Rule, StepStats, SynapseDict, error_norm
from reclra.synapses import synapse_grad, synapse_shape, transmit

__all__ = ["ERROR_RULES", "RecLRA"]

ERROR_RULES = ("paper", "fixed", "transpose")


class RecLRA(Rule):
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
        beta: β, the step of the target displacement (eq. 3).
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
    """

    name = "rec-lra"

    def __init__(
        self,
        net: LayeredNet,
        *,
        pathway: str | Sequence[Sequence[int]] | Pathway | None = None,
        beta: float = 0.1,
        gamma: float = 1.0,
        error_rule: Literal["paper", "fixed", "transpose"] = "fixed",
        e_init: str = "gaussian",
        e_init_std: float = 0.05,
        clip: float | None = None,
        e_kernel: int = 3,
        e_to_maps: Literal["channel", "dense"] = "channel",
    ) -> None:
        super().__init__(net)
        if error_rule not in ERROR_RULES:
            raise ValueError(f"unknown error_rule {error_rule!r}; choose from {ERROR_RULES}")
        if beta <= 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if clip is not None and clip <= 0:
            raise ValueError(f"clip must be > 0 or None, got {clip}")
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
        self.beta, self.gamma, self.error_rule, self.clip = beta, gamma, error_rule, clip
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
        self.E = SynapseDict(shapes, learnable=error_rule != "fixed", init=e_init, std=e_init_std)
        # (parent j, synapse name) of every layer, looked up once instead of at every step
        self._inputs = {
            i: [(j, edge_key(j, i)) for j in self.pathway.parents(i)]
            for level in self.pathway.levels[1:]
            for i in level
        }

    def schedule(self) -> Iterator[tuple[int, ...]]:
        """The pathway's levels below the root: each is a group of independent layers."""
        yield from self.pathway.levels[1:]

    def compute_grads(self, x: Tensor, y: Tensor) -> StepStats:
        self.check_batch(x, y)
        net, L = self.net, self.net.num_layers
        with torch.no_grad():
            trace = net.trace(x, local_graphs=True)
            e_L, loss = output_error(trace.logits, y)
            e: dict[int, Tensor] = {L: e_L}
            local_update(net.layer(L), trace, L, e_L)
            for level in self.schedule():
                for i in level:  # independent: could run on separate streams/devices
                    e[i] = self._align(trace, e, i)
            if self.clip is not None:
                for p in self.parameters():
                    if p.grad is not None:
                        p.grad = reproject(p.grad, self.clip)
        norms = {ell: error_norm(v) for ell, v in e.items()}
        return StepStats(loss=loss, error_norms=norms, depth=float(self.pathway.depth))

    def update_layer(self, trace: Trace, i: int, e_i: Tensor) -> None:
        """Local update of layer ``i`` from its error neurons (eq. 5: the operator's VJP)."""
        local_update(self.net.layer(i), trace, i, e_i)

    def _align(self, trace: Trace, e: dict[int, Tensor], i: int) -> Tensor:
        """Target, error neurons and local updates of layer ``i`` (its parents are done)."""
        layer = self.net.layer(i)
        learn = self.error_rule != "fixed"
        d_parts = {  # conv synapses keep their graph for their own update below
            j: transmit(self.E[key], e[j], layer.out_shape, record=learn)
            for j, key in self._inputs[i]
        }
        d_i = reduce(torch.add, (d.detach() for d in d_parts.values()))  # Σ_j E_{j→i} e_j
        d_i = reproject(d_i, self.clip, per_row=True)
        y_i = target(layer.activation.f, trace.h[i], d_i, self.beta)
        e_i = error_neurons(trace.z[i], y_i)
        self.update_layer(trace, i, e_i)
        if learn:
            for j, key in self._inputs[i]:
                E, d_ji = self.E[key], d_parts[j]
                if self.error_rule == "paper":  # eq. 6: ΔE = −γ d_i e_jᵀ
                    cotangent = -self.gamma * d_ji.detach()
                else:  # transpose: ΔE = γ z*_i e_jᵀ  (= γ ΔW_{i+1}ᵀ on a chain edge)
                    cotangent = self.gamma * trace.out[i].flatten(1)
                cotangent = cotangent.view(-1, *layer.out_shape)
                accumulate_grad(E, synapse_grad(E, e[j], cotangent, d=d_ji))
        return e_i
