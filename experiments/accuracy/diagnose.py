"""Per-layer diagnostics over training (issue 7, "Diagnose"): how far each layer's rec-LRA
direction is from backprop's gradient, and what its teaching signal looks like.

    RECLRA_DATA=… python experiments/accuracy/diagnose.py --model resnet18 --set model.width=8 \
        --rule rec-lra --set rule.pathway=blocks --limit-train 5000 --epochs 1 --out runs/diag

Trains with the library's loop pieces (Adam, batch 50) and every ``--every`` steps calls
:func:`reclra.diagnostics.diagnose` on the current batch: per layer the error norm, the norms of
the rule's direction and of backprop's gradient at the same weights, the angle between them and
the effective rank of the error neurons and of the targets. Writes ``OUT/diagnostics.json`` and
``OUT/angles.png`` (angle per layer over training) and prints the first and last measurement.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from reclra.config import Config, apply_overrides
from reclra.data import iterate_minibatches, load_dataset
from reclra.diagnostics import diagnose
from reclra.models import build_model
from reclra.rules import build_rule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--rule", default="rec-lra")
    parser.add_argument("--set", action="append", default=[], help="model.KEY=V or rule.KEY=V")
    parser.add_argument("--limit-train", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/diag"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = apply_overrides(Config(model={"name": args.model}, rule={"name": args.rule}), args.set)
    data = load_dataset("fashion-mnist", seed=args.seed, limit_train=args.limit_train)
    net = build_model(
        args.model, input_shape=data.input_shape, num_classes=data.num_classes,
        **cfg.options("model"),
    )  # fmt: skip
    rule = build_rule(args.rule, net, **cfg.options("rule"))
    opt = torch.optim.Adam(rule.parameters(), lr=args.lr, fused=True)
    gen = torch.Generator().manual_seed(args.seed)
    records, step = [], 0
    for _ in range(args.epochs):
        for x, y in iterate_minibatches(data.train, 50, shuffle=True, generator=gen):
            if step % args.every == 0:
                rows = [r.as_dict() for r in diagnose(rule, x, y)]
                records.append({"step": step, "layers": rows})
            opt.zero_grad(set_to_none=True)
            rule.compute_grads(x, y)
            opt.step()
            step += 1
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"model": cfg.model, "rule": cfg.rule, "lr": args.lr, "limit_train": args.limit_train}
    (args.out / "diagnostics.json").write_text(
        json.dumps({"config": meta, "records": records}, indent=1), encoding="utf-8"
    )
    _plot(records, args.out / "angles.png", f"{args.rule} {cfg.options('rule')} · {args.model}")
    for label, rec in (("first", records[0]), ("last", records[-1])):
        print(f"{label} (step {rec['step']}):")
        print("| layer | angle ° | error norm | ‖direction‖ | ‖gradient‖ | rank(e) | rank(y) |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for r in rec["layers"]:
            print(
                f"| {r['layer']} | {r['angle']:.1f} | {r['error_norm']:.3g} | "
                f"{r['update_norm']:.3g} | {r['gradient_norm']:.3g} | {r['error_rank']:.1f} | "
                f"{r['target_rank']:.1f} |"
            )


def _plot(records: list[dict], path: Path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    steps = [r["step"] for r in records]
    layers = [row["layer"] for row in records[0]["layers"]]
    for k, ell in enumerate(layers):
        ax.plot(steps, [r["layers"][k]["angle"] for r in records], label=str(ell), lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("angle to backprop's gradient (°)")
    ax.set_ylim(0, 120)
    ax.set_title(title, fontsize=9)
    ax.legend(title="layer", fontsize=6, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
