"""Adaptive depth as compute saved (issue 8): the step time falls as layers stop updating.

    RECLRA_DATA=… python experiments/speed/adaptive_depth.py --rule lra --epsilon 0.35
    RECLRA_DATA=… python experiments/speed/adaptive_depth.py --rule rec-lra --epsilon 0.012

Trains the MLP 5×256 tanh on Fashion-MNIST (batch 50, fused Adam) with LRA's halting criterion
(``rule.epsilon``: the walk stops descending at the first layer whose local loss is below ε) or
rec-LRA's adaptive depth (a layer whose mean error norm is below ε is not updated), and prints per
epoch the mean number of layers updated per step, the median milliseconds of a training step
(compute_grads + optimizer step, timed one by one) and the test error. ``--epsilon 0`` is the
reference without skipping.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import reclra
from reclra.data import iterate_minibatches, load_dataset
from reclra.models import build_model
from reclra.rules import build_rule
from reclra.train import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rule", default="lra", choices=["lra", "rec-lra"])
    parser.add_argument("--epsilon", type=float, default=0.0)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--limit-train", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = load_dataset("fashion-mnist", seed=args.seed, limit_train=args.limit_train)
    net = build_model("mlp", input_shape=data.input_shape, num_classes=data.num_classes)
    rule = build_rule(args.rule, net, epsilon=args.epsilon)
    opt = torch.optim.Adam(rule.parameters(), lr=args.lr, fused=True)
    weights = [layer.op.weight for layer in net.layers]
    print(f"reclra {reclra.__version__} · {args.rule} ε={args.epsilon} · lr {args.lr}")
    print("| epoch | layers updated per step | ms/step (median) | ms/step (mean) | test error % |")
    print("| --- | --- | --- | --- | --- |")
    gen = torch.Generator().manual_seed(args.seed)
    for epoch in range(1, args.epochs + 1):
        times, updated = [], []
        for x, y in iterate_minibatches(data.train, 50, shuffle=True, generator=gen):
            start = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            rule.compute_grads(x, y)
            opt.step()
            times.append((time.perf_counter() - start) * 1e3)
            updated.append(sum(w.grad is not None for w in weights))
        test = evaluate(rule, data.test).error
        print(
            f"| {epoch} | {statistics.mean(updated):.2f} | {statistics.median(times):.3f} | "
            f"{statistics.mean(times):.3f} | {test:.2f} |"
        )


if __name__ == "__main__":
    main()
