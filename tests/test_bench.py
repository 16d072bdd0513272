"""The measuring instrument: rule specs, FLOP floors from the shapes, memory, result fields."""

from __future__ import annotations

import itertools
import statistics

import pytest
import torch

from reclra.bench import (
    benchmark_rules,
    parse_rule_list,
    parse_rule_spec,
    step_flops,
    step_peak_bytes,
)
from reclra.models import build_model
from reclra.rules import build_rule


def test_rule_specs_carry_options():
    spec = parse_rule_spec("rec-lra:fused=false,beta=0.5,pathway=chain")
    assert spec.name == "rec-lra" and spec.label == "rec-lra:fused=false,beta=0.5,pathway=chain"
    assert spec.options == {"fused": False, "beta": 0.5, "pathway": "chain"}
    specs = parse_rule_list("backprop, rec-lra:fused=false,executor=threads ,rec-lra")
    assert [(s.name, s.options) for s in specs] == [
        ("backprop", {}),
        ("rec-lra", {"fused": False, "executor": "threads"}),
        ("rec-lra", {}),
    ]
    with pytest.raises(ValueError, match="key=value"):
        parse_rule_spec("rec-lra:fused")


def _mlp_flops(rule_name: str, widths: list[int], batch: int, **options) -> int:
    net = build_model("mlp", input_shape=(widths[0],), num_classes=widths[-1], hidden=widths[1:-1])
    rule = build_rule(rule_name, net, **options)
    x, y = torch.rand(batch, widths[0]), torch.randint(0, widths[-1], (batch,))
    return step_flops(lambda: rule.compute_grads(x, y))


@pytest.mark.parametrize("fused", [True, False])
def test_flop_floors_are_the_papers_arithmetic(fused):
    widths, B = [784, 256, 256, 256, 256, 256, 10], 50
    layers = list(itertools.pairwise(widths))
    forward = sum(2 * B * a * b for a, b in layers)
    first = 2 * B * widths[0] * widths[1]
    # backprop: forward + weight gradients + input gradients of every layer but the first
    assert _mlp_flops("backprop", widths, B) == 3 * forward - first
    # rec-LRA (skip): forward + local updates + one displacement E_{L→i} e_L per hidden layer
    displacements = sum(2 * B * widths[-1] * n for n in widths[1:-1])
    rec = _mlp_flops("rec-lra", widths, B, fused=fused)
    assert rec == 2 * forward + displacements
    assert rec / (3 * forward - first) == pytest.approx(0.789, abs=5e-4)


def test_step_peak_bytes_sees_the_activations():
    net = build_model("mlp", input_shape=(64,), num_classes=4, hidden=[512, 512])
    rule = build_rule("backprop", net)
    small = torch.rand(8, 64), torch.randint(0, 4, (8,))
    large = torch.rand(512, 64), torch.randint(0, 4, (512,))
    cpu = torch.device("cpu")
    a = step_peak_bytes(lambda: rule.compute_grads(*small), cpu)
    rule.zero_grad(set_to_none=True)
    b = step_peak_bytes(lambda: rule.compute_grads(*large), cpu)
    assert 0 < a < b
    assert b >= 2 * 512 * 512 * 4  # at least the two hidden layers' h of the large batch


def test_benchmark_reports_every_field():
    results = benchmark_rules(
        ["backprop", "rec-lra", "rec-lra:fused=false"],
        model="mlp",
        model_options={"hidden": [16, 16]},
        input_shape=(1, 4, 4),
        batch_sizes=(4, 9),
        steps=2,
        rounds=2,
        warmup=1,
        peak_gflops=10.0,
    )
    assert [(r.rule, r.batch_size) for r in results] == [
        (rule, b) for b in (4, 9) for rule in ("backprop", "rec-lra", "rec-lra:fused=false")
    ]
    for r in results:
        assert r.median_ms > 0 and r.examples_per_s > 0 and len(r.rounds) == 2
        assert r.gflop_per_step > 0 and r.peak_fraction > 0 and r.peak_mem_mib > 0
        assert r.round_peaks == [10.0, 10.0] and r.peak_gflops == 10.0
        # per round: the step's GFLOP/s over that round's peak; reported: their median
        rates = [r.gflop_per_step / (ms / 1e3) / 10.0 for ms in r.rounds]
        assert r.peak_fraction == pytest.approx(statistics.median(rates))
    by = {(r.rule, r.batch_size): r for r in results}
    assert by[("backprop", 4)].ratio_to_first == 1.0
    assert (
        by[("rec-lra", 9)].flop_ratio_to_first == by[("rec-lra:fused=false", 9)].flop_ratio_to_first
    )
    assert by[("rec-lra", 9)].flop_ratio_to_first < 1.0
    with pytest.raises(ValueError, match="twice"):
        benchmark_rules(["backprop", "backprop"], peak_gflops=1.0)
    with pytest.raises(ValueError, match="optimizer"):
        benchmark_rules(["backprop"], optimizer="lbfgs", peak_gflops=1.0)
