"""Variants of the compiled rec-LRA step, timed against the library's (issue 8).

    python experiments/speed/native_variants.py --batch-size 32,50,500 --threads 2 --rounds 9

Each variant is the library's ``src/reclra/rules/rec_lra_native.cpp`` with one change, built
under its own name; every round times the library's build and each variant's on the same
MLP 5×256 (the kernel's ``_native_step``, ``.grad`` reset to ``None`` before each call), then
profiles each once for the errors loop's own time (``reclra::errors``; where the variant has
the one-pass ``reclra::targets_errors``, that pass, which also does the displacement and the
targets' tanh). Printed: the median µs per call, each variant's median ratio to the library's
build, and the errors loop's µs.

- ``mkl-pass``: for tanh layers, the targets and their errors in one pass per block of rows
  small enough to stay in cache (64 KiB): the displacement ``−β E_iᵀ e_L`` as ten multiply-adds
  per value, MKL's ``vmsTanh`` (the function ``torch.tanh`` calls here, with the same mode, so
  the same values) into a block buffer, then the errors, norms and bias sums — instead of the
  library's three passes over the whole stack (the displacement GEMM, torch's ``tanh``, the
  errors loop);
- ``serial``: the library's build without OpenMP (``-fopenmp``), as it was until the errors
  loop was found to run on one thread: ``at::parallel_for`` is inline, and runs its loop serially
  in code compiled without OpenMP;
- ``generic``: the first compiled step, no ``omp simd`` on the errors loop and no
  ``-march=native`` (plain ``-O3``);
- ``no-march``: the library's source without ``-march=native``;
- ``segments``: the errors loop split into four row segments per layer, so
  that two threads get equal shares of five layers;
- ``parallel-updates``: the first layer's update GEMM and the batched update GEMM of the other
  hidden layers run at the same time, one per thread (``at::parallel_for`` over the two: each
  GEMM then runs on one thread), instead of one after the other on both threads.
- ``fused-sleef``: the bias, ``f`` and the errors in fewer passes: the
  forward GEMM without the bias (no copy of it into the output), then one pass adding it and
  applying ``f``; the targets' ``f`` inside the errors loop. ``f`` is ATen's vectorized one
  (``at::vec``, which calls SLEEF's tanh and exp), not torch's ``tanh`` kernel.

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

SIMD_LOOP = """        T sq = 0;
#pragma omp simd reduction(+ : sq)
        for (int64_t c = 0; c < n; ++c) {"""
LOOP = """        T sq = 0;
        for (int64_t c = 0; c < n; ++c) {"""

SEGMENTED = r"""template <typename T>
void errors_(T* Y, const T* Z, T* norm, T* db, int64_t k, int64_t B, int64_t n) {
  const int64_t S = k * B * n < (1 << 16) ? 1 : std::min<int64_t>(B, 4);
  std::vector<T> partial(k * S * n, T(0));
  std::vector<double> total(k * S, 0.0);
  at::parallel_for(0, k * S, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t j = t / S, s = t % S;
      T* __restrict__ sums = partial.data() + t * n;
      for (int64_t r = s * B / S; r < (s + 1) * B / S; ++r) {
        T* __restrict__ yr = Y + (j * B + r) * n;
        const T* __restrict__ zr = Z + (j * B + r) * n;
        T sq = 0;
#pragma omp simd reduction(+ : sq)
        for (int64_t c = 0; c < n; ++c) {
          const T e = zr[c] - yr[c];
          yr[c] = e;
          sums[c] += e;
          sq += e * e;
        }
        total[t] += std::sqrt(static_cast<double>(sq));
      }
    }
  });
  for (int64_t j = 0; j < k; ++j) {
    double sum = 0.0;
    for (int64_t s = 0; s < S; ++s) sum += total[j * S + s];
    norm[j] = static_cast<T>(sum / B);
    for (int64_t c = 0; c < n; ++c) {
      T col = 0;
      for (int64_t s = 0; s < S; ++s) col += partial[(j * S + s) * n + c];
      db[j * n + c] = col / static_cast<T>(B);
    }
  }
}

"""


# ``fused-sleef``: f evaluated inside the loops by ATen's vectorized functions (``at::vec``:
# SLEEF's tanh and exp), so that the bias, f and the errors take one pass each fewer
FUSED_HELPERS = r"""template <typename T>
using Vec = at::vec::Vectorized<T>;

// f on a vector of pre-activations, as ATen's CPU kernels of torch.tanh and torch.sigmoid
template <typename T>
struct Tanh {
  Vec<T> operator()(const Vec<T>& v) const { return v.tanh(); }
};
template <typename T>
struct Sigmoid {
  Vec<T> operator()(const Vec<T>& v) const {
    return ((Vec<T>(T(0)) - v).exp() + Vec<T>(T(1))).reciprocal();
  }
};

// fn(Tanh<T>{}) or fn(Sigmoid<T>{}): the loops are compiled once per activation
template <typename T, typename Fn>
void with_activation(int64_t f, const Fn& fn) {
  if (f == kTanh) {
    fn(Tanh<T>{});
  } else {
    fn(Sigmoid<T>{});
  }
}

// Rows per thread task for a pass over rows of n elements: ATen's grain for elementwise work
int64_t row_grain(int64_t n) { return std::max<int64_t>(1, at::internal::GRAIN_SIZE / n); }

// The forward pass's elementwise half, one pass over the GEMM's output h = W z (B, n): h += b,
// z = f(h).
template <typename T, typename F>
void bias_activate_(T* h, T* z, const T* b, int64_t B, int64_t n, F f) {
  constexpr int64_t V = Vec<T>::size();
  at::parallel_for(0, B, row_grain(n), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      T* hr = h + r * n;
      T* zr = z + r * n;
      int64_t c = 0;
      for (; c + V <= n; c += V) {
        const Vec<T> v = Vec<T>::loadu(hr + c) + Vec<T>::loadu(b + c);
        v.store(hr + c);
        f(v).store(zr + c);
      }
      if (c < n) {
        const int64_t m = n - c;
        const Vec<T> v = Vec<T>::loadu(hr + c, m) + Vec<T>::loadu(b + c, m);
        v.store(hr + c, m);
        f(v).store(zr + c, m);
      }
    }
  });
}

// In place on the displaced pre-activations H (k, B, n): Err = Z - f(H), the targets' f and the
// errors in one pass. norm (k,) receives every layer's mean row norm, db (k, n) every layer's
// batch mean of Err; the layers are split between threads.
template <typename T, typename F>
void errors_fused_(T* H, const T* Z, T* norm, T* db, int64_t k, int64_t B, int64_t n, F f) {
  constexpr int64_t V = Vec<T>::size();
  at::parallel_for(0, k, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> sums(n);
    for (int64_t j = begin; j < end; ++j) {
      std::fill(sums.begin(), sums.end(), T(0));
      double total = 0.0;
      for (int64_t r = 0; r < B; ++r) {
        T* hr = H + (j * B + r) * n;
        const T* zr = Z + (j * B + r) * n;
        Vec<T> sq(T(0));
        int64_t c = 0;
        for (; c + V <= n; c += V) {
          const Vec<T> e = Vec<T>::loadu(zr + c) - f(Vec<T>::loadu(hr + c));
          e.store(hr + c);
          (Vec<T>::loadu(sums.data() + c) + e).store(sums.data() + c);
          sq = at::vec::fmadd(e, e, sq);
        }
        T row = at::vec::vec_reduce_all<T>([](Vec<T>& a, Vec<T>& b) { return a + b; }, sq);
        if (c < n) {  // the tail: one partial vector
          const int64_t m = n - c;
          T e[V];
          (Vec<T>::loadu(zr + c, m) - f(Vec<T>::loadu(hr + c, m))).store(e, m);
          for (int64_t t = 0; t < m; ++t) {
            hr[c + t] = e[t];
            sums[c + t] += e[t];
            row += e[t] * e[t];
          }
        }
        total += std::sqrt(static_cast<double>(row));
      }
      norm[j] = static_cast<T>(total / B);
      for (int64_t c = 0; c < n; ++c) db[j * n + c] = sums[c] / static_cast<T>(B);
    }
  });
}

"""
FORWARD = """    at::addmm_out(Hi, b[i], z, W[i].t());
    activate_out(Zi, Hi, f);
"""
FUSED_FORWARD = """    at::mm_out(Hi, z, W[i].t());
    AT_DISPATCH_FLOATING_TYPES(H.scalar_type(), "rec_lra_forward", [&] {
      const at::Tensor bias = b[i].contiguous();
      with_activation<scalar_t>(f, [&](auto act) {
        bias_activate_<scalar_t>(Hi.data_ptr<scalar_t>(), Zi.data_ptr<scalar_t>(),
                                 bias.data_ptr<scalar_t>(), B, n, act);
      });
    });
"""
TARGETS = """  activate_out(H, H, f);"""
TARGETS += """                                        // y_i = f(h_i - beta d_i)
  AT_DISPATCH_FLOATING_TYPES(H.scalar_type(), "rec_lra_errors", [&] {
    RECORD_FUNCTION("reclra::errors", std::vector<c10::IValue>());
    errors_<scalar_t>(H.data_ptr<scalar_t>(), Z.data_ptr<scalar_t>(),
                      norms.data_ptr<scalar_t>(), db.data_ptr<scalar_t>(), k, B, n);
  });
"""
FUSED_TARGETS = """  AT_DISPATCH_FLOATING_TYPES(H.scalar_type(), "rec_lra_errors", [&] {
    RECORD_FUNCTION("reclra::errors", std::vector<c10::IValue>());
    with_activation<scalar_t>(f, [&](auto act) {  // z_i - y_i, y_i = f(h_i - beta d_i)
      errors_fused_<scalar_t>(H.data_ptr<scalar_t>(), Z.data_ptr<scalar_t>(),
                              norms.data_ptr<scalar_t>(), db.data_ptr<scalar_t>(), k, B, n, act);
    });
  });
"""


VEC_INCLUDES = "#include <ATen/cpu/vec/functional.h>\n#include <ATen/cpu/vec/vec.h>\n"

# ``mkl-pass``: the targets and errors of tanh layers in one pass per block of rows
# (targets_errors_): the displacement as C multiply-adds per value, MKL's tanh (vmsTanh, which
# torch.tanh calls, with its mode) into a block buffer, the errors; three passes over the stack
# (displacement GEMM, torch's tanh, errors loop) become one
MKL_HELPERS = r"""
// MKL's vector tanh, which torch.tanh calls on CPU (ATen's at::vml, with this mode:
// VML_HA | VML_FTZDAZ_OFF | VML_ERRMODE_IGNORE), so the fused pass computes torch's values.
// torch's MKL builds export it (LP64: an int count); weak, so null where this torch has no MKL,
// and the step then takes its three passes.
extern "C" {
__attribute__((weak)) void vmsTanh(int n, const float* a, float* r, long long mode);
__attribute__((weak)) void vmdTanh(int n, const double* a, double* r, long long mode);
}
constexpr long long kVmlMode = 0x2 | 0x140000 | 0x100;

template <typename T>
struct MklTanh;
template <>
struct MklTanh<float> {
  static bool available() { return vmsTanh != nullptr; }
  static void apply(int64_t m, const float* a, float* r) {
    vmsTanh(static_cast<int>(m), a, r, kVmlMode);
  }
};
template <>
struct MklTanh<double> {
  static bool available() { return vmdTanh != nullptr; }
  static void apply(int64_t m, const double* a, double* r) {
    vmdTanh(static_cast<int>(m), a, r, kVmlMode);
  }
};

// The targets and their errors in one pass, for tanh layers (MklTanh available): the rows of H
// (k, B, n, holding h_i) are taken in blocks of one layer's rows small enough to stay in cache,
// and for each block h - beta d (d = e_L E_i^T row by row: C multiply-adds per value), y =
// tanh of that (MKL, into a block buffer), Err = Z - y into H, every row's norm and the bias
// sums. e (B, C) and Et (k, C, n) contiguous; norm (k,) and db (k, n) as errors_ gives them.
template <typename T>
void targets_errors_(T* H, const T* Z, const T* e, const T* Et, T beta, T* norm, T* db, int64_t k,
                     int64_t B, int64_t n, int64_t C) {
  const int64_t block = std::max<int64_t>(1, 16384 / n);  // rows: 64 KiB of floats
  const int64_t slots = at::get_num_threads();
  std::vector<T> sums(slots * k * n, T(0));  // per thread, summed below
  std::vector<double> totals(slots * k, 0.0);
  at::parallel_for(0, k * B, block, [&](int64_t begin, int64_t end) {
    T* my_sums = sums.data() + at::get_thread_num() * k * n;
    double* my_totals = totals.data() + at::get_thread_num() * k;
    std::vector<T> y(block * n);
    for (int64_t r0 = begin; r0 < end;) {
      const int64_t j = r0 / B;
      const int64_t r1 = std::min({end, r0 + block, (j + 1) * B});
      for (int64_t r = r0; r < r1; ++r) {  // h_i - beta d_i, in place
        T* hr = H + r * n;
        const T* er = e + (r - j * B) * C;
        for (int64_t c = 0; c < C; ++c) {
          const T a = -beta * er[c];
          const T* w = Et + (j * C + c) * n;
#pragma omp simd
          for (int64_t q = 0; q < n; ++q) hr[q] += a * w[q];
        }
      }
      MklTanh<T>::apply((r1 - r0) * n, H + r0 * n, y.data());  // y_i = tanh(h_i - beta d_i)
      T* s = my_sums + j * n;
      for (int64_t r = r0; r < r1; ++r) {  // Err = z - y
        T* hr = H + r * n;
        const T* zr = Z + r * n;
        const T* yr = y.data() + (r - r0) * n;
        T sq = 0;
#pragma omp simd reduction(+ : sq)
        for (int64_t q = 0; q < n; ++q) {
          const T err = zr[q] - yr[q];
          hr[q] = err;
          s[q] += err;
          sq += err * err;
        }
        my_totals[j] += std::sqrt(static_cast<double>(sq));
      }
      r0 = r1;
    }
  });
  for (int64_t j = 0; j < k; ++j) {
    double total = 0.0;
    for (int64_t t = 0; t < slots; ++t) total += totals[t * k + j];
    norm[j] = static_cast<T>(total / B);
    for (int64_t q = 0; q < n; ++q) {
      T col = 0;
      for (int64_t t = 0; t < slots; ++t) col += sums[(t * k + j) * n + q];
      db[j * n + q] = col / static_cast<T>(B);
    }
  }
}

"""
MKL_TARGETS = r"""  AT_DISPATCH_FLOATING_TYPES(H.scalar_type(), "rec_lra_errors", [&] {
    if (f == kTanh && MklTanh<scalar_t>::available()) {  // one pass
      RECORD_FUNCTION("reclra::targets_errors", std::vector<c10::IValue>());
      const at::Tensor E_t = Et.contiguous();
      targets_errors_<scalar_t>(H.data_ptr<scalar_t>(), Z.data_ptr<scalar_t>(),
                                e.data_ptr<scalar_t>(), E_t.data_ptr<scalar_t>(),
                                static_cast<scalar_t>(beta), norms.data_ptr<scalar_t>(),
                                db.data_ptr<scalar_t>(), k, B, n, C);
      return;
    }
    at::baddbmm_out(H, H, e.expand({k, B, C}), Et, 1.0, -beta);  // h_i - beta d_i
    activate_out(H, H, f);                                        // y_i = f(h_i - beta d_i)
    RECORD_FUNCTION("reclra::errors", std::vector<c10::IValue>());
    errors_<scalar_t>(H.data_ptr<scalar_t>(), Z.data_ptr<scalar_t>(),
                      norms.data_ptr<scalar_t>(), db.data_ptr<scalar_t>(), k, B, n);
  });
"""


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
          at::addmm_out(dW0, dW0, H.select(0, 0).t(), x, 0.0, inv);
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


def _segmented(source: str) -> str:
    start = source.index("template <typename T>\nvoid errors_")
    end = source.index("}  // namespace")
    return source[:start] + SEGMENTED + source[end:]


def _fused(source: str) -> str:
    source = source.replace(FORWARD, FUSED_FORWARD).replace(TARGETS, FUSED_TARGETS)
    source = source.replace(
        "#include <ATen/record_function.h>\n", VEC_INCLUDES + "#include <ATen/record_function.h>\n"
    )
    end = source.index("}  // namespace")
    return source[:end] + FUSED_HELPERS + source[end:]


def vec_capability() -> list[str]:
    """The ``at::vec`` instruction set of this CPU, as ATen chooses its own."""
    features = set(Path("/proc/cpuinfo").read_text().split())
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= features:
        return ["-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"]
    if {"avx2", "fma"} <= features:
        return ["-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]
    return []


def _mkl_pass(source: str) -> str:
    start = source.index("  at::baddbmm_out(H, H, e.expand")
    end = source.index("  int64_t active = k;")
    source = source[:start] + MKL_TARGETS + source[end:]
    end = source.index("}  // namespace")
    return source[:end] + MKL_HELPERS + source[end:]


def variants() -> dict[str, tuple[str, list[str]]]:
    """name → (source, extra compiler flags)."""
    source = SOURCE.read_text()
    parts = (SIMD_LOOP, UPDATES, FORWARD, TARGETS)
    assert all(part in source for part in parts), "the library's step changed: update this"
    _, flags = build_flags()
    generic = [f for f in flags if f not in ("-march=native", "-fopenmp-simd", "-fopenmp")]
    return {
        "library": (source, flags),
        "mkl-pass": (_mkl_pass(source), flags),
        "serial": (source, [f for f in flags if f != "-fopenmp"]),
        "generic": (source.replace(SIMD_LOOP, LOOP), generic),
        "no-march": (source, [f for f in flags if f != "-march=native"]),
        "segments": (_segmented(source), flags),
        "parallel-updates": (source.replace(UPDATES, PARALLEL_UPDATES), flags),
        "fused-sleef": (_fused(source), [*flags, *vec_capability()]),
    }


def errors_us(call, steps: int = 50) -> float:
    """The errors loop's own µs per call, from the torch profiler."""
    for _ in range(10):
        call()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            call()
    loops = ("reclra::errors", "reclra::targets_errors")
    (event,) = [e for e in prof.key_averages() if e.key in loops]
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
    heads = [*steps, *(f"{name} / library" for name in steps), *(f"{n} errors loop" for n in steps)]
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
