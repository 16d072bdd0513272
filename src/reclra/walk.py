"""The pathway walk: one loop for every local learning rule (DESIGN "The walk and the executor").

A local rule (rec-LRA, LRA, FA, DFA) is described by two things: the **levels** it visits, groups
of layers whose work depends only on earlier levels, and the **work** of one layer, a function
that reads the trace of the forward pass and the updates of earlier levels and *returns* a
:class:`LayerUpdate` — the layer's error neurons, its update directions, the signals it sends to
layers below. The work writes nothing. :func:`walk` visits the levels in order, hands the work of
one level to an executor (:mod:`reclra.executors`: in turn, on threads, on CUDA streams), and is
the one place that adds the directions into ``.grad``::

    for level in levels:
        updates = executor.run([work(i, done) for i in level])    # independent of each other
        for i, update in zip(level, updates):
            apply(update.directions)                             # p.grad += direction
            done[i] = update

Directions are applied in the level's order whatever order the executor ran the work in, so the
result does not depend on the executor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from reclra.executors import Executor

__all__ = ["Directions", "LayerUpdate", "LevelWork", "Work", "apply_directions", "walk"]

#: ``(parameter, direction)`` pairs: what a layer's work asks to add into ``parameter.grad``
Directions = tuple[tuple[Tensor, Tensor], ...]


@dataclass(frozen=True)
class LayerUpdate:
    """What one layer's work returns: values only; nothing is written until the walk applies it.

    Attributes:
        error: the layer's error neurons (the signal that drove its update, read by the layers it
            feeds on the pathway); ``None`` for a halting update.
        directions: ``(parameter, direction)`` pairs, batch means, to add into ``.grad`` — the
            layer's own parameters and the synapses it owns.
        sends: signals addressed to other layers by index (FA: the cotangent on the output of
            each layer this one reads; LRA: the target of the layer below).
        halt: stop the walk after this level (LRA's halting criterion); such an update carries
            no directions and is not recorded.
        norm: the batch mean of ``‖error‖`` where the work already has it (a fused kernel
            computes a whole level's at once); else the rule computes it from ``error``.
    """

    error: Tensor | None
    directions: Directions = ()
    sends: Mapping[int, Tensor] = field(default_factory=dict)
    halt: bool = False
    norm: Tensor | None = None

    @classmethod
    def halted(cls) -> LayerUpdate:
        """The update of a layer the halting criterion stops at (no error, no directions)."""
        return cls(error=None, halt=True)


#: the work of layer ``i``, given the updates of the levels already walked (read-only)
Work = Callable[[int, Mapping[int, LayerUpdate]], LayerUpdate]


#: the work of a whole level at once (batched kernels), or ``None`` to run it layer by layer
LevelWork = Callable[[Sequence[int], Mapping[int, LayerUpdate]], "list[LayerUpdate] | None"]


def walk(
    levels: Iterable[Sequence[int]],
    work: Work,
    executor: Executor,
    *,
    device: torch.device | None = None,
    level_work: LevelWork | None = None,
) -> dict[int, LayerUpdate]:
    """Visit ``levels`` in order, run each level's work on ``executor``, apply the directions.

    Returns the update of every layer that was updated, in walk order (their directions are in
    ``.grad`` by then). The walk stops after a level in which a work halts.
    ``device`` is where the step runs (a CUDA-streams executor needs it). ``level_work``, if
    given, may compute a whole level in one go (a rule's fused kernel); where it returns
    ``None`` the level's layers run one by one on the executor.
    """
    done: dict[int, LayerUpdate] = {}
    view = MappingProxyType(done)
    for level in levels:
        updates = None if level_work is None else level_work(level, view)
        if updates is None:
            updates = executor.run([partial(work, i, view) for i in level], device=device)
        halt = False
        for i, update in zip(level, updates, strict=True):
            apply_directions(update.directions)
            if update.halt:
                halt = True
            else:
                done[i] = update
        if halt:
            break
    return done


def apply_directions(directions: Directions) -> None:
    """``p.grad += direction`` for every pair (creating ``.grad`` if needed), as autograd does.

    A direction is a tensor the work made for this purpose (no other tensor's storage): where
    ``.grad`` is ``None`` it becomes ``.grad`` without a copy.
    """
    for p, g in directions:
        if p.grad is None:
            p.grad = g.detach() if g.requires_grad else g
        else:
            p.grad.add_(g)
