"""The rec-LRA step out of Python, first try: the whole-step kernel as ATen calls in C++ (issue 8).

    python experiments/speed/cpp_step.py --batch-size 32,50,500 --threads 2 --rounds 9

The experiment that led to the library's compiled step (``src/reclra/rules/rec_lra_native.cpp``),
kept as the variant it measured: the maths of ``DenseSkipKernel.step`` (MLP, ``skip`` pathway,
fixed synapses, ``tanh``, ε = 0) as one C++ function made of ATen operators only — no hand
loops, no reuse of the directions' buffers, the 1/B scale as a separate ``mul_`` — compiled with
``torch.utils.cpp_extension.load_inline`` (a C++ compiler and ninja), setting every ``.grad``
itself. It checks that this step gives the library's gradients, then times, interleaved in one
process, with fused Adam: the plain backprop step (``cross_entropy(net(x), y).backward()``), the
library's rec-LRA step (now its compiled step; ``--python`` for its kernel in Python, as when
this script was written) and this C++ step, each a whole training step (``zero_grad``,
``compute_grads``, ``optimizer.step()``) on its own copy of the MLP 5×256. Printed: µs per step
and the ratios to the plain backprop step, medians (IQR) over rounds, as a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from _timing import timed_us
from torch.utils.cpp_extension import load_inline

from reclra.models import build_model
from reclra.rules import build_rule

CPP = r"""
#include <torch/extension.h>

// One rec-LRA step of a tanh MLP on the skip pathway (fixed synapses, eps = 0): the forward pass
// into the stacks H, Z (k, B, n), the output error, every layer's update set as its .grad.
// Returns the loss and the mean error norms (k + 1,).
std::vector<at::Tensor> step(const at::Tensor& x, const at::Tensor& y,
                             const std::vector<at::Tensor>& W, const std::vector<at::Tensor>& b,
                             const at::Tensor& Et, at::Tensor H, at::Tensor Z, double beta) {
  at::NoGradGuard no_grad;
  const int64_t k = H.size(0), B = x.size(0);
  const double inv = 1.0 / static_cast<double>(B);
  at::Tensor z = x;
  for (int64_t i = 0; i < k; ++i) {  // h_i = W_i z_{i-1} + b_i, z_i = tanh(h_i)
    at::Tensor Hi = H.select(0, i), Zi = Z.select(0, i);
    at::addmm_out(Hi, b[i], z, W[i].t());
    at::tanh_out(Zi, Hi);
    z = Zi;
  }
  at::Tensor logp = at::log_softmax(at::addmm(b[k], z, W[k].t()), 1);
  at::Tensor loss = at::nll_loss(logp, y);
  at::Tensor e = logp.exp_();  // e_L = softmax(h_L) - onehot(y)
  e.scatter_add_(1, y.unsqueeze(1), at::full({B, 1}, -1.0, e.options()));
  at::Tensor norm_L = at::linalg_vector_norm(e, 2, {1}).mean();
  W[k].mutable_grad() = at::mm(e.t(), z).mul_(inv);
  b[k].mutable_grad() = e.mean(0);
  // targets, in place of H: y_i = tanh(h_i - beta E_{L->i} e_L); errors e_i = z_i - y_i
  at::baddbmm_out(H, H, e.expand({k, B, e.size(1)}), Et, 1.0, -beta);
  H.tanh_();
  at::Tensor err = at::sub_out(H, Z, H);
  at::Tensor norm = at::linalg_vector_norm(err, 2, {2}).mean(1);
  W[0].mutable_grad() = at::mm(err.select(0, 0).t(), x).mul_(inv);
  if (k > 1) {
    at::Tensor dW = at::bmm(err.slice(0, 1).transpose(1, 2), Z.slice(0, 0, k - 1)).mul_(inv);
    for (int64_t i = 1; i < k; ++i) W[i].mutable_grad() = dW.select(0, i - 1);
  }
  at::Tensor db = err.mean(1);
  for (int64_t i = 0; i < k; ++i) b[i].mutable_grad() = db.select(0, i);
  return {loss, at::cat({norm, norm_L.unsqueeze(0)})};
}
"""


def compiled():
    return load_inline(
        name="reclra_cpp_step",
        cpp_sources=CPP,
        functions=["step"],
        extra_cflags=["-O3"],
        verbose=False,
    )


class CppStep:
    """The C++ step with its stacks and the stacked synapses of one model (fixed synapses)."""

    def __init__(self, ext, rule) -> None:
        net = rule.net
        self.ext, self.beta, L = ext, float(rule.betas[0]), net.num_layers
        self.W = [net.layer(i).op.weight for i in range(1, L + 1)]
        self.b = [net.layer(i).op.bias for i in range(1, L + 1)]
        self.Et = torch.stack([rule.E[f"{L}->{i}"] for i in range(1, L)]).transpose(1, 2)
        self.width = net.layer(1).size
        self.bufs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        bufs = self.bufs.get(x.shape[0])
        if bufs is None:
            shape = (len(self.W) - 1, x.shape[0], self.width)
            bufs = self.bufs[x.shape[0]] = (x.new_empty(shape), x.new_empty(shape))
        return self.ext.step(x.flatten(1), y, self.W, self.b, self.Et, *bufs, self.beta)


def check(ext) -> float:
    """Largest difference between the C++ step's gradients and the library kernel's."""
    torch.manual_seed(1)
    nets = [build_model("mlp", input_shape=(784,), num_classes=10) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    lib, cpp = build_rule("rec-lra", nets[0]), build_rule("rec-lra", nets[1])
    for key in lib.E:
        cpp.E[key].copy_(lib.E[key])
    x, y = torch.rand(50, 784), torch.randint(0, 10, (50,))
    stats = lib.compute_grads(x, y)
    loss, _ = CppStep(ext, cpp)(x, y)
    diff = abs(float(loss) - float(stats.loss))
    for p, q in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        diff = max(diff, float((p.grad - q.grad).abs().max()))
    return diff


def steps(ext, batch: int, seed: int = 0, native: bool = True) -> dict[str, Callable[[], object]]:
    torch.manual_seed(seed)
    nets = [build_model("mlp", input_shape=(784,), num_classes=10) for _ in range(3)]
    for net in nets[1:]:
        net.load_state_dict(nets[0].state_dict())
    x, y = torch.rand(batch, 784), torch.randint(0, 10, (batch,))
    bp = build_rule("backprop", nets[0], error_norms=False)
    rec = build_rule("rec-lra", nets[1], native=native)
    cpp = CppStep(ext, build_rule("rec-lra", nets[2]))

    def step_of(grads: Callable[..., object], params) -> Callable[[], None]:
        opt = torch.optim.Adam(params, lr=1e-4, fused=True)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            grads(x, y)
            opt.step()

        return step

    return {
        "backprop": step_of(bp.compute_grads, nets[0].parameters()),
        "rec-lra": step_of(rec.compute_grads, nets[1].parameters()),
        "c++": step_of(cpp, nets[2].parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", default="32,50,500")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--python", action="store_true", help="the library's kernel in Python")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    ext = compiled()
    print(f"compiled in {time.perf_counter() - start:.1f} s (cached after the first build)")
    print(f"largest gradient difference, C++ step vs library kernel: {check(ext):.2e}")
    print(f"threads {torch.get_num_threads()} · torch {torch.__version__} · µs per step, median")
    print(f"(IQR) over {args.rounds} interleaved rounds of {args.calls} steps")
    cols = ("backprop", "rec-lra", "c++", "rec-lra ratio", "c++ ratio")
    print("| batch | " + " | ".join(cols) + " |")
    print("| --- |" + " --- |" * len(cols))
    for batch in (int(b) for b in args.batch_size.split(",")):
        fns = steps(ext, batch, native=not args.python)
        for fn in fns.values():
            timed_us(fn, 10)
        times: dict[str, list[float]] = {name: [] for name in cols}
        for _ in range(args.rounds):
            for name, fn in fns.items():
                times[name].append(timed_us(fn, args.calls))
            for name in ("rec-lra", "c++"):
                times[f"{name} ratio"].append(times[name][-1] / times["backprop"][-1])
        cells = []
        for name in cols:
            q = statistics.quantiles(times[name], n=4)
            fmt = ".3f" if "ratio" in name else ".0f"
            cells.append(f"{statistics.median(times[name]):{fmt}} ({q[2] - q[0]:{fmt}})")
        print(f"| {batch} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
