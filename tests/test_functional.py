"""Pure maths: output error, re-projection, local losses, angles."""

from __future__ import annotations

import math

import pytest
import torch

from reclra import functional as Fn
from reclra.synapses import synapse_grad


def test_output_error_is_the_cross_entropy_gradient():
    torch.manual_seed(0)
    logits = torch.randn(6, 4, requires_grad=True)
    y = torch.randint(0, 4, (6,))
    loss = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, logits)
    e, mean_loss = Fn.output_error(logits.detach(), y)
    torch.testing.assert_close(e, grad)
    torch.testing.assert_close(mean_loss, loss.detach() / 6)


def test_reproject_matrix_and_rows():
    d = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    torch.testing.assert_close(Fn.reproject(d, 1.0), d / d.norm())
    torch.testing.assert_close(Fn.reproject(d, 100.0), d)
    rows = Fn.reproject(d, 1.0, per_row=True)
    torch.testing.assert_close(rows, torch.tensor([[0.6, 0.8], [0.3, 0.4]]))
    assert Fn.reproject(d, None) is d
    with pytest.raises(ValueError):
        Fn.reproject(d, 0.0)


def test_local_losses_by_hand():
    z, y = torch.tensor([[1.0, -1.0]]), torch.tensor([[0.0, 1.0]])
    assert Fn.local_loss("l2", z, y).item() == pytest.approx(0.5 * (1 + 4))
    assert Fn.local_loss("l1", z, y).item() == pytest.approx(3.0)
    assert Fn.local_loss("cauchy", z, y).item() == pytest.approx(math.log(2) + math.log(5))
    with pytest.raises(ValueError, match="unknown local loss"):
        Fn.local_loss("huber", z, y)


def test_target_error_and_synapse_update_by_hand():
    h, d = torch.tensor([[0.5, -0.5]]), torch.tensor([[1.0, 2.0]])
    y = Fn.target(torch.tanh, h, d, beta=0.1)
    torch.testing.assert_close(y, torch.tanh(torch.tensor([[0.4, -0.7]])))
    e = Fn.error_neurons(torch.tanh(h), y)
    torch.testing.assert_close(e, torch.tanh(h) - y)
    e_j = torch.tensor([[2.0, -1.0, 0.5]])
    E0 = torch.zeros(2, 3)
    dE = synapse_grad(E0, e_j, -0.5 * d)  # eq. 6: ΔE = −γ d eᵀ
    torch.testing.assert_close(dE, -0.5 * torch.tensor([[2.0, -1.0, 0.5], [4.0, -2.0, 1.0]]))
    E = torch.arange(6.0).view(2, 3)
    torch.testing.assert_close(Fn.displacement(E, e_j), (E @ e_j.t()).t())


def test_angle():
    a = torch.tensor([1.0, 0.0])
    assert Fn.angle_degrees(a, torch.tensor([0.0, 2.0])) == pytest.approx(90.0)
    assert Fn.angle_degrees(a, torch.tensor([1.0, 1.0])) == pytest.approx(45.0)
