"""Side-by-side speed of learning rules on the same model, data shape and optimizer.

Rules are timed in interleaved rounds (rule A, rule B, …, then again), so drifts of a noisy
machine hit every rule alike; each round times ``steps`` full training steps (zero_grad,
compute_grads, optimizer step) after warm-up. Reported: median and spread (min, max, IQR) of the
per-step time over rounds, and each rule's ratio to the first rule's median.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from reclra.models import build_model
from reclra.rules import build_rule

__all__ = ["BenchResult", "benchmark_rules"]


@dataclass
class BenchResult:
    """Per-step wall time of one rule, in milliseconds, over the timed rounds."""

    rule: str
    median_ms: float
    min_ms: float
    max_ms: float
    iqr_ms: float
    ratio_to_first: float
    rounds: list[float]

    def as_dict(self) -> dict:
        return asdict(self)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def benchmark_rules(
    rules: Sequence[str],
    *,
    model: str = "mlp",
    model_options: dict | None = None,
    rule_options: dict[str, dict] | None = None,
    input_shape: tuple[int, ...] = (1, 28, 28),
    num_classes: int = 10,
    batch_size: int = 50,
    steps: int = 50,
    rounds: int = 7,
    warmup: int = 5,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> list[BenchResult]:
    """Time training steps of each rule on random data of the given shape.

    Every rule trains its own copy of the same model (same seed) with Adam; the data are random
    tensors on ``device`` (speed does not depend on their values).
    """
    if not rules:
        raise ValueError("give at least one rule to benchmark")
    if steps < 1 or rounds < 1 or batch_size < 1 or warmup < 0:
        raise ValueError("steps, rounds and batch_size must be >= 1 and warmup >= 0")
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch_size, *input_shape, generator=gen).flatten(1).to(device)
    y = torch.randint(0, num_classes, (batch_size,), generator=gen).to(device)
    runners = {}
    for name in rules:
        torch.manual_seed(seed)
        net = build_model(
            model, input_shape=input_shape, num_classes=num_classes, **(model_options or {})
        )
        rule = build_rule(name, net, **(rule_options or {}).get(name, {})).to(device)
        opt = torch.optim.Adam(rule.parameters(), lr=1e-4)
        runners[name] = (rule, opt)

    def run(name: str, n: int) -> float:
        rule, opt = runners[name]
        _sync(device)
        start = time.perf_counter()
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            rule.compute_grads(x, y)
            opt.step()
        _sync(device)
        return (time.perf_counter() - start) / n * 1e3

    for name in rules:
        if warmup:
            run(name, warmup)
    times: dict[str, list[float]] = {name: [] for name in rules}
    for _ in range(rounds):
        for name in rules:
            times[name].append(run(name, steps))
    first = statistics.median(times[rules[0]])
    results = []
    for name in rules:
        t = sorted(times[name])
        q = statistics.quantiles(t, n=4) if len(t) >= 2 else [t[0], t[0], t[0]]
        med = statistics.median(t)
        results.append(
            BenchResult(
                rule=name,
                median_ms=med,
                min_ms=t[0],
                max_ms=t[-1],
                iqr_ms=q[2] - q[0],
                ratio_to_first=med / first,
                rounds=times[name],
            )
        )
    return results
