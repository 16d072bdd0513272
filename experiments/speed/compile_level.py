"""Does ``torch.compile`` speed up the fused rec-LRA level? (issue 8: an option only where it helps)

    python experiments/speed/compile_level.py --batch-size 500 --threads 1

The hidden level of the MLP 5×256 on the skip pathway, written as one pure function (targets,
errors, norms, weight and bias updates), timed eager and compiled by inductor (the best of 5
repetitions of 30 calls, µs), beside the library's own fused kernel for the same level
(``RecLRA.level_work``). Inductor can fuse the elementwise passes; the GEMMs stay MKL's.
"""

from __future__ import annotations

import argparse
import time

import torch

from reclra.functional import output_error
from reclra.models import build_model
from reclra.rules import Step, build_rule


def best_us(fn, calls: int = 30) -> float:
    for _ in range(5):
        fn()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls * 1e6)
    return best


def level(H, Z, e_L, E, x, beta: float):
    B = x.shape[0]
    Y = torch.tanh(H - beta * torch.matmul(e_L, E.transpose(1, 2)))  # (k, B, n)
    err = Z - Y
    norms = torch.linalg.vector_norm(err, dim=2).mean(1)
    dW1 = err[0].t() @ x / B
    dW = torch.bmm(err[1:].transpose(1, 2), Z[:-1]) / B
    db = err.sum(1) / B
    return err, norms, dW1, dW, db


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    k, B, n, n_L, D = 5, args.batch_size, 256, 10, 784
    H = torch.randn(k, B, n)
    Z, e_L = torch.tanh(H), torch.randn(B, n_L)
    E, x = torch.randn(k, n, n_L) * 0.05, torch.rand(B, D)
    eager = best_us(lambda: level(H, Z, e_L, E, x, 0.1))
    start = time.perf_counter()
    compiled_level = torch.compile(level, dynamic=False)
    compiled_level(H, Z, e_L, E, x, 0.1)
    compile_s = time.perf_counter() - start
    compiled = best_us(lambda: compiled_level(H, Z, e_L, E, x, 0.1))
    net = build_model("mlp", input_shape=(D,), num_classes=n_L)
    rule = build_rule("rec-lra", net)
    with torch.no_grad():
        trace = rule.record(x)
        e, loss = output_error(trace.logits, torch.randint(0, n_L, (B,)))
        step = Step(trace=trace, y=torch.zeros(B, dtype=torch.long), e_L=e, loss=loss)
        done = {k + 1: rule.layer_work(step, k + 1, {})}
        hidden = rule.levels()[1]
        library = best_us(lambda: rule.level_work(step, hidden, done))
    print(
        f"batch {B} · {args.threads} thread(s): eager function {eager:.0f} µs, compiled "
        f"{compiled:.0f} µs (compile time {compile_s:.1f} s), the library's fused kernel "
        f"{library:.0f} µs"
    )


if __name__ == "__main__":
    main()
