"""CUDA paths: every rule gives the same update directions on the GPU as on the CPU.

Skipped (with the reason shown) on machines without CUDA; run on a GPU machine with
``pytest -m cuda``.
"""

from __future__ import annotations

import copy

import pytest
import torch

from reclra.models import build_model
from reclra.rules import build_rule, rule_names

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]

MODELS = {
    "mlp": {"hidden": [16, 16]},
    "mlp-resnet": {"width": 16},
    "resnet18": {"width": 4, "stages": (1, 1)},
    "cnn": {"channels": (4,), "kernel_size": 3, "hidden": (8,)},
}


def _pairs():
    for model in MODELS:
        for rule in rule_names():
            residual = model in ("mlp-resnet", "resnet18")
            if rule == "rec-lra-bp" and not residual:
                continue
            yield model, rule


@pytest.mark.parametrize(("model", "rule_name"), list(_pairs()))
def test_cuda_matches_cpu(model, rule_name):
    torch.manual_seed(0)
    net = build_model(model, input_shape=(1, 8, 8), num_classes=3, **MODELS[model]).double()
    opts = {"pathway": "blocks"} if rule_name == "rec-lra" and net.blocks else {}
    cpu_rule = build_rule(rule_name, net, **opts).double()
    gpu_rule = copy.deepcopy(cpu_rule).cuda()
    x = torch.randn(6, 64, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    torch.manual_seed(1)
    cpu_stats = cpu_rule.compute_grads(x, y)
    torch.manual_seed(1)
    gpu_stats = gpu_rule.compute_grads(x.cuda(), y.cuda())
    torch.testing.assert_close(gpu_stats.loss.cpu(), cpu_stats.loss)
    for (name, p), q in zip(cpu_rule.named_parameters(), gpu_rule.parameters(), strict=True):
        assert q.grad is not None and q.grad.is_cuda, name
        torch.testing.assert_close(q.grad.cpu(), p.grad, rtol=1e-6, atol=1e-9, msg=name)
