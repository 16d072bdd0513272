"""Learning-rate schedules as one pure function: the factor of every param group's base lr.

The trainer sets ``group["lr"] = group["base_lr"] * lr_factor(...)`` for every group (the
model's and the rule's learnable error synapses, whose base lr is ``lr · synapse_lr_scale``)
before each epoch (``per: epoch``) or each optimizer step (``per: step``). Because the factor
depends only on the unit index, a resumed run gets exactly the learning rates of an
uninterrupted one; there is no scheduler state to save.

With ``t`` the 0-based unit (epoch or step), ``w`` the warm-up and ``T`` the total units:

- warm-up, ``t < w``: ``(t + 1) / (w + 1)``, rising linearly to 1 at ``t = w``;
- after it, with progress ``p = (t − w) / (T − w)`` (clipped to [0, 1]) and floor
  ``r = min_lr / lr``:

  - ``constant``: 1;
  - ``step``: ``gamma ** ((t − w) // step_size)``;
  - ``cosine``: ``r + (1 − r) · (1 + cos(π p)) / 2``;
  - ``poly``: ``r + (1 − r) · (1 − p) ** power`` (paper 002's polynomial decay; ``power: 1`` is
    linear).

Cosine and polynomial decay reach ``min_lr`` at ``t = T``, just after the last unit.
"""

from __future__ import annotations

import math

from reclra.config import ScheduleConfig

__all__ = ["DECAYING", "lr_factor"]

#: Schedules whose shape depends on the total length of the run.
DECAYING = ("cosine", "poly")


def lr_factor(schedule: ScheduleConfig, t: int, *, total: int, floor: float = 0.0) -> float:
    """The learning-rate factor at unit ``t`` (0-based) of ``total`` units.

    Args:
        schedule: the schedule section of a config.
        t: the epoch (``per: epoch``) or optimizer step (``per: step``), counted from 0.
        total: units of the whole decay (``schedule.total``, or the run's length).
        floor: ``min_lr / lr``, the factor cosine and polynomial decay end at.
    """
    w = schedule.warmup
    if t < w:
        return (t + 1) / (w + 1)
    if schedule.name == "constant":
        return 1.0
    if schedule.name == "step":
        return schedule.gamma ** ((t - w) // schedule.step_size)
    p = min(max((t - w) / max(total - w, 1), 0.0), 1.0)
    if schedule.name == "cosine":
        return floor + (1 - floor) * (1 + math.cos(math.pi * p)) / 2
    if schedule.name == "poly":
        return floor + (1 - floor) * (1 - p) ** schedule.power
    raise ValueError(f"unknown schedule {schedule.name!r}")
