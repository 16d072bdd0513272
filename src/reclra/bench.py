"""Side-by-side speed of learning rules on the same model, data shape and optimizer.

Rules are timed in interleaved rounds (rule A, rule B, …, then again), so drifts of a noisy
machine hit every rule alike; each round measures the matmul peak, then for each rule runs
``warmup`` untimed steps and times ``steps`` full training steps (zero_grad, compute_grads,
optimizer step). Reported per rule and batch size:

- median and spread (min, max, IQR) of ms per step over rounds, examples/s, and the ratio to the
  first rule (the reference, usually backprop): the median over rounds of the two rules' times in
  the same round, with its IQR — paired rounds cancel most of a noisy machine's drift;
- the matmul arithmetic of one step (GEMM and convolution FLOPs counted by
  :class:`torch.utils.flop_counter.FlopCounterMode` from the shapes the step really multiplies)
  and its ratio to the first rule's — the *FLOP floor ratio*: the step-time ratio a rule would
  have if time were arithmetic alone;
- the fraction of this machine's matmul peak the step reaches: in every round, its FLOPs per
  second over the GFLOP/s of a large square GEMM measured by :func:`matmul_peak` in that same
  round (a shared machine's speed drifts between rounds; the peak is taken where the steps ran),
  median over rounds; the rounds' peaks are reported too;
- the peak memory a step allocates above what is resident before it (CUDA: the allocator's peak;
  CPU: the running sum, in time order, of each operator's own net allocation as the profiler
  records it — temporaries freed inside one operator do not show).

FLOPs and memory are counted with the levels run in the calling thread (the same arithmetic; the
FLOP counter and the profiler see one thread only).

A rule is named with its options, ``name[:key=value,...]`` (``rec-lra:fused=false``,
``rec-lra:executor=threads``), values read as YAML scalars.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from reclra.errors import ConfigError
from reclra.executors import SerialExecutor
from reclra.models import build_model
from reclra.rules import Rule, build_rule

__all__ = [
    "OPTIMIZERS",
    "BenchResult",
    "RuleSpec",
    "benchmark_rules",
    "matmul_peak",
    "parse_rule_list",
    "parse_rule_spec",
    "step_flops",
    "step_peak_bytes",
]


@dataclass(frozen=True)
class RuleSpec:
    """A rule to benchmark: its registry name, options, and the label it is reported under."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.name)


def parse_rule_spec(text: str) -> RuleSpec:
    """``"rec-lra:fused=false,executor=threads"`` → name and options (YAML scalar values)."""
    name, _, rest = text.strip().partition(":")
    options: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"rule option {item!r} in {text!r} must look like key=value")
        options[key.strip()] = yaml.safe_load(value)
    if not name:
        raise ConfigError(f"no rule name in {text!r}")
    return RuleSpec(name, options, text.strip())


def parse_rule_list(text: str) -> list[RuleSpec]:
    """Comma-separated rule specs; an item ``key=value`` (no ``:``) continues the options of the
    rule before it: ``"backprop,rec-lra:fused=false,executor=threads"`` is two rules."""
    items: list[str] = []
    for token in filter(None, (t.strip() for t in text.split(","))):
        if "=" in token and ":" not in token and items:
            items[-1] += "," + token
        else:
            items.append(token)
    return [parse_rule_spec(item) for item in items]


def _adam(params, lr: float, device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, fused=True)


def _adam_foreach(params, lr: float, device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, foreach=True)


def _sgd(params, lr: float, device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=0.9, fused=True)


#: optimizers a benchmark can use; ``adam`` is torch's fused Adam (the fastest on CPU and CUDA)
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": _adam,
    "adam-foreach": _adam_foreach,
    "sgd": _sgd,
}


@dataclass
class BenchResult:
    """One rule at one batch size (times in milliseconds per training step)."""

    rule: str
    batch_size: int
    median_ms: float
    min_ms: float
    max_ms: float
    iqr_ms: float
    ratio_to_first: float  # median over rounds of this rule's time / the first rule's, same round
    ratio_iqr: float
    examples_per_s: float
    gflop_per_step: float
    flop_ratio_to_first: float
    peak_fraction: float  # median over rounds of (step GFLOP/s) / (that round's matmul peak)
    peak_gflops: float  # median of the rounds' matmul peaks
    peak_mem_mib: float
    rounds: list[float]
    round_peaks: list[float]

    def as_dict(self) -> dict:
        return asdict(self)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _quartiles(values: Sequence[float]) -> list[float]:
    return statistics.quantiles(values, n=4) if len(values) >= 2 else [values[0]] * 3


@contextlib.contextmanager
def _serial(rule: Rule) -> Iterator[None]:
    """Run ``rule``'s levels in the calling thread meanwhile (same arithmetic, same memory per
    task): FLOP counting and the CPU profiler see one thread only."""
    executor = getattr(rule, "executor", None)
    if executor is None:
        yield
        return
    rule.executor = SerialExecutor()
    try:
        yield
    finally:
        rule.executor = executor


def matmul_peak(device: torch.device, *, size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of the best of ``repeats`` ``size × size`` float32 GEMMs (after one warm-up)."""
    a = torch.rand(size, size, device=device)
    b = torch.rand(size, size, device=device)
    out = torch.empty(size, size, device=device)
    torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def step_flops(step: Callable[[], object]) -> int:
    """Matmul and convolution FLOPs of one call of ``step`` (counted from the real shapes)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (C++ writes included) for the duration."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def step_peak_bytes(step: Callable[[], object], device: torch.device) -> int:
    """Bytes a call of ``step`` allocates at its peak above what was resident before it."""
    if device.type == "cuda":
        _sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        _sync(device)
        return max(0, torch.cuda.max_memory_allocated(device) - before)
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_stderr():  # the profiler's own start/stop lines, printed by its C++ side
        prof.start()
    try:
        step()
    finally:
        with _quiet_stderr():
            prof.stop()
    events = sorted(  # each op's own net allocation (children excluded) and the frees after it
        (e.time_range.start, e.self_cpu_memory_usage) for e in prof.events()
    )
    live = peak = 0
    for _, delta in events:
        live += delta
        peak = max(peak, live)
    return peak


def benchmark_rules(
    rules: Sequence[str | RuleSpec],
    *,
    model: str = "mlp",
    model_options: dict | None = None,
    input_shape: tuple[int, ...] = (1, 28, 28),
    num_classes: int = 10,
    batch_sizes: Sequence[int] = (50,),
    steps: int = 50,
    rounds: int = 7,
    warmup: int = 5,
    optimizer: str = "adam",
    device: str | torch.device = "cpu",
    seed: int = 0,
    peak_gflops: float | None = None,
    peak_repeats: int = 3,
) -> list[BenchResult]:
    """Time training steps of each rule on random data of the given shape, per batch size.

    Every rule trains its own copy of the same model (same seed) with the same optimizer; the
    data are random tensors on ``device`` (speed does not depend on their values). Results are
    grouped by batch size, rules in the order given; ratios are to the first rule.
    The matmul peak is measured in every round (:func:`matmul_peak`, best of
    ``peak_repeats``); a given ``peak_gflops`` is used instead (no measurement).
    """
    specs = [r if isinstance(r, RuleSpec) else parse_rule_spec(r) for r in rules]
    if not specs:
        raise ConfigError("give at least one rule to benchmark")
    if len({s.label for s in specs}) != len(specs):
        raise ConfigError(f"a rule is listed twice: {[s.label for s in specs]}")
    if steps < 1 or rounds < 1 or warmup < 0 or not batch_sizes or min(batch_sizes) < 1:
        raise ConfigError("steps, rounds and batch sizes must be >= 1 and warmup >= 0")
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
    device = torch.device(device)

    def peak() -> float:
        if peak_gflops is not None:
            return peak_gflops
        return matmul_peak(device, repeats=peak_repeats)

    runners: dict[str, tuple[Rule, torch.optim.Optimizer]] = {}
    for spec in specs:
        torch.manual_seed(seed)
        net = build_model(
            model, input_shape=input_shape, num_classes=num_classes, **(model_options or {})
        )
        rule = build_rule(spec.name, net, **spec.options).to(device)
        runners[spec.label] = (rule, OPTIMIZERS[optimizer](rule.parameters(), 1e-4, device))
    results = []
    for batch in batch_sizes:
        gen = torch.Generator().manual_seed(seed)
        x = torch.rand(batch, *input_shape, generator=gen).flatten(1).to(device)
        y = torch.randint(0, num_classes, (batch,), generator=gen).to(device)

        def run(label: str, n: int, x=x, y=y) -> float:
            rule, opt = runners[label]
            _sync(device)
            start = time.perf_counter()
            for _ in range(n):
                opt.zero_grad(set_to_none=True)
                rule.compute_grads(x, y)
                opt.step()
            _sync(device)
            return (time.perf_counter() - start) / n * 1e3

        times: dict[str, list[float]] = {s.label: [] for s in specs}
        peaks = []
        for _ in range(rounds):
            peaks.append(peak())
            for spec in specs:
                if warmup:  # untimed: caches and clocks back to the step's after the peak GEMMs
                    run(spec.label, warmup)
                times[spec.label].append(run(spec.label, steps))
        flops, memory = {}, {}
        for spec in specs:
            rule, opt = runners[spec.label]
            with _serial(rule):  # the counter and the profiler see the calling thread only
                opt.zero_grad(set_to_none=True)
                flops[spec.label] = step_flops(lambda r=rule, x=x, y=y: r.compute_grads(x, y))
                opt.zero_grad(set_to_none=True)
                memory[spec.label] = step_peak_bytes(lambda s=spec: run(s.label, 1), device)
        first = specs[0].label
        for spec in specs:
            t = sorted(times[spec.label])
            q = _quartiles(t)
            med = statistics.median(t)
            paired = sorted(a / b for a, b in zip(times[spec.label], times[first], strict=True))
            pq = _quartiles(paired)
            gflop = flops[spec.label] / 1e9
            rates = [gflop / (ms / 1e3) / g for ms, g in zip(times[spec.label], peaks, strict=True)]
            results.append(
                BenchResult(
                    rule=spec.label,
                    batch_size=batch,
                    median_ms=med,
                    min_ms=t[0],
                    max_ms=t[-1],
                    iqr_ms=q[2] - q[0],
                    ratio_to_first=statistics.median(paired),
                    ratio_iqr=pq[2] - pq[0],
                    examples_per_s=batch / med * 1e3,
                    gflop_per_step=gflop,
                    flop_ratio_to_first=flops[spec.label] / max(flops[first], 1),
                    peak_fraction=statistics.median(rates),
                    peak_gflops=statistics.median(peaks),
                    peak_mem_mib=memory[spec.label] / 2**20,
                    rounds=times[spec.label],
                    round_peaks=peaks,
                )
            )
    return results
