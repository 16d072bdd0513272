"""The timing helpers the speed scripts share: one timed batch of calls, and the median of
repeated, warmed-up batches."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def timed_us(fn: Callable[[], object], calls: int) -> float:
    """µs per call of ``fn`` over ``calls`` calls in a row (no warm-up)."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def median_us(fn: Callable[[], object], calls: int, reps: int = 9) -> float:
    """µs per call of ``fn``: the median over ``reps`` repetitions of ``calls`` calls each, after
    a few untimed ones."""
    for _ in range(max(3, calls // 10)):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(times)
