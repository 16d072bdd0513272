"""Property tests of the core (hypothesis): for random small MLPs, activations, error pathways,
synapse rules, executors and the fused kernel, rec-LRA's directions equal the reference formulas
(written here from the papers, not from the library), ``compute_grads`` never changes a weight,
the same seed gives bit-identical directions, and permuting a batch leaves them unchanged."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from reclra.models import MLP
from reclra.rules import RecLRA

pytestmark = pytest.mark.usefixtures("float64", "one_thread")

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)

#: activation name → (f, g): the target lives on f, z* = g(f(h)) feeds the next layer
ACTIVATIONS = {
    "tanh": (torch.tanh, lambda z: z),
    "sigmoid": (torch.sigmoid, lambda z: z),
    "relu": (torch.relu, lambda z: z),
    "softplus": (torch.nn.functional.softplus, lambda z: z),
    "sign": (torch.tanh, lambda z: torch.where(z >= 0, 1.0, -1.0).to(z.dtype)),
}


@dataclass
class Case:
    sizes: list[int]
    activation: str
    edges: list[tuple[int, int]] | str
    error_rule: str
    executor: str
    fused: bool
    beta: float
    gamma: float
    batch: int
    seed: int

    def edge_list(self) -> list[tuple[int, int]]:
        L = len(self.sizes) - 1
        if self.edges == "skip":
            return [(L, i) for i in range(1, L)]
        assert isinstance(self.edges, list)
        return self.edges


@st.composite
def cases(draw: st.DrawFn) -> Case:
    depth = draw(st.integers(1, 4))  # hidden layers
    same = draw(st.booleans())  # one hidden width: the fused kernel applies on `skip`
    width = draw(st.integers(1, 6))
    hidden = [width] * depth if same else draw(st.lists(st.integers(1, 6), min_size=depth,
                                                        max_size=depth))  # fmt: skip
    sizes = [draw(st.integers(1, 7)), *hidden, draw(st.integers(2, 5))]
    L = depth + 1
    if draw(st.booleans()):
        edges: list[tuple[int, int]] | str = "skip"
    else:  # any DAG rooted at the output: every hidden layer gets parents above it
        edges = []
        for i in range(1, L):
            parents = draw(st.sets(st.integers(i + 1, L), min_size=1, max_size=L - i))
            edges += [(j, i) for j in sorted(parents)]
    return Case(
        sizes=sizes,
        activation=draw(st.sampled_from(sorted(ACTIVATIONS))),
        edges=edges,
        error_rule=draw(st.sampled_from(["paper", "transpose", "fixed"])),
        executor=draw(st.sampled_from(["serial", "threads"])),
        fused=draw(st.booleans()),
        beta=draw(st.floats(0.01, 2.0)),
        gamma=draw(st.floats(0.0, 2.0)),
        batch=draw(st.integers(1, 6)),
        seed=draw(st.integers(0, 2**16)),
    )


def build(case: Case) -> tuple[RecLRA, Tensor, Tensor]:
    torch.manual_seed(case.seed)
    net = MLP(case.sizes, case.activation, init_std=0.5)
    pathway = "skip" if case.edges == "skip" else case.edges
    rule = RecLRA(
        net, pathway=pathway, error_rule=case.error_rule, executor=case.executor,
        fused=case.fused, beta=case.beta, gamma=case.gamma, e_init_std=0.5,
    )  # fmt: skip
    x = torch.randn(case.batch, case.sizes[0])
    y = torch.randint(0, case.sizes[-1], (case.batch,))
    return rule, x, y


def directions(rule: RecLRA, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    for p in rule.parameters():
        p.grad = None
    rule.compute_grads(x, y)
    return {n: p.grad.clone() for n, p in rule.named_parameters() if p.grad is not None}


def reference(case: Case, rule: RecLRA, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """The papers' formulas, from the weights alone."""
    f, g = ACTIVATIONS[case.activation]
    linears = [layer.op for layer in rule.net.layers]
    L, B = len(linears), x.shape[0]
    out, h, z = {0: x}, {}, {}
    for i, lin in enumerate(linears, start=1):
        h[i] = out[i - 1] @ lin.weight.T + lin.bias
        z[i] = torch.softmax(h[i], dim=1) if i == L else f(h[i])
        out[i] = z[i] if i == L else g(z[i])
    e = {L: torch.softmax(h[L], dim=1) - torch.nn.functional.one_hot(y, case.sizes[-1])}
    edges = case.edge_list()
    E = {(j, i): rule.E[f"{j}->{i}"] for j, i in edges}
    for i in range(L - 1, 0, -1):  # every parent j > i is done before i
        d = sum(e[j] @ E[j, i].T for j, ii in edges if ii == i)
        e[i] = z[i] - f(h[i] - case.beta * d)
    ref = {}
    for i in range(1, L + 1):
        ref[f"net.layers.{i - 1}.op.weight"] = e[i].T @ out[i - 1] / B
        ref[f"net.layers.{i - 1}.op.bias"] = e[i].mean(0)
    for j, i in edges:
        key = f"E.{j}->{i}"
        if case.error_rule == "paper":
            d_ji = e[j] @ E[j, i].T
            ref[key] = -case.gamma * d_ji.T @ e[j] / B
        elif case.error_rule == "transpose":
            ref[key] = case.gamma * out[i].T @ e[j] / B
    return ref


@SETTINGS
@given(cases())
def test_directions_equal_the_reference_formulas(case: Case) -> None:
    rule, x, y = build(case)
    got = directions(rule, x, y)
    with torch.no_grad():
        want = reference(case, rule, x, y)
    assert got.keys() == want.keys()
    for name, value in want.items():
        torch.testing.assert_close(got[name], value, rtol=1e-9, atol=1e-12, msg=name)


@SETTINGS
@given(cases())
def test_compute_grads_never_changes_a_weight(case: Case) -> None:
    rule, x, y = build(case)
    before = {k: v.clone() for k, v in rule.state_dict().items()}
    rule.compute_grads(x, y)
    after = rule.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@SETTINGS
@given(cases())
def test_the_same_seed_gives_bit_identical_directions(case: Case) -> None:
    a = directions(*build(case))
    b = directions(*build(case))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@SETTINGS
@given(cases(), st.randoms(use_true_random=False))
def test_a_permuted_batch_gives_the_same_directions(case: Case, rnd) -> None:
    rule, x, y = build(case)
    order = list(range(case.batch))
    rnd.shuffle(order)
    a = directions(rule, x, y)
    b = directions(rule, x[order], y[order])
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-9, atol=1e-12, msg=k)
