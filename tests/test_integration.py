"""Integration: rec-LRA on real Fashion-MNIST (needs RECLRA_DATA, else skipped with a reason)."""

from __future__ import annotations

import os

import pytest
import torch

from reclra.data import DatasetNotFound, iterate_minibatches, load_dataset
from reclra.models import build_model
from reclra.rules import build_rule

# Measured on this tree (2 CPU cores, seed 0): 2 epochs on the first 10,000 training images,
# Adam lr 1e-3, batch 50, the library's default rec-LRA on the default MLP (5×256 tanh) gives
# 19.8 % test error on the full 10,000-image test set (backprop, same budget: 19.9 %). The bound
# leaves room for platform and BLAS differences.
TEST_ERROR_BOUND = 22.0


@pytest.fixture(scope="module")
def fashion():
    if not os.environ.get("RECLRA_DATA"):
        pytest.skip("RECLRA_DATA is not set: no real Fashion-MNIST copy to train on")
    try:
        return load_dataset("fashion-mnist", limit_train=10_000, seed=0, download=False)
    except DatasetNotFound as err:
        pytest.skip(f"Fashion-MNIST not found under RECLRA_DATA: {err}")


@pytest.mark.slow
def test_rec_lra_learns_fashion_mnist(fashion):
    torch.manual_seed(0)
    net = build_model("mlp", input_shape=fashion.input_shape, num_classes=fashion.num_classes)
    rule = build_rule("rec-lra", net)
    opt = torch.optim.Adam(rule.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):
        for x, y in iterate_minibatches(fashion.train, 50, shuffle=True, generator=gen):
            opt.zero_grad()
            rule.compute_grads(x, y)
            opt.step()
    with torch.no_grad():
        pred = net(fashion.test.x).argmax(1)
    test_error = 100.0 * (pred != fashion.test.y).float().mean().item()
    assert test_error <= TEST_ERROR_BOUND, f"rec-LRA test error {test_error:.2f}%"
