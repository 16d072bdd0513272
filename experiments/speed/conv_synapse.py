"""Stride-1 conv error synapses: ``conv_transpose2d`` against the same operator as ``conv2d``.

    python experiments/speed/conv_synapse.py --threads 2 --rounds 12

A convolutional error synapse transmits ``d_i = conv_transpose(e_j, E)`` (``reclra.synapses``);
at stride 1 that is the correlation ``conv2d(e_j, flip(E)ᵀ)``. This script times, interleaved,
rec-LRA's ``compute_grads`` on ResNet-18 (width 8, batch 50, Fashion-MNIST-shaped input; its
``blocks`` pathway has eight stride-1 conv synapses) with each form, and the two forms alone on
every synapse shape of that model (medians, ms and µs).
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from _timing import median_us

import reclra.synapses as synapses
from reclra.models import build_model
from reclra.rules import build_rule

LIBRARY = synapses._conv_transmit  # conv_transpose2d


def as_correlation(E, e_j, out_shape_i):
    assert out_shape_i[1] == e_j.shape[-2], "stride 1 only"
    return F.conv2d(e_j, E.transpose(0, 1).flip(-2, -1), padding=E.shape[-1] // 2)


FORMS = {"conv_transpose2d (library)": LIBRARY, "conv2d": as_correlation}


def transmit_us(form, E, e_j, size) -> float:
    return median_us(lambda: form(E, e_j, size), calls=20, reps=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = build_model("resnet18", input_shape=(1, 28, 28), num_classes=10, width=8)
    rule = build_rule("rec-lra", net)
    x, y = torch.rand(50, 1, 28, 28), torch.randint(0, 10, (50,))

    def step() -> None:
        rule.zero_grad(set_to_none=True)
        rule.compute_grads(x, y)

    times: dict[str, list[float]] = {name: [] for name in FORMS}
    names = list(FORMS)
    try:
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                synapses._conv_transmit = FORMS[name]
                times[name].append(median_us(step, calls=5, reps=1) / 1e3)
    finally:
        synapses._conv_transmit = LIBRARY
    print(f"rec-LRA compute_grads, ResNet-18 w8, batch 50, {args.threads} threads (ms, median):")
    for name, ts in times.items():
        print(f"  {name:28s} {statistics.median(ts):.2f}")
    transposed, correlation = times.values()
    paired = statistics.median(c / t for t, c in zip(transposed, correlation, strict=True))
    print(f"  conv2d / conv_transpose2d, paired: {paired:.3f}")
    print("each synapse alone (µs):")
    seen = set()
    for key, E in rule.E.items():
        if E.dim() != 4 or E.shape in seen:
            continue
        seen.add(E.shape)
        size = net.layer(int(key.split("->")[1])).out_shape
        e_j = torch.randn(50, E.shape[0], *size[1:])
        cells = [f"{name} {transmit_us(f, E, e_j, size):7.1f}" for name, f in FORMS.items()]
        print(f"  E {tuple(E.shape)} on {tuple(e_j.shape)}: " + ", ".join(cells))


if __name__ == "__main__":
    main()
