"""Does ``torch.compile`` speed up the fused rec-LRA level? (issue 8: an option only where it helps)

    python experiments/speed/compile_level.py --batch-size 500 --threads 1

The hidden level of the MLP 5×256 on the skip pathway, written as one pure function (targets,
errors, norms, weight and bias updates), timed eager and compiled by inductor (the best of 5
repetitions of 30 calls, µs). Inductor can fuse the elementwise passes; the GEMMs stay MKL's.
"""

from __future__ import annotations

import argparse
import time

import torch


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
    print(
        f"batch {B} · {args.threads} thread(s): eager {eager:.0f} µs, compiled {compiled:.0f} µs "
        f"({eager / compiled:.2f}× faster), compile time {compile_s:.1f} s"
    )


if __name__ == "__main__":
    main()
