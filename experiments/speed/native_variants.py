"""Variants of the compiled rec-LRA step, timed against the library's (issue 8).

    python experiments/speed/native_variants.py --batch-size 32,50,500 --threads 2 --rounds 9

Each variant is the library's ``src/reclra/rules/rec_lra_native.cpp`` with one change, built
under its own name; every round times the library's build and each variant's on the same
MLP 5×256 (the kernel's ``_native_step``, ``.grad`` reset to ``None`` before each call), then
profiles each once for the errors pass's own time (``reclra::errors``: the targets' ``f``, the
errors, their norms and bias sums). Printed: the median µs per call, each variant's median
ratio to the library's build, and the errors pass's µs.

The variants (the library computes ``f`` inside its own passes, ``tanh`` in float32 by its
rational approximation):

- ``torch-f``: ``f`` by torch's own kernels, each a pass of its own, as the step was before and
  as the library's builds without an ATen vector capability still do (``torch.addmm`` with the
  bias, then ``torch.tanh``; the targets' ``torch.tanh`` over the stack, then the errors pass) —
  MKL's ``tanh`` in this torch;
- ``sleef-tanh``: the library's passes with ATen's vectorized ``tanh`` (``at::vec``: SLEEF's,
  1 ulp) in float32 too;
- ``layer-split``: the errors pass split between threads by layer, not by row segments (five
  layers on two threads: three and two);
- ``serial-output-error``: the output error's rows on one thread;
- ``serial``: the build without OpenMP (``at::parallel_for`` is inline, and runs its loop
  serially in code compiled without it);
- ``portable-vec``: without ``CPU_CAPABILITY`` (still ``-march=native``): at::vec's portable
  vectors, with which the library gives ``f`` to torch's kernels (``torch-f``); before that rule,
  this variant measured the passes computing ``f`` with the portable vectors
  (``runs/fused/variants5.txt``: 1.48–1.69× slower);
- ``parallel-updates``: the first layer's update GEMM and the batched update GEMM of the other
  hidden layers at the same time, one per thread (``at::parallel_for`` over the two: each GEMM
  then runs on one thread), instead of one after the other on both threads;
- ``inline-displacement``: the displacement ``−β E_i e_L`` as ``C`` multiply-adds per value
  inside the errors pass, instead of a batched GEMM adding onto the stack before it.

The variants measured against the step before it computed ``f`` in its passes (``mkl-pass``,
``fused-sleef``, ``segments``, ``generic``, ``no-march``; ``docs/PERFORMANCE.md``, section 6)
are this script at commit ``e9e97ca``.

The rules run in the same order in every round, the library's first; a variant identical to it
measures that order's own effect.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from _timing import median_us
from torch.profiler import ProfilerActivity, profile
from torch.utils.cpp_extension import load

from reclra.models import build_model
from reclra.rules import build_rule
from reclra.rules.rec_lra_native import SOURCE, build_flags

IN_PASSES = "constexpr bool kFInPasses = true;"
TARGETS = """      with_activation<scalar_t>(f, [&](auto act) {  // Err = Z - f(H)
        errors_<scalar_t>(H.data_ptr<scalar_t>(), Z.data_ptr<scalar_t>(),
                          norms.data_ptr<scalar_t>(), db.data_ptr<scalar_t>(), k, B, n, act);
      });
"""
RATIONAL = "template <>\nstruct Tanh<float> {"
SEGMENTS = "std::min<int64_t>(B, 8)"
OUTPUT_BLOCK = "constexpr int64_t kRows = 128;"
UPDATES = """  if (learns[0]) {
    give_grad(W[0], scaled_mm(recycled(pool[1], W[0].sizes(), opts), H.select(0, 0).t(), x, inv));
  }
  if (active == k && k > 1) {  // every layer at once: dW_i = Err_i^T z_{i-1} / B, one GEMM
    at::Tensor& dW = recycled(pool[0], {k - 1, n, n}, opts);
    at::baddbmm_out(dW, dW, H.slice(0, 1).transpose(1, 2), Z.slice(0, 0, k - 1), 0.0, inv);
    for (int64_t i = 1; i < k; ++i) give_grad(W[i], dW.select(0, i - 1));
  } else {"""
PARALLEL_UPDATES = """  if (active == k && k > 1) {  // the two update GEMMs at once, a thread each
    at::Tensor& dW0 = recycled(pool[1], W[0].sizes(), opts);
    at::Tensor& dW = recycled(pool[0], {k - 1, n, n}, opts);
    at::parallel_for(0, 2, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        if (t == 0) {
          scaled_mm(dW0, H.select(0, 0).t(), x, inv);
        } else {
          at::baddbmm_out(dW, dW, H.slice(0, 1).transpose(1, 2), Z.slice(0, 0, k - 1), 0.0, inv);
        }
      }
    });
    give_grad(W[0], dW0.alias());
    for (int64_t i = 1; i < k; ++i) give_grad(W[i], dW.select(0, i - 1));
  } else {
    if (learns[0]) {
      give_grad(W[0], scaled_mm(recycled(pool[1], W[0].sizes(), opts), H.select(0, 0).t(), x, inv));
    }"""
DISPLACEMENT = "  at::baddbmm_out(H, H, e.expand({k, B, C}), Et, 1.0, -beta);  // h_i - beta d_i\n"
# ``inline-displacement``: errors_ given the output error and the synapses, h - beta d_i
# computed row by row inside it (displaced), the batched displacement GEMM dropped
ERRORS_HEAD = (
    "void errors_(T* H, const T* Z, T* norm, T* db, int64_t k, int64_t B, int64_t n, F f) {"
)
DISPLACED_HEAD = (
    "void errors_(T* H, const T* Z, T* norm, T* db, int64_t k, int64_t B, int64_t n, F f,\n"
    "             const T* e_L, const T* Et, T beta, int64_t C) {"
)
TARGET_VALUE = "f(load(hr + c, m))"
DISPLACED_VALUE = "f(displaced(load(hr + c, m), e_L + r * C, Et + j * C * n + c, beta, n, C, m))"
ERRORS_DOC = "// In place on the displaced pre-activations H (k, B, n)"
DISPLACED = """// h - beta d for m values of a row: d = e E_i^T, C multiply-adds per value
// (er: the row of e_L, col: E_i^T (C, n) from the row's position)
template <typename T>
Vec<T> displaced(Vec<T> h, const T* er, const T* col, T beta, int64_t n, int64_t C, int64_t m) {
  for (int64_t q = 0; q < C; ++q) {
    h = at::vec::fmadd(Vec<T>(-beta * er[q]), load(col + q * n, m), h);
  }
  return h;
}

"""
INLINE_TARGETS = """      const at::Tensor E_t = Et.contiguous();
      with_activation<scalar_t>(f, [&](auto act) {
        errors_<scalar_t>(H.data_ptr<scalar_t>(), Z.data_ptr<scalar_t>(),
                          norms.data_ptr<scalar_t>(), db.data_ptr<scalar_t>(), k, B, n, act,
                          e.data_ptr<scalar_t>(), E_t.data_ptr<scalar_t>(),
                          static_cast<scalar_t>(beta), C);
      });
"""


def _inline_displacement(source: str) -> str:
    source = source.replace(DISPLACEMENT, "").replace(TARGETS, INLINE_TARGETS)
    source = source.replace(ERRORS_HEAD, DISPLACED_HEAD).replace(TARGET_VALUE, DISPLACED_VALUE)
    source = source.replace(ERRORS_DOC, DISPLACED + ERRORS_DOC)
    # the build without a vector capability calls errors_ too: give it the new parameters
    return source.replace(
        "Given<scalar_t>{});", "Given<scalar_t>{}, nullptr, nullptr, scalar_t(0), 0);"
    )


def _without_specialization(source: str, head: str) -> str:
    """source without the template specialization that opens with head"""
    start = source.index(head)
    end = source.index("\n};\n", start) + len("\n};\n")
    return source[:start] + source[end:]


def variants() -> dict[str, tuple[str, list[str]]]:
    """name → (source, extra compiler flags)."""
    source = SOURCE.read_text()
    parts = (IN_PASSES, TARGETS, RATIONAL, SEGMENTS, OUTPUT_BLOCK, UPDATES, DISPLACEMENT)
    parts += (ERRORS_HEAD, TARGET_VALUE, ERRORS_DOC, "Given<scalar_t>{});")
    assert all(part in source for part in parts), "the library's step changed: update this"
    _, flags = build_flags()
    return {
        "library": (source, flags),
        "torch-f": (source.replace(IN_PASSES, "constexpr bool kFInPasses = false;"), flags),
        "sleef-tanh": (_without_specialization(source, RATIONAL), flags),
        "layer-split": (source.replace(SEGMENTS, "1"), flags),
        "serial-output-error": (source.replace(OUTPUT_BLOCK, "const int64_t kRows = B;"), flags),
        "serial": (source, [f for f in flags if f != "-fopenmp"]),
        "portable-vec": (source, [f for f in flags if not f.startswith("-DCPU_CAPABILITY")]),
        "parallel-updates": (source.replace(UPDATES, PARALLEL_UPDATES), flags),
        "inline-displacement": (_inline_displacement(source), flags),
    }


def errors_us(call, steps: int = 50) -> float:
    """The errors pass's own µs per call, from the torch profiler."""
    for _ in range(10):
        call()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            call()
    (event,) = [e for e in prof.key_averages() if e.key == "reclra::errors"]
    return event.self_cpu_time_total / steps


def _call(kernel, step, params, x, y):
    """One compiled step by ``step`` with every ``.grad`` reset first, as after ``zero_grad``."""

    def call() -> None:
        for p in params:
            p.grad = None
        kernel._native_step(step, x, y)

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", default="32,50,500")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--variants", help="comma-separated names (default: all)")
    args = parser.parse_args()
    chosen = variants()
    if args.variants:
        names = ["library", *(v for v in args.variants.split(",") if v != "library")]
        unknown = [v for v in names if v not in chosen]
        if unknown:
            parser.error(f"unknown variants {unknown}; known: {', '.join(chosen)}")
        chosen = {name: chosen[name] for name in names}
    torch.set_num_threads(args.threads)
    steps = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (source, flags) in chosen.items():
            path = Path(tmp) / f"{name.replace('-', '_')}.cpp"
            path.write_text(source)
            openmp = [flag for flag in flags if flag == "-fopenmp"]
            module = load(f"reclra_variant_{path.stem}", [str(path)], flags, extra_ldflags=openmp)
            steps[name] = module.step
    print(f"threads {torch.get_num_threads()} · µs per step, median of {args.rounds} rounds")
    heads = [*steps, *(f"{name} / library" for name in steps), *(f"{n} errors pass" for n in steps)]
    print("| batch | " + " | ".join(heads) + " |")
    print("| --- |" + " --- |" * (3 * len(steps)))
    for batch in (int(b) for b in args.batch_size.split(",")):
        torch.manual_seed(0)
        net = build_model("mlp", input_shape=(784,), num_classes=10)
        kernel = build_rule("rec-lra", net).kernel
        params = list(net.parameters())
        x, y = torch.rand(batch, 784), torch.randint(0, 10, (batch,))
        times: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(args.rounds):
            for name, step in steps.items():
                times[name].append(median_us(_call(kernel, step, params, x, y), args.calls, 3))
        medians = [f"{statistics.median(t):.0f}" for t in times.values()]
        ratios = [
            f"{statistics.median(a / b for a, b in zip(t, times['library'], strict=True)):.3f}"
            for t in times.values()
        ]
        loops = [f"{errors_us(_call(kernel, s, params, x, y)):.0f}" for s in steps.values()]
        print(f"| {batch} | " + " | ".join([*medians, *ratios, *loops]) + " |")


if __name__ == "__main__":
    main()
