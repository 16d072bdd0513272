"""Table of a sweep folder: one row per variant, final test error per seed, median, s/epoch.

python experiments/summarize.py runs/sweep
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def main(folder: str) -> None:
    rows: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    for summary in sorted(Path(folder).glob("*-s*/summary.json")):
        variant, seed = summary.parent.name.rsplit("-s", 1)
        s = json.loads(summary.read_text())
        rows[variant].append((int(seed), s["final"]["test_error"], s["seconds_per_epoch"]))
    print("| variant | test error % per seed | median | s/epoch (median) |")
    print("| --- | --- | --- | --- |")
    for variant, runs in sorted(
        rows.items(), key=lambda kv: statistics.median(r[1] for r in kv[1])
    ):
        runs.sort()
        errors = ", ".join(f"{e:.2f}" for _, e, _ in runs)
        med = statistics.median(e for _, e, _ in runs)
        sec = statistics.median(t for _, _, t in runs)
        print(f"| {variant} | {errors} | {med:.2f} | {sec:.1f} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/sweep")
