"""Per-layer diagnostics: angles to backprop, effective ranks, nothing left changed."""

from __future__ import annotations

import math

import pytest
import torch

from reclra.diagnostics import diagnose, effective_rank
from reclra.models import build_model
from reclra.rules import FA, build_rule


def test_effective_rank_of_known_matrices():
    assert effective_rank(torch.eye(6)) == pytest.approx(6.0)
    u, v = torch.randn(8, 1), torch.randn(1, 5)
    assert effective_rank(u @ v) == pytest.approx(1.0, abs=1e-6)
    assert effective_rank(torch.zeros(3, 3)) == 0.0


def test_fa_with_its_own_weights_is_backprop_at_zero_degrees():
    torch.manual_seed(0)
    net = build_model("mlp", input_shape=(6,), num_classes=3, hidden=[5, 4]).double()
    rule = FA(net).double()
    with torch.no_grad():
        for ell in range(2, net.num_layers + 1):
            rule.B[f"{ell}:op/weight"].copy_(net.layer(ell).op.weight)
    x, y = torch.randn(7, 6, dtype=torch.float64), torch.randint(0, 3, (7,))
    for row in diagnose(rule, x, y):
        assert row.angle == pytest.approx(0.0, abs=1e-5)
        assert row.update_norm == pytest.approx(row.gradient_norm)


@pytest.mark.parametrize("model", ["mlp", "mlp-resnet", "resnet18"])
def test_rec_lra_output_layer_is_backprops_and_nothing_is_left_changed(model):
    torch.manual_seed(0)
    options = {"resnet18": {"width": 2, "stages": (1,)}}.get(model, {})
    net = build_model(model, input_shape=(1, 6, 6), num_classes=4, **options)
    rule = build_rule("rec-lra", net)
    x, y = torch.randn(5, 1, 6, 6), torch.randint(0, 4, (5,))
    for p in rule.parameters():
        p.grad = torch.full_like(p, 7.0)
    before = {k: v.clone() for k, v in rule.state_dict().items()}
    rng = torch.random.get_rng_state()
    rows = diagnose(rule, x, y)
    assert [r.layer for r in rows] == list(range(1, net.num_layers + 1))
    assert rows[-1].angle == pytest.approx(0.0, abs=1e-3)  # e_L z*ᵀ is the gradient itself
    assert all(0 <= r.angle <= 180 for r in rows if not math.isnan(r.angle))
    assert all(r.error_rank >= 1 and r.target_rank >= 1 for r in rows)
    for k, v in rule.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(torch.equal(p.grad, torch.full_like(p, 7.0)) for p in rule.parameters())
    assert torch.equal(torch.random.get_rng_state(), rng)


def test_skip_pathway_errors_have_the_rank_of_the_output():
    torch.manual_seed(0)
    net = build_model(
        "mlp", input_shape=(20,), num_classes=3, hidden=[30, 30], activation="identity"
    )
    rule = build_rule("rec-lra", net)
    rows = diagnose(rule, torch.randn(64, 20), torch.randint(0, 3, (64,)))
    # identity units: e_i = β E_{L→i} e_L, and e_L has rank ≤ 3 − 1 (its rows sum to zero)
    assert rows[0].error_rank <= 2.0 + 1e-6 and rows[1].error_rank <= 2.0 + 1e-6
    with pytest.raises(TypeError, match="local rule"):
        diagnose(build_rule("backprop", net), torch.randn(2, 20), torch.tensor([0, 1]))


def test_chain_with_transposed_synapses_and_small_beta_is_backprop_per_level():
    """Issue 7's derivation: on `chain` with E_{i+1→i} = W_{i+1}ᵀ, e_i ≈ β φ′(h_i) ⊙ Wᵀ e_{i+1},
    i.e. backprop's error scaled by β per level — so every layer's direction points along
    backprop's gradient (0°), with norms shrinking by β per level."""
    torch.manual_seed(0)
    net = build_model("mlp", input_shape=(6,), num_classes=3, hidden=[5, 5, 4]).double()
    beta = 1e-3
    rule = build_rule("rec-lra", net, pathway="chain", beta=beta).double()
    with torch.no_grad():
        for ell in range(1, net.num_layers):
            rule.E[f"{ell + 1}->{ell}"].copy_(net.layer(ell + 1).op.weight.t())
    x, y = torch.randn(9, 6, dtype=torch.float64), torch.randint(0, 3, (9,))
    rows = diagnose(rule, x, y)
    L = net.num_layers
    for row in rows:
        assert row.angle == pytest.approx(0.0, abs=0.2), row
        ratio = row.update_norm / row.gradient_norm
        assert ratio == pytest.approx(beta ** (L - row.layer), rel=1e-2)
