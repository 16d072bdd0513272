"""Registry sweeps: every rule × activation takes a step with finite update directions."""

from __future__ import annotations

import pytest
import torch

from reclra.activations import activation_names
from reclra.models import build_model, model_names
from reclra.rules import RULES, build_rule, rule_names

#: rules that need residual blocks are swept on the MLP-ResNet instead of the MLP
NEEDS_BLOCKS = {"rec-lra-bp"}


def _sweep_model(rule_name, activation, width=8):
    if rule_name in NEEDS_BLOCKS:
        return build_model(
            "mlp-resnet", input_shape=(12,), num_classes=3, width=width,
            activation=activation,
        )  # fmt: skip
    return build_model(
        "mlp", input_shape=(12,), num_classes=3, hidden=[width, width], activation=activation
    )


@pytest.mark.parametrize("activation", activation_names())
@pytest.mark.parametrize("rule_name", rule_names())
def test_every_rule_and_activation_steps(rule_name, activation):
    torch.manual_seed(0)
    net = _sweep_model(rule_name, activation)
    rule = build_rule(rule_name, net)
    before = {k: v.clone() for k, v in rule.state_dict().items()}
    x, y = torch.randn(6, 12), torch.tensor([0, 1, 2, 0, 1, 2])
    stats = rule.compute_grads(x, y)
    assert torch.isfinite(stats.loss)
    floats = stats.as_floats()
    assert floats["loss"] == pytest.approx(float(stats.loss)) and floats["depth"] >= 1
    for k, v in rule.state_dict().items():
        assert torch.equal(v, before[k]), f"{rule_name} changed {k} in compute_grads"
    grads = [p.grad for p in rule.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    torch.optim.Adam(rule.parameters(), lr=1e-3).step()
    assert not torch.equal(net.layer(1).op.weight, before["net.layers.0.op.weight"])


@pytest.mark.parametrize("rule_name", rule_names())
def test_rules_learn_a_separable_problem(rule_name):
    """A few hundred Adam steps on a linearly separable 3-class problem reach low error."""
    torch.manual_seed(0)
    centers = torch.randn(3, 12) * 3
    y = torch.arange(300) % 3
    x = centers[y] + 0.5 * torch.randn(300, 12)
    net = _sweep_model(rule_name, "tanh", width=16)
    rule = build_rule(rule_name, net)
    opt = torch.optim.Adam(rule.parameters(), lr=3e-3)
    for step in range(150):
        idx = torch.arange(step * 20, step * 20 + 20) % 300
        opt.zero_grad()
        rule.compute_grads(x[idx], y[idx])
        opt.step()
    error = (net(x).argmax(1) != y).float().mean().item()
    assert error < 0.05, f"{rule_name}: training error {error:.2f}"


def test_unknown_names_and_options_are_explained():
    net = build_model("mlp", input_shape=(4,), num_classes=2, hidden=[3])
    with pytest.raises(ValueError, match=r"unknown rule 'adam'.*rec-lra"):
        build_rule("adam", net)
    with pytest.raises(ValueError, match=r"unknown option.*betta.*rec-lra"):
        build_rule("rec-lra", net, betta=0.1)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("transformer", input_shape=(4,), num_classes=2)
    with pytest.raises(ValueError, match="input size 4"):
        build_model("mlp", input_shape=(4,), num_classes=2, sizes=[5, 3, 2])
    assert "mlp" in model_names() and "lra-diff" in RULES
