"""Oracle tests: the rules against torch autograd and against closed-form local updates."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reclra.functional import local_loss
from reclra.layers import Layer, local_grads
from reclra.models import MLP
from reclra.rules import DFA, FA, LRA, Backprop

pytestmark = pytest.mark.usefixtures("float64")  # see conftest.py


def _batch(n_in=6, classes=4, batch=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, n_in, generator=g), torch.randint(0, classes, (batch,), generator=g)


def _net(activation="tanh", sizes=(6, 5, 4, 4), seed=1):
    torch.manual_seed(seed)
    return MLP(list(sizes), activation, init="gaussian", init_std=0.5)


def _grads(net):
    return [p.grad.clone() for p in net.parameters()]


def _autograd_reference(net, x, y):
    """Gradient of the mean CE of an independent plain-torch forward pass with the same weights."""
    params = [p.detach().clone().requires_grad_(True) for p in net.parameters()]
    z = x
    for k, layer in enumerate(net.layers):
        W, b = params[2 * k], params[2 * k + 1]
        h = z @ W.t() + b
        z = h if k == len(net.layers) - 1 else layer.activation(h)
    loss = nn.functional.cross_entropy(z, y)
    return list(torch.autograd.grad(loss, params))


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu", "elu", "softplus"])
def test_backprop_equals_autograd(activation):
    net, (x, y) = _net(activation), _batch()
    Backprop(net).compute_grads(x, y)
    for got, want in zip(_grads(net), _autograd_reference(net, x, y), strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("activation", ["tanh", "relu", "lwta", "sign"])
def test_fa_with_transposed_feedback_equals_backprop(activation):
    """FA with B = W in place of the weight (B = Wᵀ in the papers' column layout) is backprop."""
    sizes = (6, 8, 8, 4)
    net, (x, y) = _net(activation, sizes), _batch()
    fa = FA(net)
    for ell in range(2, net.num_layers + 1):
        fa.B[f"{ell}:op/weight"].copy_(net.layer(ell).op.weight.detach())
    fa.compute_grads(x, y)
    got = _grads(net)
    net.zero_grad()
    Backprop(net).compute_grads(x, y)
    for g_fa, g_bp in zip(got, _grads(net), strict=True):
        torch.testing.assert_close(g_fa, g_bp)


def test_fa_with_random_feedback_differs_from_backprop():
    net, (x, y) = _net(), _batch()
    FA(net).compute_grads(x, y)
    got = _grads(net)
    net.zero_grad()
    Backprop(net).compute_grads(x, y)
    want = _grads(net)
    assert not torch.allclose(got[0], want[0])  # bottom layer sees the random feedback
    torch.testing.assert_close(got[-2], want[-2])  # the output layer's update is exact


def test_lemma1_lra_diff_equals_backprop():
    """001 Lemma 1: one-step targets y = z − ∇_z L_{ℓ+1} with L2 losses reproduce backprop.

    With identity hidden activations, LRA-diff's pre-activation target ``h − β ∂L/∂h`` (β = 1,
    K = 1, no re-projection) is exactly the lemma's ``z − ∇_z L``.
    """
    net, (x, y) = _net("identity"), _batch()
    LRA(net, mode="diff", beta=1.0, K=1, loss="l2", c1=None, c2=None).compute_grads(x, y)
    for got, want in zip(_grads(net), _autograd_reference(net, x, y), strict=True):
        torch.testing.assert_close(got, want)


def test_lemma1_with_nonlinear_layers():
    """Lemma 1 on a tanh network: z-space targets from exact gradients + L2 local losses = BP."""
    net, (x, y) = _net("tanh"), _batch()
    L = net.num_layers
    with torch.no_grad():
        trace = net.trace(x)
    grads_local = {}
    target = None
    for ell in range(L, 0, -1):
        layer = net.layer(ell)
        with torch.enable_grad():
            z_below = trace.out[ell - 1].detach().requires_grad_(ell > 1)
            h = layer(z_below)
            if ell == L:
                loss = nn.functional.cross_entropy(h, y, reduction="sum")
            else:
                loss = local_loss("l2", layer.activation.f(h), target) * x.shape[0]
            wrt = [h, z_below] if ell > 1 else [h]
            delta_h, *grad_below = torch.autograd.grad(loss, wrt)
        grads_local[ell] = local_grads(layer, trace.inp[ell], delta_h)
        if ell > 1:  # the lemma's target for the layer below: y = z − ∇_z L_ℓ
            target = trace.z[ell - 1] - grad_below[0]
    want = _autograd_reference(net, x, y)
    got = [g for ell in range(1, L + 1) for _, g in grads_local[ell]]
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def test_dense_local_update_is_a_hand_gemm():
    torch.manual_seed(3)
    layer = Layer(nn.Linear(3, 2), "tanh")
    z_in, e = torch.randn(4, 3), torch.randn(4, 2)
    (W, dW), (b, db) = local_grads(layer, z_in, e)
    hand_dW = torch.zeros(2, 3)
    for n in range(4):
        for i in range(2):
            for k in range(3):
                hand_dW[i, k] += e[n, i] * z_in[n, k] / 4
    torch.testing.assert_close(dW, hand_dW)
    torch.testing.assert_close(db, e.mean(0))
    assert W is layer.op.weight and b is layer.op.bias


def test_generic_vjp_path_equals_dense_fast_path():
    """The autograd path (any operator) and the GEMM fast path give the same update."""
    torch.manual_seed(4)
    linear = nn.Linear(3, 2)
    wrapped = Layer(nn.Sequential(linear), "tanh", out_shape=(2,))
    fast = Layer(linear, "tanh")
    z_in, e = torch.randn(4, 3), torch.randn(4, 2)
    for (_, a), (_, b) in zip(
        local_grads(wrapped, z_in, e), local_grads(fast, z_in, e), strict=True
    ):
        torch.testing.assert_close(a, b)


def test_dfa_update_matches_closed_form():
    net, (x, y) = _net("tanh"), _batch()
    rule = DFA(net)
    rule.compute_grads(x, y)
    with torch.no_grad():
        trace = net.trace(x)
        e_L = torch.softmax(trace.logits, 1) - nn.functional.one_hot(y, 4)
        for ell in range(1, net.num_layers):
            delta = (e_L @ rule.B[str(ell)].t()) * (1 - torch.tanh(trace.h[ell]) ** 2)
            want = delta.t() @ trace.inp[ell] / x.shape[0]
            torch.testing.assert_close(net.layer(ell).op.weight.grad, want)
