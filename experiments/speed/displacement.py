"""The displacement ``h_i − β E_iᵀ e_L`` of every hidden layer, three ways (issue 8).

    python experiments/speed/displacement.py --batch-size 32,50,500 --threads 2 --rounds 9

On the MLP 5×256's stacks (k = 5 layers, n = 256, C = 10 classes), µs per call (median of
``rounds`` interleaved repetitions of 40 calls), all in place on the stack of pre-activations:

- ``baddbmm``: the compiled step's way, one batched GEMM over the layer-major stack ``(k, B, n)``
  with the output error broadcast to every layer (``e.expand(k, B, C)``);
- ``addmm per layer``: one GEMM per layer on the same stack;
- ``one GEMM, batch-major``: the stack laid out ``(B, k, n)`` instead, so that every layer's
  displacement is one ``(B, C) @ (C, k·n)`` GEMM adding onto it — the layout a step would need
  for this (its forward GEMMs would then write strided rows, ``ldc = k·n``);
- ``tanh`` and ``z − y`` over the same stack, for scale (one elementwise pass each).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from _timing import median_us

K, N, C, BETA = 5, 256, 10, 0.1


def calls_for(batch: int) -> dict[str, Callable[[], object]]:
    """The timed callables at one batch size, each in place on its own stack."""
    torch.manual_seed(0)
    H, Z = torch.randn(K, batch, N), torch.randn(K, batch, N)
    e, Et = torch.randn(batch, C), torch.randn(K, C, N)
    flat = torch.randn(batch, K * N)  # the batch-major stack, (B, k·n)
    Et_cat = Et.permute(1, 0, 2).reshape(C, K * N).contiguous()
    e_k = e.expand(K, batch, C)

    def per_layer() -> None:
        for i in range(K):
            torch.addmm(H[i], e, Et[i], alpha=-BETA, out=H[i])

    return {
        "baddbmm": lambda: torch.baddbmm(H, e_k, Et, alpha=-BETA, out=H),
        "addmm per layer": per_layer,
        "one GEMM, batch-major": lambda: torch.addmm(flat, e, Et_cat, alpha=-BETA, out=flat),
        "tanh": lambda: torch.tanh(H, out=H),
        "z − y": lambda: torch.sub(Z, H, out=H),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", default="32,50,500")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads {torch.get_num_threads()} · µs per call, median of {args.rounds} rounds")
    names = list(calls_for(1))
    print("| batch | " + " | ".join(names) + " |")
    print("| --- |" + " --- |" * len(names))
    for batch in (int(b) for b in args.batch_size.split(",")):
        calls = calls_for(batch)
        times: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(args.rounds):
            for name, call in calls.items():
                times[name].append(median_us(call, 40, 1))
        cells = " | ".join(f"{statistics.median(times[m]):.0f}" for m in names)
        print(f"| {batch} | {cells} |")


if __name__ == "__main__":
    main()
