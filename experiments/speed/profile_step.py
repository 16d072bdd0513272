"""Where a training step's time goes, operator by operator (docs/PERFORMANCE.md §2).

    python experiments/speed/profile_step.py --batch-size 32,500 --threads 2

On the MLP 5×256 tanh with fused Adam, printed per batch size:

1. **profile**: for the plain torch backprop step (``backprop:error_norms=false``), the
   library's backprop (with error norms) and rec-LRA (compiled, and its kernel in Python), the
   torch profiler's self CPU time per step of the heaviest operators (µs, with calls per step),
   the sum over all operators, and the step's wall time without the profiler (the difference is
   Python outside operators, plus the profiler's own cost);
2. **adam**: what one Adam step costs at three depths of torch's stack over the model's 12
   tensors — ``Adam(fused=True).step()``, the functional ``torch.optim.adam.adam(fused=True)``,
   the ``torch._fused_adam_`` kernel alone — and the kernel over one flat tensor of the same size
   (µs, median of 9 repetitions);
3. **gemms**: the step's matrix products alone, at their shapes (GFLOP/s), beside this
   machine's matmul peak (a 2048×2048 float32 GEMM), interleaved.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from _timing import median_us
from torch.optim.adam import adam
from torch.profiler import ProfilerActivity, profile

from reclra.models import build_model
from reclra.rules import build_rule

RULES = {"plain backprop": ("backprop", {"error_norms": False}), "backprop": ("backprop", {})}
RULES["rec-lra"] = ("rec-lra", {})  # its compiled step
RULES["rec-lra, Python kernel"] = ("rec-lra", {"native": False})


def training_step(name: str, batch: int) -> Callable[[], None]:
    torch.manual_seed(0)
    rule_name, options = RULES[name]
    rule = build_rule(rule_name, build_model("mlp", input_shape=(784,), num_classes=10), **options)
    opt = torch.optim.Adam(rule.parameters(), lr=1e-4, fused=True)
    x, y = torch.rand(batch, 784), torch.randint(0, 10, (batch,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        rule.compute_grads(x, y)
        opt.step()

    return step


def profile_steps(batch: int, top: int, steps: int = 100) -> None:
    for name in RULES:
        step = training_step(name, batch)
        wall = median_us(step, calls=steps)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                step()
        events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in events) / steps
        print(f"  {name}: wall {wall:.0f} µs/step, operators' self time {total:.0f} µs/step")
        for e in events[:top]:
            calls = e.count / steps
            print(f"    {e.key:48s} {calls:5.1f} calls {e.self_cpu_time_total / steps:8.1f} µs")


def adam_costs() -> None:
    model = build_model("mlp", input_shape=(784,), num_classes=10)
    params = [p for p in model.parameters()]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = torch.optim.Adam(params, lr=1e-4, fused=True)
    raw = [p.detach() for p in params]
    grads = [p.grad for p in params]
    m, v = [torch.zeros_like(p) for p in raw], [torch.zeros_like(p) for p in raw]
    steps = [torch.tensor(1.0) for _ in raw]
    n = sum(p.numel() for p in raw)
    flat = [torch.zeros(n)], [torch.randn(n)], [torch.zeros(n)], [torch.zeros(n)]
    flat_steps = [torch.tensor(1.0)]
    hyper = dict(amsgrad=False, lr=1e-4, beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-8)
    hyper["maximize"] = False

    def functional() -> None:
        adam(raw, grads, m, v, [], steps, foreach=None, fused=True, capturable=False,
             differentiable=False, grad_scale=None, found_inf=None, **hyper)  # fmt: skip

    cases = {
        "Adam(fused=True).step(), 12 tensors": opt.step,
        "torch.optim.adam.adam(fused=True), 12 tensors": functional,
        "torch._fused_adam_ kernel, 12 tensors": lambda: torch._fused_adam_(
            raw, grads, m, v, [], steps, **hyper
        ),
        "torch._fused_adam_ kernel, 1 flat tensor": lambda: torch._fused_adam_(
            *flat, [], flat_steps, **hyper
        ),
    }
    for name, fn in cases.items():
        print(f"  {name:48s} {median_us(fn, calls=200):7.1f} µs")


def gemm_rates(batch: int, rounds: int = 5) -> None:
    big = torch.rand(2048, 2048), torch.rand(2048, 2048), torch.empty(2048, 2048)
    z, W, b = torch.rand(batch, 784), torch.rand(256, 784), torch.rand(256)
    z2, W2, h = torch.rand(batch, 256), torch.rand(256, 256), torch.empty(batch, 256)
    err, Z = torch.rand(4, batch, 256), torch.rand(4, batch, 256)
    dW1, dW = torch.empty(256, 784), torch.empty(4, 256, 256)
    cases = {
        "peak: 2048×2048 mm": (lambda: torch.mm(big[0], big[1], out=big[2]), 2 * 2048**3),
        f"forward, layer 1: addmm {batch}×784 · 784×256": (
            lambda: torch.addmm(b, z, W.t(), out=h),
            2 * batch * 784 * 256,
        ),
        f"forward, layers 2–5: addmm {batch}×256 · 256×256": (
            lambda: torch.addmm(b, z2, W2.t(), out=h),
            2 * batch * 256 * 256,
        ),
        f"update, layer 1: mm 256×{batch} · {batch}×784": (
            lambda: torch.mm(err[0].t(), z, out=dW1),
            2 * batch * 784 * 256,
        ),
        f"updates, layers 2–5: bmm 4 × 256×{batch} · {batch}×256": (
            lambda: torch.bmm(err.transpose(1, 2), Z, out=dW),
            4 * 2 * batch * 256 * 256,
        ),
    }
    rates: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, (fn, flops) in cases.items():
            calls = max(3, int(2e8 / flops))
            rates[name].append(flops / (median_us(fn, calls=calls, reps=3) * 1e-6) / 1e9)
    for name, values in rates.items():
        print(f"  {name:52s} {statistics.median(values):6.1f} GFLOP/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", default="32,500")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=14, help="operators shown per rule")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads} · torch {torch.__version__}")
    for batch in [int(b) for b in args.batch_size.split(",")]:
        print(f"batch {batch}: profile (self CPU time per step)")
        profile_steps(batch, args.top)
        print(f"batch {batch}: gemms alone")
        gemm_rates(batch)
    print("adam (µs per step, median)")
    adam_costs()


if __name__ == "__main__":
    main()
