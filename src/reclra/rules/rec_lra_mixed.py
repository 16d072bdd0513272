"""Mixed rec-LRA for residual networks (SPEC §3; 002 "one could opt to mix other learning
algorithms within the rec-LRA framework").

rec-LRA gives every residual block's output (its meta-representation) a target through
``E_{L→block}``, as in the ``blocks`` pathway; inside each block, the layers are trained by backprop
of the block's own local loss ``½‖z_block − y_block‖²``, i.e. with the block's error neurons
``e_block`` as ``∂L/∂z_block``, stopping at the block's input. Layers in no block (stem) get their
targets straight from the output, as in the ``skip`` pathway. No gradient crosses a block boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from reclra.executors import Executor
from reclra.layers import replay
from reclra.network import Block, LayeredNet
from reclra.pathway import Pathway
from reclra.rules.base import Step
from reclra.rules.rec_lra import RecLRA
from reclra.walk import Directions

__all__ = ["RecLRABlockBackprop"]


class RecLRABlockBackprop(RecLRA):
    """rec-LRA targets for block outputs, backprop of the local loss inside each block.

    Takes the options of :class:`~reclra.rules.RecLRA` (see there) except ``pathway``, which is
    fixed: output → every block output and every layer outside the blocks. Only dense synapses
    are needed (the output is a vector), so there is no ``e_kernel``.
    """

    name = "rec-lra-bp"

    def __init__(
        self,
        net: LayeredNet,
        *,
        beta: float | Sequence[float] = 0.1,
        gamma: float = 1.0,
        error_rule: Literal["paper", "fixed", "transpose"] = "fixed",
        e_init: str = "gaussian",
        e_init_std: float = 0.05,
        clip: float | None = None,
        executor: str | Executor = "serial",
    ) -> None:
        if not net.blocks:
            raise ValueError("rec-lra-bp needs a residual model with blocks (e.g. mlp-resnet)")
        L = net.num_layers
        inside = {s for b in net.blocks for s in b.support}
        targets = [ell for ell in range(1, L) if ell not in inside]
        pathway = Pathway.from_edges([(L, ell) for ell in targets], L, targets=targets)
        super().__init__(
            net, pathway=pathway, beta=beta, gamma=gamma, error_rule=error_rule, e_init=e_init,
            e_init_std=e_init_std, clip=clip, executor=executor,
        )  # fmt: skip
        self._blocks: dict[int, Block] = {b.output: b for b in net.blocks}

    def layer_directions(self, step: Step, i: int, e_i: Tensor) -> Directions:
        block = self._blocks.get(i)
        if block is None:
            return super().layer_directions(step, i, e_i)
        trace = step.trace
        layers = [*block.support, block.output]
        params = [p for ell in layers for p in self.net.layer(ell).parameters() if p.requires_grad]
        with torch.enable_grad():
            start = self.net.layer(block.output).skip_from
            rep = {start: trace.out[start].detach()}
            for ell in layers:  # re-run the block from its (detached) input
                layer = self.net.layer(ell)
                skip = None if layer.skip_from is None else rep[layer.skip_from]
                h = replay(layer, rep[ell - 1], skip)
                rep[ell] = layer.activation(h)
            z_out = layer.activation.f(h)
            grads = torch.autograd.grad(
                z_out, params, grad_outputs=e_i / e_i.shape[0], allow_unused=True
            )
        return tuple((p, g) for p, g in zip(params, grads, strict=True) if g is not None)
