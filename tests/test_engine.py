"""The engine: one pathway walk, per-layer work as values, swappable executors, core imports."""

from __future__ import annotations

import copy
import random
import subprocess
import sys
import weakref

import pytest
import torch
from torch import nn

from reclra.errors import ConfigError
from reclra.executors import EXECUTORS, SerialExecutor, ThreadsExecutor, build_executor
from reclra.layers import Layer
from reclra.models import build_model
from reclra.network import LayeredNet
from reclra.rules import RULES, LocalRule, Step, build_rule
from reclra.walk import LayerUpdate, walk

SHAPE = (1, 8, 8)
MODELS = {
    "mlp": {"hidden": [12, 12, 12]},
    "mlp-resnet": {"width": 12, "blocks": 2},
    "resnet18": {"width": 4, "stages": (1, 1)},
}
LOCAL_RULES = {  # name → options that give levels of several layers where the rule has them
    # the layer-by-layer walk; the MLP's fused kernel runs with the serial executor alone (an
    # explicit executor walks the levels on it), and tests/test_fused.py checks it
    "rec-lra": {"fused": False},
    "rec-lra-transpose": {"error_rule": "transpose", "clip": 0.5},
    "rec-lra-paper-chain": {"error_rule": "paper", "pathway": "chain"},
    "rec-lra-bp": {},
    "lra": {},
    "lra-diff": {"K": 2},
    "fa": {},
    "dfa": {},
}


def _rule_name(key: str) -> str:
    return key if key in RULES else "rec-lra"


class PermutedExecutor:
    """Runs the tasks of a level in a shuffled order (results still in task order)."""

    name = "permuted"

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.orders: list[list[int]] = []

    def run(self, tasks, *, device=None):
        order = list(range(len(tasks)))
        self.rng.shuffle(order)
        self.orders.append(order)
        results = [None] * len(tasks)
        for k in order:
            results[k] = tasks[k]()
        return results


def _grads(model: str, rule_key: str, executor, *, seed: int = 0) -> dict[str, torch.Tensor]:
    if rule_key == "rec-lra-bp" and model == "mlp":
        pytest.skip("rec-lra-bp needs a residual model")
    torch.manual_seed(seed)
    net = build_model(model, input_shape=SHAPE, num_classes=5, **MODELS[model])
    rule = build_rule(_rule_name(rule_key), net, executor=executor, **LOCAL_RULES[rule_key])
    torch.manual_seed(seed + 1)
    x, y = torch.randn(6, *SHAPE), torch.randint(0, 5, (6,))
    rule.compute_grads(x, y)
    return {n: p.grad.clone() for n, p in rule.named_parameters() if p.grad is not None}


def _assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("rule_key", list(LOCAL_RULES))
def test_any_order_within_a_level_gives_bit_identical_grads(model, rule_key):
    serial = _grads(model, rule_key, "serial")
    for seed in range(3):
        executor = PermutedExecutor(seed)
        _assert_identical(serial, _grads(model, rule_key, executor))
    if rule_key in ("rec-lra", "dfa"):  # these levels hold several layers: orders really vary
        assert any(len(o) > 1 and o != sorted(o) for o in executor.orders)


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("rule_key", list(LOCAL_RULES))
def test_threads_give_the_directions_of_serial(model, rule_key):
    _assert_identical(
        _grads(model, rule_key, "serial"), _grads(model, rule_key, ThreadsExecutor(3))
    )


def test_threads_carry_the_callers_grad_mode():
    seen = []

    def task():
        seen.append(torch.is_grad_enabled())

    ex = ThreadsExecutor(2)
    with torch.no_grad():
        ex.run([task, task])
    ex.run([task, task])
    assert seen == [False, False, True, True]


def test_results_come_back_in_task_order_on_threads():
    import time

    def task(k):
        time.sleep(0.01 * (3 - k))  # the first task finishes last
        return k

    assert ThreadsExecutor(3).run([lambda k=k: task(k) for k in range(3)]) == [0, 1, 2]


def test_streams_executor_refuses_a_cpu_step():
    net = build_model("mlp", input_shape=SHAPE, num_classes=5, **MODELS["mlp"])
    rule = build_rule("rec-lra", net, executor="streams")
    with pytest.raises(ConfigError, match=r"streams.*CUDA.*cpu"):  # bad input, not a bug
        rule.compute_grads(torch.randn(4, *SHAPE), torch.randint(0, 5, (4,)))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("rule_key", ["rec-lra", "rec-lra-bp", "lra", "fa", "dfa"])
def test_streams_give_the_directions_of_serial(model, rule_key):
    if rule_key == "rec-lra-bp" and model == "mlp":
        pytest.skip("rec-lra-bp needs a residual model")
    out = {}
    for executor in ("serial", "streams"):
        torch.manual_seed(0)
        net = build_model(model, input_shape=SHAPE, num_classes=5, **MODELS[model]).cuda()
        rule = build_rule(_rule_name(rule_key), net, executor=executor, **LOCAL_RULES[rule_key])
        rule.cuda()
        torch.manual_seed(1)
        x, y = torch.randn(6, *SHAPE).cuda(), torch.randint(0, 5, (6,)).cuda()
        rule.compute_grads(x, y)
        out[executor] = {
            n: p.grad.clone() for n, p in rule.named_parameters() if p.grad is not None
        }
    for name in out["serial"]:
        torch.testing.assert_close(out["streams"][name], out["serial"][name], rtol=1e-6, atol=1e-7)


def test_executor_registry_and_instances():
    assert {"serial", "threads", "streams"} <= set(EXECUTORS.names())
    assert isinstance(build_executor("serial"), SerialExecutor)
    ex = ThreadsExecutor(2)
    assert build_executor(ex) is ex
    with pytest.raises(ValueError, match="unknown executor 'gpu'"):
        build_executor("gpu")
    with pytest.raises(TypeError, match="run"):
        build_executor(42)
    with pytest.raises(ValueError, match="max_workers"):
        ThreadsExecutor(0)


def test_a_rule_on_threads_can_be_copied_after_a_step():
    net = build_model("mlp", input_shape=SHAPE, num_classes=5, **MODELS["mlp"])
    rule = build_rule("dfa", net, executor="threads")
    x, y = torch.randn(4, *SHAPE), torch.randint(0, 5, (4,))
    rule.compute_grads(x, y)
    twin = copy.deepcopy(rule)
    rule.zero_grad(), twin.zero_grad()
    rule.compute_grads(x, y), twin.compute_grads(x, y)
    for p, q in zip(rule.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad)


@pytest.mark.parametrize("rule_key", list(LOCAL_RULES))
def test_layer_work_returns_values_and_writes_nothing(rule_key):
    torch.manual_seed(0)
    net = build_model("mlp-resnet", input_shape=SHAPE, num_classes=5, **MODELS["mlp-resnet"])
    rule = build_rule(_rule_name(rule_key), net, **LOCAL_RULES[rule_key])
    assert isinstance(rule, LocalRule)
    x, y = torch.randn(4, *SHAPE), torch.randint(0, 5, (4,))
    from reclra.functional import output_error

    with torch.no_grad():
        trace = net.trace(x, local_graphs=True)
        e_L, loss = output_error(trace.logits, y)
    step = Step(trace=trace, y=y, e_L=e_L, loss=loss)
    weights = {n: t.clone() for n, t in rule.state_dict().items()}
    done: dict[int, LayerUpdate] = {}
    for level in rule.levels():
        for i in level:
            update = rule.layer_work(step, i, done)
            assert update.error is not None and update.error.shape[0] == 4
            assert all(torch.isfinite(g).all() for _, g in update.directions)
            done[i] = update
    assert all(p.grad is None for p in rule.parameters())  # nothing written by the work
    for n, t in rule.state_dict().items():
        assert torch.equal(t, weights[n]), n
    assert set(done) == {i for level in rule.levels() for i in level}


def test_walk_applies_in_level_order_and_stops_at_a_halt():
    p = nn.Parameter(torch.zeros(2))
    calls = []

    def work(i, done):
        calls.append(i)
        assert all(j in done for j in range(i + 1, 4)), "parents first"
        if i == 1:
            return LayerUpdate.halted()
        return LayerUpdate(torch.full((1, 1), float(i)), ((p, torch.full((2,), float(i))),))

    done = walk([(3,), (2,), (1,), (0,)], work, SerialExecutor())
    assert calls == [3, 2, 1]  # level (0,) never runs: the walk halted at layer 1
    assert list(done) == [3, 2]  # the halted layer is not recorded
    assert torch.equal(p.grad, torch.full((2,), 5.0))
    assert done[3].directions[0][1] is p.grad  # the first direction became .grad, uncopied


def test_lra_halting_criterion_skips_the_layers_below():
    torch.manual_seed(0)
    net = build_model("mlp", input_shape=SHAPE, num_classes=5, **MODELS["mlp"])
    x, y = torch.randn(8, *SHAPE), torch.randint(0, 5, (8,))
    rule = build_rule("lra", net, epsilon=1e6)  # every loss is below ε: not even the output learns
    stats = rule.compute_grads(x, y)
    assert stats.depth == 0 and not stats.error_norms
    assert all(p.grad is None for p in net.parameters())


def test_lra_diff_name_fixes_its_mode():
    net = build_model("mlp", input_shape=SHAPE, num_classes=5, **MODELS["mlp"])
    with pytest.raises(ValueError, match=r"lra-diff.*fixes mode='diff'"):
        build_rule("lra-diff", net, mode="fdbk")
    assert build_rule("lra-diff", net).mode == "diff"
    assert "mode" not in RULES.options("lra-diff") and "mode" in RULES.options("lra")


def test_every_local_rule_takes_an_executor():
    for name in RULES.names():
        if name != "backprop":
            assert RULES.options(name)["executor"] == "serial", name


def test_config_chooses_the_executor():
    from reclra.config import Config, merge_config
    from reclra.train import _build

    cfg = merge_config(Config(), {"rule": {"name": "rec-lra", "executor": "threads"}})
    assert isinstance(_build(cfg, SHAPE, 5).executor, ThreadsExecutor)


class _Recorded(nn.Module):
    """A linear operator that notes, when called, which earlier outputs ``h_k`` are still alive."""

    def __init__(self, n_in: int, n_out: int, refs: list, alive: list) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        self.refs, self.alive = refs, alive

    def forward(self, z):
        self.alive.append([k + 1 for k, ref in enumerate(self.refs) if ref() is not None])
        h = self.linear(z)
        self.refs.append(weakref.ref(h))
        return h


def test_plain_forward_keeps_only_what_later_layers_read():
    refs, alive = [], []
    layers = [Layer(_Recorded(6, 6, refs, alive), "tanh", out_shape=(6,)) for _ in range(4)]
    layers[3] = Layer(_Recorded(6, 6, refs, alive), "tanh", skip_from=2, out_shape=(6,))
    layers.append(Layer(_Recorded(6, 3, refs, alive), "softmax", out_shape=(3,)))
    net = LayeredNet(layers, input_shape=(6,))  # layer 4 reads z*_2 as a residual input
    x = torch.randn(2, 6)
    with torch.no_grad():
        logits = net(x)
        # when layer ℓ runs, the forward holds no earlier pre-activation h_k
        assert alive == [[], [], [], [], []]
        refs.clear()
        trace = net.trace(x)
        # the trace holds them all (layer 4's h is op output + residual input, a new tensor)
        assert alive[5:] == [[], [1], [1, 2], [1, 2, 3], [1, 2, 3]]
        torch.testing.assert_close(logits, trace.logits, rtol=0, atol=0)


def test_core_modules_import_no_rule_model_trainer_or_cli():
    code = (
        "import sys, reclra.pathway, reclra.walk, reclra.executors, reclra.network, "
        "reclra.layers, reclra.functional, reclra.synapses, reclra.activations, reclra.convert\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[:2] in "
        "(['reclra', 'rules'], ['reclra', 'models'], ['reclra', 'train'], ['reclra', 'cli'],"
        " ['reclra', 'data'], ['reclra', 'config']))\n"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_package_attributes_load_on_first_use():
    import reclra

    assert reclra.rules.RecLRA.name == "rec-lra"
    assert callable(reclra.data.load_dataset)
    assert reclra.LayeredNet is LayeredNet
    with pytest.raises(AttributeError, match="nope"):
        reclra.nope  # noqa: B018
