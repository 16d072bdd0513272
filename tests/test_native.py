"""The compiled rec-LRA step: built where a C++ compiler is, the Python kernel's maths, and
direction buffers reused only where nothing can see them change."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from reclra.models import MLP
from reclra.rules import RecLRA, rec_lra_dense, rec_lra_native

COMPILER = shutil.which(os.environ.get("CXX", "c++"))
needs_compiler = pytest.mark.skipif(COMPILER is None, reason="no C++ compiler on this machine")


def _rules(sizes=(9, 6, 6, 6, 4), activation="tanh", dtype=torch.float64, **options):
    """(compiled, Python kernel) on copies of one net."""
    out = []
    for native in (True, False):
        torch.manual_seed(0)
        net = MLP(list(sizes), activation, init_std=0.3).to(dtype)
        out.append(RecLRA(net, native=native, **options).to(dtype))
    return out


def _grads(rule):
    return {n: p.grad.clone() for n, p in rule.named_parameters() if p.grad is not None}


def _batch(n=13, d=9, classes=4, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype), torch.randint(0, classes, (n,), generator=g)


@needs_compiler
def test_it_builds_where_a_compiler_is():
    assert rec_lra_native.native_step() is not None


@needs_compiler
def test_its_loops_run_on_torchs_threads():
    """Built with OpenMP, at::parallel_for spreads the step's loops over torch's threads (without
    it, the inline at::parallel_for runs them on one); the generic build stays serial."""
    module = rec_lra_native.native_module()
    name, flags = rec_lra_native.build_flags()
    assert module.openmp == (module.__name__ == name and "-fopenmp" in flags)
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            assert module.loop_threads() == (n if module.openmp else 1)
    finally:
        torch.set_num_threads(threads)


def _activate(h, f):
    return rec_lra_native.native_module().activate_(h.clone(), f)


def _ulps(a, b):
    """Steps between float32 values of the same sign."""
    return (a.view(torch.int32).long() - b.view(torch.int32).long()).abs()


@needs_compiler
def test_its_float32_tanh_is_within_6_ulp():
    """The step's own float32 tanh (a rational approximation, ``fit_tanh.py``, which checks every
    float) against float64 tanh rounded, on every 97th float up to 12 and their negatives."""
    activate = _activate
    end = int(torch.tensor(12.0).view(torch.int32))
    x = torch.arange(1, end, 97, dtype=torch.int32).view(torch.float32)
    exact = torch.tanh(x.double()).float()
    d = _ulps(activate(x, 0), exact)
    assert d.max() <= 6 and (d == 0).float().mean() > 0.9
    assert torch.equal(activate(-x, 0), -activate(x, 0))  # odd
    special = torch.tensor([0.0, 9.02, 9.5, 1e30, float("inf"), -float("inf"), float("nan")])
    y = activate(special, 0)
    assert y[:6].tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, -1.0] and y[6].isnan()
    for shape in [(3, 5), (7, 33), (0,)]:  # rows with tails, and nothing
        h = torch.randn(shape)
        torch.testing.assert_close(activate(h, 0), torch.tanh(h), rtol=1e-6, atol=4e-7)


@needs_compiler
def test_its_other_fs_are_torchs_to_rounding():
    activate = _activate
    h = torch.randn(1000, 37, dtype=torch.float64) * 4
    torch.testing.assert_close(activate(h, 0), torch.tanh(h), rtol=4e-16, atol=0)  # SLEEF's
    for dtype in (torch.float32, torch.float64):
        torch.testing.assert_close(activate(h.to(dtype), 1), torch.sigmoid(h.to(dtype)))
    with pytest.raises(RuntimeError, match=r"f is 0 \(tanh\) or 1 \(sigmoid\), not 2"):
        activate(h, 2)
    with pytest.raises(RuntimeError, match="must be contiguous"):
        rec_lra_native.native_module().activate_(h.t(), 0)


def test_a_compiler_without_openmp_gets_the_serial_build(monkeypatch, tmp_path):
    """The OpenMP build failing (a compiler without it), the step is built without OpenMP under a
    name of its own, rather than not at all."""
    import torch.utils.cpp_extension as cpp

    calls = []

    def load(name, extra_cflags, extra_ldflags, **_):
        calls.append((name, extra_cflags, extra_ldflags))
        if "-fopenmp" in extra_cflags:
            raise RuntimeError("omp.h: No such file or directory")
        return SimpleNamespace(step=lambda *a: None)

    monkeypatch.setattr(cpp, "load", load)
    monkeypatch.setattr(
        rec_lra_native, "build_flags", lambda: ("reclra_native_x", ["-O3", "-fopenmp"])
    )
    monkeypatch.setattr(rec_lra_native, "build_directory", lambda name: tmp_path / name)
    rec_lra_native.native_module.cache_clear()
    try:
        assert rec_lra_native.native_step() is not None
    finally:
        rec_lra_native.native_module.cache_clear()
    assert [c[0] for c in calls] == ["reclra_native_x", "reclra_native_x_serial"]
    assert calls[1][1:] == (["-O3"], [])


@pytest.fixture(scope="module")
def generic_build():
    """The library's step built as where the CPU's features cannot be read (no -march=native, no
    ATen vector capability): f by torch's kernels, the passes only the errors."""
    name, flags = rec_lra_native.build_flags(Path("/nonexistent"))
    return rec_lra_native._build(f"{name}_generic_test", flags)


@needs_compiler
def test_the_generic_build_gives_f_to_torchs_kernels(generic_build):
    assert not generic_build.f_in_passes and rec_lra_native.native_module().f_in_passes == (
        "-DCPU_CAPABILITY=AVX512" in rec_lra_native.build_flags()[1]
        or "-DCPU_CAPABILITY=AVX2" in rec_lra_native.build_flags()[1]
    )
    h = torch.randn(7, 33) * 5
    for f, exact in ((0, torch.tanh), (1, torch.sigmoid)):
        assert torch.equal(generic_build.activate_(h.clone(), f), exact(h))


@needs_compiler
@pytest.mark.parametrize("build", ["tuned", "generic"])
@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_compiled_step_is_the_python_kernel(activation, dtype, build, monkeypatch, request):
    if build == "generic":
        monkeypatch.setattr(rec_lra_dense, "native_step", lambda: generic.step)
        generic = request.getfixturevalue("generic_build")
    native, python = _rules(activation=activation, dtype=dtype, beta=0.3)
    assert native.kernel.native and not python.kernel.native
    calls = []
    step = native.kernel._native_step
    monkeypatch.setattr(native.kernel, "_native_step", lambda *a: calls.append(1) or step(*a))
    x, y = _batch(dtype=dtype)
    s1, s2 = native.compute_grads(x, y), python.compute_grads(x, y)
    assert calls == [1]  # the compiled step ran
    g1, g2 = _grads(native), _grads(python)
    assert g1.keys() == g2.keys() and len(g1) == 8
    tol = {"rtol": 1e-12, "atol": 1e-14} if dtype == torch.float64 else {}
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], **tol, msg=name)
    torch.testing.assert_close(s1.loss, s2.loss, **tol)
    assert s1.error_norms.keys() == s2.error_norms.keys() == {1, 2, 3, 4}
    for ell in s1.error_norms:
        torch.testing.assert_close(s1.error_norms[ell], s2.error_norms[ell], **tol)
    assert s1.depth == s2.depth == 1.0


@needs_compiler
def test_the_compiled_step_gives_the_hand_computed_update():
    """One hidden layer, by hand: e_L = softmax(h_L) − onehot(y), y_1 = tanh(h_1 − β E e_L),
    e_1 = z_1 − y_1, ΔW_1 = e_1ᵀ x / B, ΔW_2 = e_Lᵀ z_1 / B, biases the batch means."""
    (rule, _) = _rules(sizes=(3, 4, 2), beta=0.5)
    x, y = _batch(n=5, d=3, classes=2)
    rule.compute_grads(x, y)
    W1, b1 = rule.net.layer(1).op.weight, rule.net.layer(1).op.bias
    W2, b2 = rule.net.layer(2).op.weight, rule.net.layer(2).op.bias
    with torch.no_grad():
        h1 = x @ W1.T + b1
        z1 = torch.tanh(h1)
        hL = z1 @ W2.T + b2
        e_L = torch.softmax(hL, 1) - torch.nn.functional.one_hot(y, 2).double()
        e_1 = z1 - torch.tanh(h1 - 0.5 * e_L @ rule.E["2->1"].T)
    torch.testing.assert_close(W1.grad, e_1.T @ x / 5)
    torch.testing.assert_close(b1.grad, e_1.mean(0))
    torch.testing.assert_close(W2.grad, e_L.T @ z1 / 5)
    torch.testing.assert_close(b2.grad, e_L.mean(0))


@needs_compiler
def test_direction_buffers_are_reused_only_where_nothing_holds_them():
    native, python = _rules()
    x, y = _batch()
    params = list(native.parameters())

    def both_steps(*, set_to_none=True):
        for rule in (native, python):
            rule.zero_grad(set_to_none=set_to_none)
            rule.compute_grads(x, y)

    both_steps()
    first = [p.grad.data_ptr() for p in params]
    both_steps()  # the last step's .grad were dropped: their memory is written again
    assert [p.grad.data_ptr() for p in params] == first
    held = [p.grad for p in params]
    kept = [g.clone() for g in held]
    both_steps()  # someone holds the last .grad tensors: they are not touched
    for g, k in zip(held, kept, strict=True):
        assert torch.equal(g, k)
    assert all(p.grad.data_ptr() != ptr for p, ptr in zip(params, first, strict=True))
    both_steps(set_to_none=False)  # zeroed in place, then added to, as autograd would
    for rule in (native, python):
        rule.compute_grads(x, y)  # no zero_grad: accumulates
    for p, q, k in zip(params, python.parameters(), kept, strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(p.grad, 2 * k, rtol=1e-12, atol=1e-14)


@needs_compiler
def test_a_bad_label_is_refused_before_any_grad_is_set():
    native, _ = _rules()
    x, y = _batch()
    y[3] = 4
    with pytest.raises(RuntimeError, match="label 4 out of range for 4 classes"):
        native.compute_grads(x, y)
    assert all(p.grad is None for p in native.parameters())


def test_where_it_does_not_apply_the_python_kernel_runs(monkeypatch):
    mlp = MLP([9, 6, 6, 4], "relu")
    assert not RecLRA(mlp).kernel.native  # no compiled form of relu
    assert not RecLRA(mlp, error_rule="paper").kernel.native  # learnable synapses
    assert not RecLRA(MLP([9, 6, 6, 4], "tanh"), native=False).kernel.native
    monkeypatch.setattr(rec_lra_dense, "native_step", lambda: None)  # could not be built
    native, python = _rules()
    assert not native.kernel.native
    x, y = _batch()
    native.compute_grads(x, y), python.compute_grads(x, y)
    assert all(t.numel() == 0 for t in native.kernel._pool)  # never called
    for p, q in zip(native.parameters(), python.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad)


def test_a_failed_build_warns_and_leaves_the_python_kernel(monkeypatch):
    import torch.utils.cpp_extension as cpp

    def no_compiler(**_):
        raise RuntimeError("no compiler found")

    monkeypatch.setattr(cpp, "load", no_compiler)
    rec_lra_native.native_module.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="could not be built .*no compiler found"):
            assert rec_lra_native.native_step() is None
    finally:
        rec_lra_native.native_module.cache_clear()


def test_the_build_is_tuned_to_the_cpu_under_a_name_of_its_own(tmp_path):
    def flags_of(text):
        path = tmp_path / "cpuinfo"
        path.write_text(text)
        return rec_lra_native.build_flags(path)

    name, flags = flags_of("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    assert "-march=native" in flags and name.startswith("reclra_native_")
    other, _ = flags_of("processor\t: 0\nflags\t\t: fpu sse2 avx2\n")
    assert other != name  # another CPU never loads this build
    assert flags_of("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")[0] == name
    assert "-fopenmp" in flags  # at::parallel_for on torch's threads
    assert "-DCPU_CAPABILITY=AVX512" not in flags  # avx512f alone: not ATen's AVX-512 set
    assert "-DCPU_CAPABILITY=AVX2" in flags_of("flags\t\t: avx2 fma\n")[1]
    avx512 = "flags\t\t: avx2 fma avx512f avx512bw avx512vl avx512dq\n"
    assert "-DCPU_CAPABILITY=AVX512" in flags_of(avx512)[1]
    generic = ("reclra_native", ["-O3", "-fopenmp-simd"])
    assert flags_of("processor\t: 0\nFeatures\t: fp asimd\n") == generic  # no x86 flags line
    assert rec_lra_native.build_flags(tmp_path / "missing") == generic


@needs_compiler
def test_a_build_killed_midway_does_not_block_the_next():
    """torch's lock file, left by a build killed before it could delete it, would make every
    later process wait for ever; under the build lock it is known stale and removed."""
    name, _ = rec_lra_native.build_flags()
    directory = rec_lra_native.build_directory(name)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "lock").touch()  # what a killed build leaves
    code = "from reclra.rules.rec_lra_native import native_step; assert native_step() is not None"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    assert not (directory / "lock").exists()
