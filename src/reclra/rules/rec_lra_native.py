"""The compiled rec-LRA step: :meth:`DenseSkipKernel.step` as one C++ function (the speed path).

At batch 32–50 a rec-LRA step of the MLP 5×256 spends about a fifth of its time dispatching the
forty small torch operators around its GEMMs from Python (``docs/PERFORMANCE.md``, section 2).
``rec_lra_native.cpp`` is the same step with the GEMMs left to ATen and the small and
elementwise work — the output error, the bias and ``f`` after each forward GEMM, the targets'
``f`` with the errors ``z − y``, their norms and bias sums — as loops over the stacked buffers,
every direction set as ``.grad`` in C++. In float32 its ``tanh`` is its own, a rational
approximation at most 6 ulp from the exact value (torch's is within 1;
``experiments/speed/fit_tanh.py`` fits and checks it); builds without an ATen vector
capability give ``f`` to torch's kernels instead (the extension's ``f_in_passes``). It is built
when the first rule that can use it is made (not in a timed first step), with
:func:`torch.utils.cpp_extension.load` (a C++ compiler and ninja; about half a minute,
then cached under ``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``; a build
killed midway does not block the next, :func:`build_lock`); where it cannot be built,
:func:`native_step` warns once and returns ``None`` and the kernel stays in Python. The two agree
to float rounding (float32: within the tolerance of the tests, which check it), and train to
the same accuracy (``docs/PERFORMANCE.md``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

try:
    import fcntl
except ImportError:  # not POSIX: torch's own lock alone
    fcntl = None

__all__ = [
    "SOURCE",
    "build_directory",
    "build_flags",
    "build_lock",
    "native_module",
    "native_step",
    "vec_capability",
]

log = logging.getLogger(__name__)

#: the C++ source, shipped with the package
SOURCE = Path(__file__).with_name("rec_lra_native.cpp")


def build_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, list[str]]:
    """The build's name and compiler flags. Where the CPU's features can be read (x86 Linux),
    the build is tuned to them (``-march=native``: the errors loop runs 2× faster with AVX-512,
    ``docs/PERFORMANCE.md``; and ATen's vectors, ``at::vec``, of the widest instruction set ATen
    itself would pick, :func:`vec_capability`) under a name holding their digest, so that a cache
    shared by different machines never hands one a build for another CPU, and with OpenMP
    (``-fopenmp``, the runtime torch itself uses: without it ``at::parallel_for`` runs on one
    thread); elsewhere a generic build, serial loops, ``at::vec``'s portable vectors."""
    flags = ["-O3", "-fopenmp-simd"]
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        lines = []
    features = next((line for line in lines if line.startswith("flags")), None)
    if features is None:
        return "reclra_native", flags
    digest = hashlib.sha256(features.encode()).hexdigest()[:12]
    native = ["-fopenmp", "-march=native", *vec_capability(set(features.split()))]
    return f"reclra_native_{digest}", [*flags, *native]


def vec_capability(features: set[str]) -> list[str]:
    """The ``at::vec`` instruction set for an x86 CPU with these ``/proc/cpuinfo`` flags, as
    ATen's own dispatch chooses it (AVX-512 where it has F, BW, VL and DQ; else AVX2 with FMA;
    else none: the portable vectors)."""
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= features:
        return ["-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"]
    if {"avx2", "fma"} <= features:
        return ["-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]
    return []


def build_directory(name: str) -> Path:
    """Where a build lives: under ``TORCH_EXTENSIONS_DIR`` (else torch's default cache folder),
    one folder per Python version and build name."""
    from torch.utils.cpp_extension import get_default_build_root

    root = os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()
    return Path(root) / f"py{sys.version_info[0]}{sys.version_info[1]}" / name


@contextlib.contextmanager
def build_lock(directory: Path) -> Iterator[None]:
    """Held while the step is built or loaded: an OS file lock, which the system releases when its
    process ends however it ends. torch's own lock (a ``lock`` file it creates and deletes) is left
    behind by a build that was killed, and makes every later build wait for ever; under this lock
    no live process can hold torch's, so a ``lock`` file found there is stale and removed."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "reclra.lock", "a") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)  # waits while another process builds
        (directory / "lock").unlink(missing_ok=True)
        yield


def native_step() -> Callable | None:
    """The compiled step (built once per machine and source), or ``None`` where it cannot be
    built, with a warning naming why."""
    module = native_module()
    return None if module is None else module.step


def _build(name: str, flags: list[str]) -> ModuleType:
    """Build (or load from the cache) the extension under ``name`` with ``flags``."""
    from torch.utils.cpp_extension import load

    directory = build_directory(name)
    log.info("building the compiled rec-LRA step in %s (once; about 30 s)", directory)
    with build_lock(directory):
        return load(
            name=name,
            sources=[str(SOURCE)],
            extra_cflags=flags,
            extra_ldflags=[flag for flag in flags if flag == "-fopenmp"],
            build_directory=str(directory),
        )


@functools.cache
def native_module() -> ModuleType | None:
    """The compiled extension: ``step``, ``activate_(h, f)`` (``f``, 0 tanh or 1 sigmoid, in place
    as the step computes it), ``loop_threads()`` (the threads its loops run on: torch's thread
    count, 1 in a build without OpenMP), ``openmp`` (whether it was built with it) and
    ``f_in_passes`` (whether its passes compute ``f``, or torch's kernels do); ``None`` where it
    cannot be built. Where the OpenMP build fails (a compiler without
    OpenMP), the same build without it, its loops serial, under a name of its own."""
    name, flags = build_flags()
    try:
        try:
            return _build(name, flags)
        except Exception as exc:
            if "-fopenmp" not in flags:
                raise
            log.info(
                "the OpenMP build failed (%s: %s); building without it", type(exc).__name__, exc
            )
            return _build(f"{name}_serial", [flag for flag in flags if flag != "-fopenmp"])
    except Exception as exc:  # no compiler, no ninja, a failed build: the Python kernel runs
        warnings.warn(
            f"the compiled rec-LRA step could not be built ({type(exc).__name__}: {exc}); "
            "the rule runs its Python kernel (rec-lra:native=false silences this)",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
