"""The fused dense kernel of rec-LRA computes what the layer-by-layer walk computes."""

from __future__ import annotations

import copy

import pytest
import torch

from reclra.models import MLP, build_model
from reclra.rules import RecLRA
from reclra.rules.base import error_norm
from reclra.rules.rec_lra_dense import DenseSkipKernel


def _pair(sizes, activation="tanh", dtype=torch.float64, **options):
    """The fused rule (its step compiled where that applies, unless ``native=False``) and the
    layer-by-layer walk, on the same net."""
    out = []
    for fused in (True, False):
        torch.manual_seed(0)
        net = MLP(sizes, activation, init_std=0.3).to(dtype)
        out.append(RecLRA(net, fused=fused, **options).to(dtype))
    return out


def _step(rule, x, y):
    stats = rule.compute_grads(x, y)
    grads = {n: p.grad.clone() for n, p in rule.named_parameters() if p.grad is not None}
    return stats, grads


def _walked_step(rule, x, y):
    """``rule.walk`` (what analyses call): the walk's levels, the hidden one by the kernel."""
    calls = []
    work = rule.kernel.level_work
    rule.kernel.level_work = lambda *a: calls.append(work(*a)) or calls[-1]
    _, updates = rule.walk(x, y)
    assert [c is not None for c in calls] == [False, True]  # the root walks, the level is fused
    grads = {n: p.grad.clone() for n, p in rule.named_parameters() if p.grad is not None}
    return updates, grads


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("error_rule", ["fixed", "paper", "transpose"])
@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid", "softsign", "identity"])
@pytest.mark.parametrize("sizes", [[7, 5, 3], [7, 5, 5, 5, 3], [6, 9, 9, 4]])
def test_fused_equals_the_walk(error_rule, activation, sizes, native):
    options = {"error_rule": error_rule, "beta": 0.3, "gamma": 0.7, "native": native}
    fused, walked = _pair(sizes, activation, **options)
    assert isinstance(fused.kernel, DenseSkipKernel) and walked.kernel is None
    torch.manual_seed(1)
    x, y = torch.randn(11, sizes[0], dtype=torch.float64), torch.randint(0, sizes[-1], (11,))
    (s1, g1), (s2, g2) = _step(fused, x, y), _step(walked, x, y)
    assert g1.keys() == g2.keys() and len(g1) == 2 * (len(sizes) - 1) + (
        0 if error_rule == "fixed" else len(sizes) - 2
    )
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], rtol=1e-12, atol=1e-14, msg=name)
    assert s1.error_norms.keys() == s2.error_norms.keys()
    for ell in s1.error_norms:
        torch.testing.assert_close(s1.error_norms[ell], s2.error_norms[ell])
    # the compiled step sums the log-softmax in its own order: equal to one rounding
    torch.testing.assert_close(s1.loss, s2.loss, rtol=1e-15 if fused.kernel.native else 0, atol=0)
    assert s1.depth == s2.depth == 1.0
    fused.zero_grad(set_to_none=True)
    updates, g3 = _walked_step(fused, x, y)
    for name in g1:
        torch.testing.assert_close(g3[name], g1[name], rtol=1e-12, atol=1e-14, msg=name)
    for ell, update in updates.items():
        torch.testing.assert_close(error_norm(update.error), s2.error_norms[ell])


@pytest.mark.parametrize("native", [True, False])
def test_fused_float32_matches_to_rounding(native):
    fused, walked = _pair([784, 64, 64, 64, 10], dtype=torch.float32, native=native)
    x, y = torch.rand(50, 784), torch.randint(0, 10, (50,))
    (_, g1), (_, g2) = _step(fused, x, y), _step(walked, x, y)
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], rtol=1e-5, atol=1e-7, msg=name)


def test_buffers_follow_the_batch_size_and_grads_accumulate():
    fused, walked = _pair([5, 4, 4, 3])
    for batch in (8, 3, 8):  # a smaller last batch, then the full size again
        x = torch.randn(batch, 5, dtype=torch.float64)
        y = torch.randint(0, 3, (batch,))
        for rule in (fused, walked):  # no zero_grad: directions add into .grad in place
            rule.compute_grads(x, y)
    for (n, p), (_, q) in zip(fused.named_parameters(), walked.named_parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-12, atol=1e-14, msg=n)
    assert len(fused.kernel._buffers) == 2


def test_grads_of_one_step_are_not_overwritten_by_the_next():
    fused, _ = _pair([5, 4, 4, 3])
    x, y = torch.randn(6, 5, dtype=torch.float64), torch.randint(0, 3, (6,))
    _, first = _step(fused, x, y)
    kept = {n: p.grad for n, p in fused.named_parameters()}  # the tensors themselves
    fused.zero_grad(set_to_none=True)
    fused.compute_grads(torch.randn(6, 5, dtype=torch.float64), y)
    for n, g in kept.items():
        assert torch.equal(g, first[n]), n


def test_a_copy_of_a_fused_rule_has_its_own_buffers():
    fused, _ = _pair([5, 4, 4, 3])
    x, y = torch.randn(6, 5, dtype=torch.float64), torch.randint(0, 3, (6,))
    fused.compute_grads(x, y)
    twin = copy.deepcopy(fused)
    assert twin.kernel.rule is twin and not twin.kernel._buffers
    fused.zero_grad(), twin.zero_grad()
    fused.compute_grads(x, y), twin.compute_grads(x, y)
    for p, q in zip(fused.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad)


def test_the_kernel_applies_only_where_it_is_exact():
    mlp = build_model("mlp", input_shape=(1, 4, 4), num_classes=3, hidden=[8, 8])
    assert RecLRA(mlp).kernel is not None  # skip pathway, one width
    assert RecLRA(mlp, pathway="chain").kernel is None
    assert RecLRA(mlp, clip=1.0).kernel is None
    assert RecLRA(mlp, fused=False).kernel is None
    assert RecLRA(mlp, executor="threads").kernel is None  # the levels run on the executor
    ragged = build_model("mlp", input_shape=(1, 4, 4), num_classes=3, hidden=[8, 6])
    assert RecLRA(ragged).kernel is None
    sign = build_model("mlp", input_shape=(1, 4, 4), num_classes=3, activation="sign")
    assert RecLRA(sign).kernel is None  # a discretizer: z* ≠ f(h)
    res = build_model("mlp-resnet", input_shape=(1, 4, 4), num_classes=3, width=8)
    assert RecLRA(res, pathway="skip").kernel is None  # residual inputs


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("error_rule", ["fixed", "transpose"])
def test_adaptive_depth_skips_the_same_layers_fused_and_walked(error_rule, native):
    """rec-LRA's ε: a layer whose mean ‖e_i‖ is below ε gets no update, in the kernel's step,
    in its walk and in the layer-by-layer walk alike; the others' updates are unchanged."""
    sizes = [7, 5, 5, 5, 5, 3]
    torch.manual_seed(1)
    x, y = torch.randn(11, 7, dtype=torch.float64), torch.randint(0, 3, (11,))
    probe, _ = _pair(sizes, error_rule=error_rule)
    norms = probe.compute_grads(x, y).error_norms
    hidden = sorted(float(norms[i]) for i in range(1, len(sizes) - 1))
    epsilon = (hidden[1] + hidden[2]) / 2  # two hidden layers below ε, two above
    full = {n: p.grad.clone() for n, p in probe.named_parameters() if p.grad is not None}
    fused, walked = _pair(sizes, error_rule=error_rule, epsilon=epsilon, native=native)
    (s1, g1), (s2, g2) = _step(fused, x, y), _step(walked, x, y)
    fused.zero_grad(set_to_none=True)
    _, g3 = _walked_step(fused, x, y)
    learning = {i for i, v in norms.items() if float(v) >= epsilon}
    assert len(learning) == 3  # the output layer and two hidden ones
    assert g1.keys() == g2.keys() == g3.keys()
    for name in full:
        # net.layers.<ℓ−1>.op.* belongs to layer ℓ; the synapse E.<L>-><i> to layer i
        owner = int(name.split(".")[2]) + 1 if name.startswith("net.") else int(name.split(">")[1])
        if owner in learning:
            for g in (g1, g2, g3):
                torch.testing.assert_close(g[name], full[name], rtol=1e-12, atol=1e-14, msg=name)
        else:
            assert name not in g1, name
    for ell in norms:
        torch.testing.assert_close(s1.error_norms[ell], norms[ell])
        torch.testing.assert_close(s2.error_norms[ell], norms[ell])
