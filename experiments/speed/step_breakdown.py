"""Where a training step's time goes, piece by piece (issue 8: "measured piece by piece").

    python experiments/speed/step_breakdown.py --batch-size 32,50,500 --threads 2

MLP 5×256 tanh on 784 inputs, 10 classes. Times (best of 5 repetitions of 200 calls, in µs):
the plain forward pass; rec-LRA's recorded forward (the fused kernel's, into stacked buffers),
its output error, the output layer's work and the fused level below it (the Python kernel's
pieces), its whole ``compute_grads``, compiled and in Python; backprop's ``compute_grads``; the
optimizer steps (fused Adam, foreach Adam, fused SGD) over the same parameters. The shares that
both rules pay alike (forward, optimizer) bound the step ratio from below, whatever the rest
costs.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from reclra.functional import output_error
from reclra.models import build_model
from reclra.rules import Step, build_rule


def best_us(fn: Callable[[], object], calls: int = 200, repeats: int = 5) -> float:
    for _ in range(20):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls * 1e6)
    return best


def breakdown(batch: int) -> dict[str, float]:
    torch.manual_seed(0)
    net = build_model("mlp", input_shape=(784,), num_classes=10)
    rec, bp = build_rule("rec-lra", net), build_rule("backprop", net)
    python = build_rule("rec-lra", net, native=False)  # the same kernel, not compiled
    plain = build_rule("backprop", net, error_norms=False)
    x, y = torch.rand(batch, 784), torch.randint(0, 10, (batch,))
    out = {}
    with torch.no_grad():
        out["forward (net(x))"] = best_us(lambda: net(x))
        out["rec-LRA recorded forward"] = best_us(lambda: rec.record(x))
        trace = rec.record(x)
        out["rec-LRA output error"] = best_us(lambda: output_error(trace.logits, y))
        e_L, loss = output_error(trace.logits, y)
        step = Step(trace=trace, y=y, e_L=e_L, loss=loss)
        L = net.num_layers
        out["rec-LRA output layer's work"] = best_us(lambda: rec.layer_work(step, L, {}))
        done = {L: rec.layer_work(step, L, {})}
        hidden = rec.levels()[1]
        out["rec-LRA fused hidden level"] = best_us(lambda: rec.level_work(step, hidden, done))

    def rec_grads() -> None:
        net.zero_grad(set_to_none=True)
        rec.compute_grads(x, y)

    def bp_grads() -> None:
        net.zero_grad(set_to_none=True)
        bp.compute_grads(x, y)

    def python_grads() -> None:
        net.zero_grad(set_to_none=True)
        python.compute_grads(x, y)

    out["rec-LRA compute_grads (compiled step)"] = best_us(rec_grads)
    out["rec-LRA compute_grads, native=False (the kernel in Python)"] = best_us(python_grads)
    out["backprop compute_grads"] = best_us(bp_grads)

    def plain_grads() -> None:
        net.zero_grad(set_to_none=True)
        plain.compute_grads(x, y)

    out["backprop compute_grads, error_norms=False"] = best_us(plain_grads)
    bp_grads()
    params = list(net.parameters())
    for name, opt in (
        ("fused Adam step", torch.optim.Adam(params, lr=1e-4, fused=True)),
        ("foreach Adam step", torch.optim.Adam(params, lr=1e-4, foreach=True)),
        ("fused SGD step (momentum)", torch.optim.SGD(params, lr=1e-4, momentum=0.9, fused=True)),
    ):
        out[name] = best_us(opt.step)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", default="32,50,500")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batch_size.split(",")]
    rows = {b: breakdown(b) for b in batches}
    print(f"threads {torch.get_num_threads()} · torch {torch.__version__} · µs per call, best of 5")
    print("| piece | " + " | ".join(f"batch {b}" for b in batches) + " |")
    print("| --- |" + " --- |" * len(batches))
    for piece in rows[batches[0]]:
        print(f"| {piece} | " + " | ".join(f"{rows[b][piece]:.0f}" for b in batches) + " |")


if __name__ == "__main__":
    main()
