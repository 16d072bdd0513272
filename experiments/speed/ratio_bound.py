"""The lowest step ratio rec-LRA could reach against backprop on this machine (issue 8).

    python experiments/speed/ratio_bound.py --batch-size 32,50,500 --threads 2 --rounds 15

Any rec-LRA step must do at least what both rules share — the forward pass and the optimizer
step — plus its local weight updates, which are the same GEMMs as backprop's weight gradients
(``ΔW_i = e_i z_{i−1}ᵀ`` for every layer). This script times, interleaved in one process, on the
MLP 5×256 tanh with fused Adam:

- ``forward``: the plain forward pass ``net(x)`` (no autograd);
- ``updates``: the weight-update GEMMs alone (``e_iᵀ z_{i−1}`` and the bias sums of every layer,
  with stand-in error tensors of the right shapes);
- ``adam``: one fused Adam step over the model's parameters;
- ``backprop`` and ``rec-lra``: their whole training steps (zero_grad, compute_grads, Adam);
  backprop is the plain torch step (``error_norms=False``: ``cross_entropy(net(x), y).backward()``).

``bound = (forward + updates + adam) / backprop``, per round, is the ratio of a rec-LRA step that
spent *nothing* on targets, errors, displacements, bookkeeping or Python against the backprop step
measured beside it: no implementation of rec-LRA with this optimizer can go below it here.

The same floor bounds the fraction of the machine's matmul peak a step can reach: ``% peak`` is
rec-LRA's step FLOPs (counted as ``reclra bench`` counts them) per second of its measured step
over the peak measured in the same round (``reclra.bench.matmul_peak``, a 2048×2048 GEMM), and
``% peak bound`` the same FLOPs over the floor's time — what a step doing nothing but its
forward pass, its update GEMMs and Adam would reach.

``forward`` and ``updates`` allocate their outputs at every call (as ``net(x)`` does), and the
updates divide by the batch in a second pass. ``forward kept`` and ``updates kept`` do the same
arithmetic as the compiled step does it — into buffers kept from call to call, the ``1/B`` inside
the GEMM — and ``bound kept`` / ``% peak bound kept`` are the floor taken from them: a tighter
floor for a step that keeps its buffers. The medians over rounds and their IQRs are printed, as a
markdown table.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from _timing import timed_us

from reclra.bench import matmul_peak, step_flops
from reclra.models import build_model
from reclra.rules import build_rule


def pieces(batch: int, seed: int = 0) -> dict[str, Callable[[], object]]:
    """The timed callables for one batch size, each on its own copy of the model."""
    torch.manual_seed(seed)
    nets = [build_model("mlp", input_shape=(784,), num_classes=10) for _ in range(3)]
    for net in nets[1:]:
        net.load_state_dict(nets[0].state_dict())
    x, y = torch.rand(batch, 784), torch.randint(0, 10, (batch,))
    shared, bp_net, rec_net = nets
    layers = [shared.layer(i) for i in range(1, shared.num_layers + 1)]
    inputs = [torch.rand(batch, layer.op.weight.shape[1]) for layer in layers]
    errors = [torch.rand(batch, layer.op.weight.shape[0]) for layer in layers]
    adam = torch.optim.Adam(shared.parameters(), lr=1e-4, fused=True)
    for p in shared.parameters():
        p.grad = torch.zeros_like(p)

    def forward() -> None:
        with torch.no_grad():
            shared(x)

    def updates() -> None:
        for e, z in zip(errors, inputs, strict=True):
            torch.mm(e.t(), z) / batch
            e.sum(0) / batch

    # the same work as the compiled step does it: into buffers kept from call to call, the
    # updates' 1/B inside the GEMM (no fresh outputs to fault in, no second pass)
    params = [(layer.op.weight, layer.op.bias) for layer in layers]
    hs = [torch.empty(batch, W.shape[0]) for W, _ in params]
    zs = [torch.empty_like(h) for h in hs]
    dWs = [torch.empty_like(W) for W, _ in params]
    dbs = [torch.empty_like(b) for _, b in params]

    @torch.no_grad()
    def forward_kept() -> None:
        z = x
        for k, ((W, b), h, out) in enumerate(zip(params, hs, zs, strict=True)):
            torch.addmm(b, z, W.t(), out=h)
            if k < len(params) - 1:  # the hidden layers' tanh; the output's logits as they are
                torch.tanh(h, out=out)
                z = out

    def updates_kept() -> None:
        for e, z, dW, db in zip(errors, inputs, dWs, dbs, strict=True):
            torch.addmm(dW, e.t(), z, beta=0, alpha=1 / batch, out=dW)
            torch.sum(e, 0, out=db).mul_(1 / batch)

    def step_of(rule, opt) -> Callable[[], None]:
        def step() -> None:
            opt.zero_grad(set_to_none=True)
            rule.compute_grads(x, y)
            opt.step()

        return step

    bp = build_rule("backprop", bp_net, error_norms=False)  # the plain torch step, fastest
    rec = build_rule("rec-lra", rec_net)
    return {
        "forward": forward,
        "updates": updates,
        "forward kept": forward_kept,
        "updates kept": updates_kept,
        "adam": adam.step,
        "backprop": step_of(bp, torch.optim.Adam(bp.parameters(), lr=1e-4, fused=True)),
        "rec-lra": step_of(rec, torch.optim.Adam(rec.parameters(), lr=1e-4, fused=True)),
    }


def measure(batch: int, rounds: int, calls: int) -> dict[str, list[float]]:
    fns = pieces(batch)
    for fn in fns.values():
        timed_us(fn, 10)
    flops = step_flops(fns["rec-lra"])
    names = (*fns, "bound", "bound kept", "ratio", "% peak", "% peak bound", "% peak bound kept")
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        peak = matmul_peak(torch.device("cpu")) * 1e3  # FLOP per µs
        for name, fn in fns.items():
            times[name].append(timed_us(fn, calls))
        floor = times["forward"][-1] + times["updates"][-1] + times["adam"][-1]
        kept = times["forward kept"][-1] + times["updates kept"][-1] + times["adam"][-1]
        times["bound"].append(floor / times["backprop"][-1])
        times["bound kept"].append(kept / times["backprop"][-1])
        times["ratio"].append(times["rec-lra"][-1] / times["backprop"][-1])
        times["% peak"].append(100 * flops / times["rec-lra"][-1] / peak)
        times["% peak bound"].append(100 * flops / floor / peak)
        times["% peak bound kept"].append(100 * flops / kept / peak)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", default="32,50,500")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batch_size.split(",")]
    print(f"threads {torch.get_num_threads()} · torch {torch.__version__} · µs per call, median")
    print(f"(IQR) over {args.rounds} interleaved rounds of {args.calls} calls")
    cols = (
        "forward",
        "updates",
        "forward kept",
        "updates kept",
        "adam",
        "backprop",
        "rec-lra",
        "bound",
        "bound kept",
        "ratio",
        "% peak",
        "% peak bound",
        "% peak bound kept",
    )
    print("| batch | " + " | ".join(cols) + " |")
    print("| --- |" + " --- |" * len(cols))
    for b in batches:
        times = measure(b, args.rounds, args.calls)
        cells = []
        for name in cols:
            q = statistics.quantiles(times[name], n=4)
            fmt = ".3f" if name.startswith(("bound", "ratio")) else ".1f" if "%" in name else ".0f"
            cells.append(f"{statistics.median(times[name]):{fmt}} ({q[2] - q[0]:{fmt}})")
        print(f"| {b} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
