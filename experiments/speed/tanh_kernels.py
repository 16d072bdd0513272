"""The ``tanh`` kernels the compiled step could call, timed against torch's (issue 8).

    python experiments/speed/tanh_kernels.py --threads 2 --rounds 9

On the batch-500 stack of the MLP 5×256 (5 × 500 × 256 float32 values), in place, µs per call
(median of ``rounds`` repetitions of 50 calls), interleaved:

- ``torch.tanh``: torch's own CPU kernel, out of place (what the compiled step called before it
  computed ``f`` inside its passes, and what ``rec-lra:native=false`` calls);
- ``the step's tanh``: the compiled step's own float32 ``tanh`` (``rec_lra_native.cpp``, its
  rational approximation, through the built step's ``activate_``), in place;
- ``at::vec``: ATen's vectorized ``Vectorized<float>::tanh`` in a loop of our own, built with
  ``-march=native``, OpenMP and this CPU's ``at::vec`` instruction set — SLEEF's 1-ulp ``tanh``,
  what the step's passes call in float64 (``native_variants.py``, ``sleef-tanh``, in float32 too);
- ``vmsTanh``: MKL's vector ``tanh`` (``VML_HA``, the mode ATen's ``at::vml`` uses), called from
  the extension once per thread's share (only where this torch exports it);
- ``copy``: a plain copy of the same values, the memory traffic alone.

Printed with each kernel's largest difference from ``torch.tanh``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from _timing import median_us
from torch.utils.cpp_extension import load

from reclra.rules.rec_lra_native import native_module, vec_capability

SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

// MKL's VML, exported by torch's MKL builds; null where it is not
extern "C" __attribute__((weak)) void vmsTanh(int n, const float* a, float* r, long long mode);

void vec_tanh_(at::Tensor x) {
  using V = at::vec::Vectorized<float>;
  float* p = x.data_ptr<float>();
  at::parallel_for(0, x.numel(), 2048, [&](int64_t begin, int64_t end) {
    int64_t i = begin;
    for (; i + V::size() <= end; i += V::size()) V::loadu(p + i).tanh().store(p + i);
    if (i < end) V::loadu(p + i, end - i).tanh().store(p + i, end - i);
  });
}

bool has_vml() { return vmsTanh != nullptr; }

void vml_tanh_(at::Tensor x) {
  TORCH_CHECK(has_vml(), "this torch does not export MKL's vmsTanh");
  float* p = x.data_ptr<float>();
  const long long mode = 0x2 | 0x140000 | 0x100;  // VML_HA | VML_FTZDAZ_OFF | VML_ERRMODE_IGNORE
  at::parallel_for(0, x.numel(), 2048, [&](int64_t begin, int64_t end) {
    vmsTanh(static_cast<int>(end - begin), p + begin, p + begin, mode);
  });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("vec_tanh_", &vec_tanh_);
  m.def("has_vml", &has_vml);
  m.def("vml_tanh_", &vml_tanh_);
}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tanh_kernels.cpp"
        path.write_text(SOURCE)
        features = set(Path("/proc/cpuinfo").read_text().split())
        flags = ["-O3", "-fopenmp", "-march=native", *vec_capability(features)]
        ext = load("reclra_tanh_kernels", [str(path)], flags, extra_ldflags=["-fopenmp"])
    torch.manual_seed(0)
    x = torch.randn(5, 500, 256)
    y = torch.empty_like(x)
    exact = torch.tanh(x)

    def in_place(kernel):
        def call() -> None:
            y.copy_(x)
            kernel(y)

        return call

    kernels = {"torch.tanh": lambda: torch.tanh(x, out=y), "at::vec": in_place(ext.vec_tanh_)}
    step = native_module()
    if step is not None:
        kernels["the step's tanh"] = in_place(lambda t: step.activate_(t, 0))
    if ext.has_vml():
        kernels["vmsTanh"] = in_place(ext.vml_tanh_)
    kernels["copy"] = lambda: y.copy_(x)
    times: dict[str, list[float]] = {name: [] for name in kernels}
    for _ in range(args.rounds):
        for name, call in kernels.items():
            times[name].append(median_us(call, 50, 1))
    copy = statistics.median(times["copy"])
    print(f"threads {torch.get_num_threads()} · {x.numel()} float32 values · µs per call, median")
    print("| kernel | µs | µs without the copy | max |difference| from torch.tanh |")
    print("| --- | --- | --- | --- |")
    for name, call in kernels.items():
        call()
        us = statistics.median(times[name])
        net = us - copy if name not in ("torch.tanh", "copy") else us
        diff = (y - exact).abs().max().item() if name != "copy" else float("nan")
        print(f"| {name} | {us:.0f} | {net:.0f} | {diff:.2e} |")


if __name__ == "__main__":
    main()
