"""The compiled step's float32 ``tanh``: its rational approximation fitted, and checked (issue 8).

    python experiments/speed/fit_tanh.py            # fit, print the coefficients
    python experiments/speed/fit_tanh.py --check    # and every float through the built step

``tanh(x) ≈ x P(x²) / Q(x²)`` with ``P`` of degree 6 and ``Q`` of degree 3 (``Q(0) = 1``) on
``|x| ≤ 9.02``, beyond which float32 ``tanh`` rounds to ±1 (the step clamps there). The
coefficients minimise the largest relative error, found as linear programs (SciPy's HiGHS) by
Loeb's iteration: each round fixes the denominator of the last, so that the error becomes linear
in the coefficients, on a grid of 6 400 points in ``s = x² / 9.02²`` (the scaled variable keeps
the programs well conditioned; the error is scaled by 10⁶ so that HiGHS's tolerances do not
bound it). The fit's own error is 7e-9 (0.1 ulp); what remains is float32 rounding in the
evaluation.

``--check`` evaluates the library's build (``rec_lra_native``'s ``activate_``, the step's own
loops) on every non-negative float32 up to 12 (1.09e9 values; the function is odd) against
``torch.tanh`` in float64 rounded to float32, and prints the largest distance in ulps (units in
the last place: steps between neighbouring floats), where it occurs and how often each distance
is seen; also ``torch.tanh`` in float32 (MKL's) against the same reference.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy.optimize import linprog

C = 9.02  # float32 tanh is ±1 beyond
P_DEGREE, Q_DEGREE = 6, 3


def fit(rounds: int = 12) -> tuple[np.ndarray, np.ndarray, float]:
    """P (ascending powers of x²), Q (the same, Q[0] = 1) and the largest relative error."""
    x = np.concatenate([np.linspace(1e-4, C, 6000), np.geomspace(1e-6, 1, 400)])
    s = (x / C) ** 2
    r = np.tanh(x) / x  # P(s) / Q(s) ≈ r
    powers_p = np.stack([s**i for i in range(P_DEGREE + 1)], 1)
    powers_q = np.stack([s**i for i in range(1, Q_DEGREE + 1)], 1)
    q_last = np.ones_like(s)
    best = None
    for _ in range(rounds):
        # |P(s) − r (1 + Σ q_i s^i)| / (r Q_last(s)) ≤ δ, minimise δ
        weight = 1e6 / (r * q_last)
        rows = np.concatenate([powers_p, -r[:, None] * powers_q], 1) * weight[:, None]
        rhs = r * weight
        delta = -np.ones((len(s), 1))
        solution = linprog(
            np.r_[np.zeros(rows.shape[1]), 1.0],
            A_ub=np.block([[rows, delta], [-rows, delta]]),
            b_ub=np.r_[rhs, -rhs],
            bounds=[(None, None)] * (rows.shape[1] + 1),
            method="highs",
        ).x
        p = solution[: P_DEGREE + 1]
        q = np.r_[1.0, solution[P_DEGREE + 1 : -1]]
        q_last = np.polyval(q[::-1], s)
        error = np.max(np.abs(np.polyval(p[::-1], s) / q_last / r - 1))
        if best is None or error < best[2]:
            best = (p, q, error)
    p, q, error = best
    scale = C ** -(2.0 * np.arange(max(P_DEGREE, Q_DEGREE) + 1))  # back to powers of x²
    return p * scale[: P_DEGREE + 1], q * scale[: Q_DEGREE + 1], error


def ulps(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Steps between float32 values of the same sign."""
    return (a.view(torch.int32).long() - b.view(torch.int32).long()).abs()


def check(activate, chunk: int = 1 << 25) -> None:
    end = int(torch.tensor(12.0).view(torch.int32))
    seen = {
        "step": torch.zeros(64, dtype=torch.long),
        "torch.tanh": torch.zeros(64, dtype=torch.long),
    }
    worst = {name: (0, 0.0) for name in seen}
    for start in range(1, end + 1, chunk):
        x = torch.arange(start, min(start + chunk, end + 1), dtype=torch.int32).view(torch.float32)
        exact = torch.tanh(x.double()).float()
        for name, y in (("step", activate(x.clone(), 0)), ("torch.tanh", torch.tanh(x))):
            d = ulps(y, exact)
            seen[name] += torch.bincount(d.clamp(max=63), minlength=64)
            i = int(d.argmax())
            if int(d[i]) > worst[name][0]:
                worst[name] = (int(d[i]), float(x[i]))
    total = end
    for name, counts in seen.items():
        most, where = worst[name]
        shares = ", ".join(f"{k}: {int(c) / total:.2e}" for k, c in enumerate(counts) if c and k)
        print(f"{name}: at most {most} ulp (x = {where:.9g}); share at each distance: {shares}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="every float through the step")
    args = parser.parse_args()
    p, q, error = fit()
    print(f"largest relative error of the fit: {error:.2e}")
    print("P:", ", ".join(f"{float(np.float32(c))!r}f" for c in p))
    print("Q:", ", ".join(f"{float(np.float32(c))!r}f" for c in q))
    if args.check:
        from reclra.rules.rec_lra_native import native_module

        module = native_module()
        if module is None:
            raise SystemExit("the compiled step could not be built here")
        check(module.activate_)


if __name__ == "__main__":
    main()
