"""The compiled rec-LRA step: :meth:`DenseSkipKernel.step` as one C++ function (the speed path).

At batch 32–50 a rec-LRA step of the MLP 5×256 spends about a fifth of its time dispatching the
forty small torch operators around its GEMMs from Python (``docs/PERFORMANCE.md``, section 2).
``rec_lra_native.cpp`` is the same step with the GEMMs left to ATen and the small and
elementwise work — the output error, the errors ``z − y`` with their norms and bias sums — as
loops over the stacked buffers, every direction set as ``.grad`` in C++. It is built when the
first rule that can use it is made (not in a timed first step), with
:func:`torch.utils.cpp_extension.load` (a C++ compiler and ninja; about half a minute,
then cached under ``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``); where it
cannot be built, :func:`native_step` warns once and returns ``None`` and the kernel stays in
Python. The two agree to float rounding, which the tests check.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import warnings
from collections.abc import Callable
from pathlib import Path

__all__ = ["SOURCE", "build_flags", "native_step"]

log = logging.getLogger(__name__)

#: the C++ source, shipped with the package
SOURCE = Path(__file__).with_name("rec_lra_native.cpp")


def build_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, list[str]]:
    """The build's name and compiler flags. Where the CPU's features can be read (x86 Linux),
    the build is tuned to them (``-march=native``: the errors loop runs 2× faster with AVX-512,
    ``docs/PERFORMANCE.md``) under a name holding their digest, so that a cache shared by
    different machines never hands one a build for another CPU; elsewhere a generic build."""
    flags = ["-O3", "-fopenmp-simd"]
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        lines = []
    features = next((line for line in lines if line.startswith("flags")), None)
    if features is None:
        return "reclra_native", flags
    digest = hashlib.sha256(features.encode()).hexdigest()[:12]
    return f"reclra_native_{digest}", [*flags, "-march=native"]


@functools.cache
def native_step() -> Callable | None:
    """The compiled step (built once per machine and source), or ``None`` where it cannot be
    built, with a warning naming why."""
    try:
        from torch.utils.cpp_extension import load

        name, flags = build_flags()
        log.info("building the compiled rec-LRA step from %s (once; about 30 s)", SOURCE)
        module = load(name=name, sources=[str(SOURCE)], extra_cflags=flags)
    except Exception as exc:  # no compiler, no ninja, a failed build: the Python kernel runs
        warnings.warn(
            f"the compiled rec-LRA step could not be built ({type(exc).__name__}: {exc}); "
            "the rule runs its Python kernel (rec-lra:native=false silences this)",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return module.step
