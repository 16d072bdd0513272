"""rec-LRA: values worked out by hand (plain Python floats) and the pathway/synapse options."""

from __future__ import annotations

import math

import pytest
import torch

from reclra.models import MLP
from reclra.pathway import Pathway
from reclra.rules import RecLRA

W = {
    1: [[0.5, -0.3], [0.2, 0.8]],
    2: [[1.0, 0.4], [-0.6, 0.3]],
    3: [[0.7, -0.2], [0.1, 0.9]],
}
E_VALUES = {"3->2": [[0.3, -0.5], [0.8, 0.2]], "2->1": [[-0.4, 0.6], [0.5, 0.1]]}
E_VALUES["3->1"] = [[0.2, 0.7], [-0.3, 0.4]]
X, LABEL, BETA, GAMMA = [1.0, -2.0], 1, 0.5, 0.25


def matvec(A, v):
    return [sum(a * b for a, b in zip(row, v, strict=True)) for row in A]


def outer(a, b):
    return [[ai * bj for bj in b] for ai in a]


def sub(a, b):
    return [ai - bi for ai, bi in zip(a, b, strict=True)]


def tanh(v):
    return [math.tanh(t) for t in v]


def hand_rec_lra(pathway):
    """rec-LRA eqs. 3–6 for one example, written out with floats."""
    h1 = matvec(W[1], X)
    z1 = tanh(h1)
    h2 = matvec(W[2], z1)
    z2 = tanh(h2)
    h3 = matvec(W[3], z2)
    exp = [math.exp(t) for t in h3]
    p = [t / sum(exp) for t in exp]
    e3 = [p[0], p[1] - 1.0]
    d2 = matvec(E_VALUES["3->2"], e3)
    e2 = sub(z2, tanh(sub(h2, [BETA * t for t in d2])))
    src, e_src = ("2->1", e2) if pathway == "chain" else ("3->1", e3)
    d1 = matvec(E_VALUES[src], e_src)
    e1 = sub(z1, tanh(sub(h1, [BETA * t for t in d1])))
    return {
        "dW": {1: outer(e1, X), 2: outer(e2, z1), 3: outer(e3, z2)},
        "db": {1: e1, 2: e2, 3: e3},
        "dE": {
            "3->2": [[-GAMMA * v for v in row] for row in outer(d2, e3)],
            src: [[-GAMMA * v for v in row] for row in outer(d1, e_src)],
        },
    }


def _make(pathway, error_rule="paper"):
    net = MLP([2, 2, 2, 2], "tanh")
    with torch.no_grad():
        for ell, w in W.items():
            net.layer(ell).op.weight.copy_(torch.tensor(w))
            net.layer(ell).op.bias.zero_()
    rule = RecLRA(net, pathway=pathway, beta=BETA, gamma=GAMMA, error_rule=error_rule)
    with torch.no_grad():
        for key in rule.E:
            rule.E[key].copy_(torch.tensor(E_VALUES[key]))
    return net, rule


@pytest.mark.parametrize("pathway", ["chain", "skip"])
def test_hand_computed_updates(pathway):
    net, rule = _make(pathway)
    rule.compute_grads(torch.tensor([X]), torch.tensor([LABEL]))
    want = hand_rec_lra(pathway)
    for ell in (1, 2, 3):
        op = net.layer(ell).op
        torch.testing.assert_close(op.weight.grad, torch.tensor(want["dW"][ell]))
        torch.testing.assert_close(op.bias.grad, torch.tensor(want["db"][ell]))
    assert sorted(rule.E.keys()) == sorted(want["dE"])
    for key, dE in want["dE"].items():
        torch.testing.assert_close(rule.E[key].grad, torch.tensor(dE))


def test_transpose_rule_tracks_forward_update():
    """On a chain edge, the transpose rule's ΔE_{3→2} is γ ΔW_3ᵀ."""
    net, rule = _make("chain", error_rule="transpose")
    x, y = torch.randn(7, 2), torch.randint(0, 2, (7,))
    rule.compute_grads(x, y)
    torch.testing.assert_close(rule.E["3->2"].grad, GAMMA * net.layer(3).op.weight.grad.t())
    torch.testing.assert_close(rule.E["2->1"].grad, GAMMA * net.layer(2).op.weight.grad.t())


def test_fixed_synapses_are_buffers():
    net, rule = _make("chain", error_rule="fixed")
    names = {n for n, _ in rule.named_parameters()}
    assert not any(n.startswith("E.") for n in names)
    assert "E.3->2" in rule.state_dict()
    rule.compute_grads(torch.randn(3, 2), torch.tensor([0, 1, 1]))
    assert rule.E["3->2"].grad is None
    assert net.layer(1).op.weight.grad is not None


def test_learnable_synapses_are_optimised_and_weights_untouched_by_rule():
    net, rule = _make("chain")
    before = {k: v.clone() for k, v in rule.state_dict().items()}
    rule.compute_grads(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))
    for k, v in rule.state_dict().items():
        assert torch.equal(v, before[k]), f"compute_grads changed {k}"
    opt = torch.optim.SGD(rule.parameters(), lr=0.1)
    opt.step()
    assert not torch.equal(rule.E["3->2"], before["E.3->2"])
    assert not torch.equal(net.layer(1).op.weight, before["net.layers.0.op.weight"])


def test_custom_dag_sums_displacements_of_all_parents():
    torch.manual_seed(0)
    net = MLP([3, 4, 4, 4, 2], "tanh")
    edges = [(4, 3), (4, 2), (3, 1), (2, 1)]
    rule = RecLRA(net, pathway=edges, beta=0.3)
    assert rule.pathway.levels == ((4,), (3, 2), (1,))
    x, y = torch.randn(5, 3), torch.randint(0, 2, (5,))
    rule.compute_grads(x, y)
    with torch.no_grad():
        t = net.trace(x)
        e4 = torch.softmax(t.logits, 1) - torch.nn.functional.one_hot(y, 2)
        e3 = t.z[3] - torch.tanh(t.h[3] - 0.3 * e4 @ rule.E["4->3"].t())
        e2 = t.z[2] - torch.tanh(t.h[2] - 0.3 * e4 @ rule.E["4->2"].t())
        d1 = e3 @ rule.E["3->1"].t() + e2 @ rule.E["2->1"].t()
        e1 = t.z[1] - torch.tanh(t.h[1] - 0.3 * d1)
    torch.testing.assert_close(net.layer(1).op.weight.grad, e1.t() @ x / 5)


def test_cyclic_pathway_is_refused_naming_the_cycle():
    net = MLP([3, 4, 4, 4, 2], "tanh")
    with pytest.raises(ValueError, match=r"cycle: (3 -> 2 -> 3|2 -> 3 -> 2)"):
        RecLRA(net, pathway=[(4, 3), (3, 2), (2, 3), (2, 1)])


def test_clip_bounds_every_update():
    torch.manual_seed(0)
    net = MLP([5, 6, 6, 3], "tanh", init_std=1.0)
    rule = RecLRA(net, pathway="chain", beta=1.0, e_init_std=3.0, clip=0.01)
    rule.compute_grads(torch.randn(8, 5) * 5, torch.randint(0, 3, (8,)))
    norms = [p.grad.norm().item() for p in rule.parameters() if p.grad is not None]
    assert norms and max(norms) <= 0.01 + 1e-7
    assert min(norms) > 0


@pytest.mark.parametrize(
    ("preset", "depth", "edges"),
    [
        ("chain", 3, {(4, 3), (3, 2), (2, 1)}),
        ("skip", 1, {(4, 3), (4, 2), (4, 1)}),
    ],
)
def test_presets(preset, depth, edges):
    p = Pathway.preset(preset, 4)
    assert p.depth == depth and set(p.edges) == edges


def test_bad_options_are_refused():
    net = MLP([3, 4, 2])
    with pytest.raises(ValueError, match="error_rule"):
        RecLRA(net, error_rule="nope")
    with pytest.raises(ValueError, match="blocks"):
        RecLRA(net, pathway="blocks")
    with pytest.raises(ValueError, match="beta"):
        RecLRA(net, beta=0)
