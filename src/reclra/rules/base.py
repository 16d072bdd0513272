"""The rule interface: ``compute_grads(x, y)`` writes update directions into ``.grad``.

A rule never changes a weight; a stock ``torch.optim`` optimizer over :meth:`Rule.parameters`
(the model's parameters plus the rule's learnable synapses) applies the directions. A rule is an
``nn.Module`` holding the network, so ``rule.state_dict()`` carries the model, the learnable error
synapses and the fixed feedback matrices (buffers) together.

A :class:`LocalRule` is a rule whose step is one walk of the core (:func:`reclra.walk.walk`):
it names the levels it visits and the work of one layer; the executor it was built with runs the
work of each level.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import Tensor, nn

from reclra.executors import Executor, build_executor
from reclra.functional import output_error
from reclra.layers import init_weight
from reclra.network import LayeredNet, Trace
from reclra.walk import LayerUpdate, walk

__all__ = ["LocalRule", "Rule", "Step", "StepStats", "SynapseDict", "error_norm"]


@dataclass
class StepStats:
    """What one ``compute_grads`` call measured (tensors, so no device sync until read).

    ``loss``: mean cross-entropy of the batch. ``error_norms``: per layer ``ℓ``, the batch mean of
    ``‖e_ℓ‖`` (the error signal that drove the layer's update). ``depth``: credit-assignment depth
    (the pathway's recursive depth, or LRA's per-batch depth under the halting criterion).
    """

    loss: Tensor
    error_norms: dict[int, Tensor] = field(default_factory=dict)
    depth: float = 0.0

    def as_floats(self) -> dict[str, float]:
        """Plain numbers (one device sync)."""
        out = {"loss": float(self.loss), "depth": float(self.depth)}
        out.update({f"error_norm_{k}": float(v) for k, v in sorted(self.error_norms.items())})
        return out


class SynapseDict(nn.Module):
    """Named synapses (``"j->i"`` → tensor), learnable ``nn.Parameter``s or fixed buffers."""

    def __init__(
        self,
        shapes: dict[str, tuple[int, ...]],
        *,
        learnable: bool,
        init: str = "gaussian",
        std: float = 1.0,
    ) -> None:
        super().__init__()
        self.learnable = learnable
        self._names = list(shapes)
        for name, shape in shapes.items():
            w = torch.empty(shape)
            init_weight(w, init, std)
            if learnable:
                self.register_parameter(name, nn.Parameter(w))
            else:
                self.register_buffer(name, w)

    def __getitem__(self, name: str) -> Tensor:
        tensor = self._parameters.get(name) if self.learnable else self._buffers.get(name)
        if tensor is None:
            raise KeyError(name)
        return tensor

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def keys(self) -> list[str]:
        return list(self._names)

    def items(self) -> list[tuple[str, Tensor]]:
        return [(n, self[n]) for n in self._names]


class Rule(nn.Module):
    """Base class of every learning rule.

    Subclasses implement :meth:`compute_grads`. Gradients accumulate into ``.grad`` like
    ``loss.backward()`` does, so call ``optimizer.zero_grad()`` before each step.
    """

    #: registry name, set by subclasses
    name = "rule"

    def __init__(self, net: LayeredNet) -> None:
        super().__init__()
        if not isinstance(net, LayeredNet):
            raise TypeError(f"rules train reclra LayeredNet models, got {type(net).__name__}")
        self.net = net

    def compute_grads(self, x: Tensor, y: Tensor) -> StepStats:  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def check_batch(x: Tensor, y: Tensor) -> None:
        """Refuse a malformed batch with a clear message (shape and dtype only: no device sync)."""
        if y.dtype != torch.long or y.dim() != 1:
            raise ValueError(
                f"y must be a 1-D LongTensor of class indices, got {y.dtype} {tuple(y.shape)}"
            )
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} examples but y has {y.shape[0]}")


def error_norm(e: Tensor) -> Tensor:
    """Batch mean of the per-example norm ``‖e‖`` (a detached scalar tensor)."""
    return e.detach().flatten(1).norm(dim=1).mean()


@dataclass(frozen=True)
class Step:
    """What every layer's work of one local step reads: the forward trace, the labels, and the
    output error ``e_L = softmax(h_L) − onehot(y)`` (= ∂CE/∂h_L) with the batch's mean CE."""

    trace: Trace
    y: Tensor
    e_L: Tensor
    loss: Tensor


class LocalRule(Rule):
    """A rule whose step is one pathway walk: subclasses give :meth:`levels` and
    :meth:`layer_work`; the executor runs the work of each level (``serial``, ``threads``,
    ``streams`` or an :class:`~reclra.executors.Executor`).

    ``layer_work`` must only read ``step`` and the updates of earlier levels and return values
    (a :class:`~reclra.walk.LayerUpdate`): the walk is the one place that writes ``.grad``.
    """

    def __init__(self, net: LayeredNet, *, executor: str | Executor = "serial") -> None:
        super().__init__(net)
        self.executor = build_executor(executor)

    def levels(self) -> Sequence[Sequence[int]]:  # pragma: no cover - abstract
        """The groups of layers visited in order, the output layer's first."""
        raise NotImplementedError

    def layer_work(
        self, step: Step, i: int, done: Mapping[int, LayerUpdate]
    ) -> LayerUpdate:  # pragma: no cover - abstract
        """The update of layer ``i`` given the updates of the levels already walked."""
        raise NotImplementedError

    def level_work(
        self, step: Step, level: Sequence[int], done: Mapping[int, LayerUpdate]
    ) -> list[LayerUpdate] | None:
        """The updates of a whole level computed at once (a fused kernel), or ``None`` (the
        default) to run the level's :meth:`layer_work` on the executor."""
        return None

    def record(self, x: Tensor) -> Trace:
        """The forward pass the step reads (under ``no_grad``): the net's trace, with each
        non-dense layer's local graph."""
        return self.net.trace(x, local_graphs=True)

    def depth(self, updates: Mapping[int, LayerUpdate]) -> float:
        """Credit-assignment depth of a step that updated ``updates``."""
        return float(len(self.levels()) - 1)

    def compute_grads(self, x: Tensor, y: Tensor) -> StepStats:
        step, updates = self.walk(x, y)
        norms = {
            i: error_norm(u.error) if u.norm is None else u.norm
            for i, u in updates.items()
            if u.error is not None
        }
        return StepStats(loss=step.loss, error_norms=norms, depth=self.depth(updates))

    def walk(self, x: Tensor, y: Tensor) -> tuple[Step, dict[int, LayerUpdate]]:
        """One step as :meth:`compute_grads` takes it (``.grad`` filled), returning what the
        step saw and every layer's update (error neurons included) for analyses."""
        self.check_batch(x, y)
        with torch.no_grad():
            trace = self.record(x)
            e_L, loss = output_error(trace.logits, y)
            step = Step(trace=trace, y=y, e_L=e_L, loss=loss)
            updates = walk(
                self.levels(),
                partial(self.layer_work, step),
                self.executor,
                device=x.device,
                level_work=partial(self.level_work, step),
            )
        return step, updates
