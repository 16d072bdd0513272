"""Does one flat parameter buffer, shared by the optimizer, make either rule's step faster?

    python experiments/speed/flat_parameters.py --batch-size 32,50 --threads 2 --rounds 24

The idea (docs/PERFORMANCE.md §2): fused Adam over the MLP 5×256's 12 tensors costs more than
over one tensor of the same 466,698 numbers, and most of a small-batch step's remainder is
per-tensor overhead. Here every parameter of a model becomes a view of one flat tensor, its
``.grad`` a view of one flat gradient, and Adam runs over the flat tensor alone; the gradient is
zeroed in one call and the rules' directions add into the views (``p.grad += direction``).

Printed, interleaved in one process (medians over rounds, ms): the Adam step alone over the 12
tensors and over the flat one, then backprop and rec-LRA steps, each with the model's own
parameters and with the flat buffer, and the two step ratios rec-LRA/backprop.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from reclra.models import build_model
from reclra.rules import build_rule


def flatten(params: list[nn.Parameter]) -> nn.Parameter:
    """Point every parameter (and a ``.grad``) into one flat tensor; return that tensor as the
    parameter the optimizer updates (its ``.grad`` is the flat gradient)."""
    numel = sum(p.numel() for p in params)
    flat, grad = params[0].new_empty(numel), params[0].new_zeros(numel)
    offset = 0
    for p in params:
        n = p.numel()
        flat[offset : offset + n].copy_(p.detach().flatten())
        p.data = flat[offset : offset + n].view_as(p)
        p.grad = grad[offset : offset + n].view_as(p)
        offset += n
    shared = nn.Parameter(flat)
    shared.grad = grad
    return shared


def training_step(rule_name: str, x: torch.Tensor, y: torch.Tensor, *, flat: bool):
    torch.manual_seed(0)
    rule = build_rule(rule_name, build_model("mlp", input_shape=(784,), num_classes=10))
    params = list(rule.parameters())
    if not flat:
        opt = torch.optim.Adam(params, lr=1e-4, fused=True)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            rule.compute_grads(x, y)
            opt.step()

        return step
    shared = flatten(params)
    opt = torch.optim.Adam([shared], lr=1e-4, fused=True)
    grad = shared.grad

    def flat_step() -> None:
        grad.zero_()  # every .grad view at once; the directions add into them
        rule.compute_grads(x, y)
        opt.step()

    return flat_step


def adam_steps() -> dict[str, Callable[[], object]]:
    model = build_model("mlp", input_shape=(784,), num_classes=10)
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    shared = nn.Parameter(torch.zeros(sum(p.numel() for p in params)))
    shared.grad = torch.randn_like(shared)
    return {
        "Adam, 12 tensors": torch.optim.Adam(params, lr=1e-4, fused=True).step,
        "Adam, 1 flat tensor": torch.optim.Adam([shared], lr=1e-4, fused=True).step,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", default="32,50")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=24)
    parser.add_argument("--calls", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for batch in [int(b) for b in args.batch_size.split(",")]:
        x, y = torch.rand(batch, 784), torch.randint(0, 10, (batch,))
        fns = dict(adam_steps())
        for name in ("backprop", "rec-lra"):
            fns[name] = training_step(name, x, y, flat=False)
            fns[f"{name}, flat"] = training_step(name, x, y, flat=True)
        times: dict[str, list[float]] = {name: [] for name in fns}
        names = list(fns)
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate the order
                fn = fns[name]
                for _ in range(3):
                    fn()
                start = time.perf_counter()
                for _ in range(args.calls):
                    fn()
                times[name].append((time.perf_counter() - start) / args.calls * 1e3)
        print(f"batch {batch}, {args.threads} threads, {args.rounds} rounds (ms, median):")
        for name, ts in times.items():
            print(f"  {name:22s} {statistics.median(ts):.3f}")
        for suffix in ("", ", flat"):
            paired = zip(times[f"rec-lra{suffix}"], times[f"backprop{suffix}"], strict=True)
            ratio = statistics.median(a / b for a, b in paired)
            print(f"  ratio rec-LRA/backprop{suffix or ', own parameters'}: {ratio:.3f}")


if __name__ == "__main__":
    main()
