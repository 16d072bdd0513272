"""The forward GEMMs with the weight as torch stores it or copied transposed first (issue 8).

    python experiments/speed/weight_layout.py --batch-size 500 --threads 2 --rounds 15

``addmm(b, z, W.t())`` is how the compiled step (and ``nn.Linear``) multiplies: MKL reads the
transposed view. The alternative copies ``Wᵀ`` into a contiguous buffer at every step (the
weights change at every step) and multiplies by that. µs per call, median of ``rounds``
interleaved repetitions of 40 calls, for a 256×256 layer and the 784-input first layer, with
the median of the paired ratios.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _timing import median_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", default="500")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads {torch.get_num_threads()} · µs per call, median of {args.rounds} rounds")
    print("| batch | inputs | W.t() view | copy + contiguous | ratio |")
    print("| --- | --- | --- | --- | --- |")
    for batch in (int(b) for b in args.batch_size.split(",")):
        for d in (256, 784):
            torch.manual_seed(0)
            z, W, b = torch.randn(batch, d), torch.randn(256, d), torch.randn(256)
            out, Wt = torch.empty(batch, 256), torch.empty(d, 256)

            def view(z=z, W=W, b=b, out=out) -> None:
                torch.addmm(b, z, W.t(), out=out)

            def copied(z=z, W=W, b=b, out=out, Wt=Wt) -> None:
                Wt.copy_(W.t())
                torch.addmm(b, z, Wt, out=out)

            a, c = [], []
            for _ in range(args.rounds):
                a.append(median_us(view, 40, 1))
                c.append(median_us(copied, 40, 1))
            ratio = statistics.median(y / x for x, y in zip(a, c, strict=True))
            row = f"{statistics.median(a):.0f} | {statistics.median(c):.0f} | {ratio:.3f}"
            print(f"| {batch} | {d} | {row} |")


if __name__ == "__main__":
    main()
