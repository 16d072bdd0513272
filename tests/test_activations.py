"""Activations, including the z* = g(f(h)) split of non-differentiable and stochastic units."""

from __future__ import annotations

import pytest
import torch

from reclra.activations import activation_names, get_activation
from reclra.models import MLP


def test_sign_variants():
    h = torch.tensor([[-2.0, 0.0, 3.0]])
    assert get_activation("sign")(h).tolist() == [[-1.0, 1.0, 1.0]]
    assert get_activation("sign01")(h).tolist() == [[0.0, 1.0, 1.0]]
    torch.testing.assert_close(get_activation("sign").f(h), torch.tanh(h))


def test_lwta_keeps_each_block_max_and_breaks_ties_by_lowest_index():
    h = torch.tensor([[0.1, 0.9, 0.2, 0.3, 0.5, 0.5, -1.0, 0.0]])
    z = get_activation("lwta")(h)
    t = torch.tanh(h)
    want = torch.tensor([[0, t[0, 1], 0, 0, t[0, 4], 0, 0, 0]])
    torch.testing.assert_close(z, want)


def test_slwta_is_a_softmax_per_block():
    h = torch.randn(3, 8)
    z = get_activation("slwta")(h).view(3, 2, 4)
    torch.testing.assert_close(z.sum(2), torch.ones(3, 2))


def test_lwta_needs_divisible_width():
    with pytest.raises(ValueError, match="divisible"):
        get_activation("lwta")(torch.randn(2, 6))


def test_bernoulli_samples_binary_units_and_evaluation_averages():
    torch.manual_seed(0)
    z = get_activation("bernoulli")(torch.zeros(1000, 4))
    assert set(z.unique().tolist()) <= {0.0, 1.0}
    assert 0.4 < z.mean().item() < 0.6
    net = MLP([4, 8, 3], "bernoulli")
    assert net.stochastic
    x = torch.randn(5, 4)
    p1 = net.predict_proba(x, samples=1)
    p100 = net.predict_proba(x, samples=200)
    torch.testing.assert_close(p100.sum(1), torch.ones(5))
    assert not torch.allclose(p1, p100)


def test_unknown_activation():
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        get_activation("swish")
    assert "softmax" not in activation_names()
