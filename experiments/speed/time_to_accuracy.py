"""Wall-clock to a test accuracy, per run of a sweep (issue 8's time-to-accuracy table).

    python experiments/speed/time_to_accuracy.py runs/tta --target 88

For every run folder below the given root (each holds config.yaml and metrics.jsonl), prints the
first epoch whose test accuracy reaches the target and the training seconds spent until then
(the sum of the epochs' ``seconds``: training steps only, evaluation excluded — it is the same
for every rule), with the best test accuracy and the median seconds per epoch. Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import yaml


def runs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("metrics.jsonl"))


def row(run: Path, target: float) -> dict:
    cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    epochs = [json.loads(line) for line in lines if line.strip()]
    elapsed, reached = 0.0, None
    for m in epochs:
        elapsed += m["seconds"]
        if reached is None and m.get("test_error") is not None and 100 - m["test_error"] >= target:
            reached = (m["epoch"], elapsed)
    best = min(m["test_error"] for m in epochs if m.get("test_error") is not None)
    return {
        "run": str(run.relative_to(run.parents[1])),
        "rule": cfg["rule"]["name"],
        "lr": cfg["optim"]["lr"],
        "epochs": len(epochs),
        "epoch_at_target": reached[0] if reached else None,
        "seconds_to_target": reached[1] if reached else None,
        "best_test_accuracy": 100 - best,
        "median_s_per_epoch": statistics.median(m["seconds"] for m in epochs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--target", type=float, default=88.0, help="test accuracy in %% (88)")
    args = parser.parse_args(argv)
    found = runs(args.root)
    if not found:
        print(f"no run folders below {args.root}", file=sys.stderr)
        return 2
    rows = sorted((row(r, args.target) for r in found), key=lambda r: (r["rule"], r["lr"]))
    print(
        f"| run | rule | lr | epochs run | epoch at {args.target:g} % | train s to "
        f"{args.target:g} % | best test acc % | median s/epoch |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        at = "—" if r["epoch_at_target"] is None else str(r["epoch_at_target"])
        sec = "not reached" if r["seconds_to_target"] is None else f"{r['seconds_to_target']:.1f}"
        print(
            f"| {r['run']} | {r['rule']} | {r['lr']:g} | {r['epochs']} | {at} | {sec} | "
            f"{r['best_test_accuracy']:.2f} | {r['median_s_per_epoch']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
