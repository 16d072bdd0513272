"""The ``reclra`` command line: ``train``, ``eval``, ``list``, ``compare`` and ``bench``.

Configs are layered as defaults < ``--config FILE.yaml`` < explicit flags (``--rule``,
``--epochs``, …) < ``--set section.key=value`` (repeatable). Bad input (unknown names, malformed
overrides, missing or corrupt files, shapes that do not fit) is reported as one line
``reclra: error: …`` on stderr with exit code 2; Ctrl-C exits with 130 after saying how to resume.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from reclra.activations import activation_names
from reclra.analysis import plot_comparison
from reclra.bench import OPTIMIZERS, benchmark_rules, matmul_peak, parse_rule_list
from reclra.config import (
    Config,
    ConfigError,
    apply_overrides,
    load_config,
    merge_config,
    parse_override,
)
from reclra.data import DatasetNotFound, dataset_names
from reclra.models import MODELS
from reclra.rules import RULES
from reclra.train import (
    CONFIG,
    Trainer,
    TrainingInterrupted,
    evaluate_checkpoint,
    select_device,
)

__all__ = ["build_parser", "main"]

PROG = "reclra"

#: Explicit flags and the config keys they set (argparse ``dest`` → (section, key)).
FLAG_KEYS: dict[str, tuple[str, str]] = {
    "rule": ("rule", "name"),
    "model": ("model", "name"),
    "dataset": ("data", "dataset"),
    "data_dir": ("data", "data_dir"),
    "limit_train": ("data", "limit_train"),
    "batch_size": ("data", "batch_size"),
    "epochs": ("train", "epochs"),
    "lr": ("optim", "lr"),
    "seed": ("train", "seed"),
    "device": ("train", "device"),
}

#: Builder arguments the trainer supplies itself (not user options).
_INJECTED = {"net", "input_shape", "num_classes"}

#: Epochs of each ``compare`` run unless ``--epochs`` or ``--config`` says otherwise.
COMPARE_EPOCHS = 1

#: Dataset used by ``compare`` when the requested one cannot be found or downloaded.
FALLBACK_DATASET = "digits"
#: The fallback set has 1,437 training images (40× fewer than Fashion-MNIST), so a fallback run
#: trains at least this many epochs (about 3 s per rule on 2 CPU cores).
FALLBACK_MIN_EPOCHS = 30


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def _one_line(message: str) -> str:
    """A multi-line message folded into one line."""
    out = ""
    for line in (part.strip() for part in message.splitlines()):
        if line:
            out += ("" if not out else " " if out.endswith(":") else "; ") + line
    return out


def _error(message: str) -> None:
    print(f"{PROG}: error: {_one_line(message)}", file=sys.stderr)


def _note(message: str) -> None:
    print(f"{PROG}: {_one_line(message)}", file=sys.stderr)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}%"


def _print_epoch(record: dict[str, Any], epochs: int) -> None:
    width = len(str(epochs))
    print(
        f"epoch {record['epoch']:>{width}}/{epochs}  loss {record['loss']:.4f}  "
        f"train {_pct(record['train_error'])}  val {_pct(record['val_error'])}  "
        f"test {_pct(record['test_error'])}  {record['seconds']:.1f} s",
        flush=True,
    )


def _print_summary(summary: dict[str, Any]) -> None:
    final, best = summary["final"], summary["best"]
    macro = summary["test_report"]["macro"]
    top5 = final.get("test_top5_error")
    top5_text = f" (top-5 {_pct(top5)})" if top5 is not None else ""
    print(
        f"done: {summary['epochs']} epochs, {summary['seconds_per_epoch']:.2f} s/epoch "
        f"(median) on {summary['device']}"
    )
    print(
        f"final error: train {_pct(final['train_error'])}, val {_pct(final['val_error'])}, "
        f"test {_pct(final['test_error'])}{top5_text}"
    )
    print(
        f"best {best['by'].replace('_', ' ')} {_pct(best[best['by']])} at epoch {best['epoch']} "
        f"(test {_pct(best['test_error'])})"
    )
    print(
        f"test macro precision {macro['precision']:.4f}  recall {macro['recall']:.4f}  "
        f"F1 {macro['f1']:.4f}"
    )
    print(f"outputs in {summary['out_dir']}")


def _print_eval(result: dict[str, Any]) -> None:
    macro = result["test_report"]["macro"]
    print(f"checkpoint {result['checkpoint']} on {result['dataset']} ({result['source']})")
    for split in ("val", "test"):
        top5 = result.get(f"{split}_top5_error")
        extra = f"  top-5 {_pct(top5)}" if top5 is not None else ""
        print(f"{split:<5} error {_pct(result[f'{split}_error'])}{extra}")
    print(
        f"test macro precision {macro['precision']:.4f}  recall {macro['recall']:.4f}  "
        f"F1 {macro['f1']:.4f}"
    )


def _format_options(options: dict[str, Any]) -> str:
    shown = [
        f"{k}={'<required>' if v is inspect.Parameter.empty else repr(v)}"
        for k, v in options.items()
        if k not in _INJECTED
    ]
    return " ".join(shown) if shown else "(no options)"


def _print_registry(title: str, registry: Any) -> None:
    print(f"{title}:")
    for name in registry.names():
        print(f"  {name}: {_format_options(registry.options(name))}")


def _print_list() -> None:
    _print_registry("rules", RULES)
    _print_registry("models", MODELS)
    print(f"datasets: {', '.join(dataset_names())}")
    print(f"activations: {', '.join(activation_names())}")


def _print_table(rows: list[dict[str, Any]]) -> None:
    header = ["rule", "test err %", "val err %", "s/epoch", "params (model + synapses)"]
    lines = [
        [
            r["rule"],
            "-" if r["test_error"] is None else f"{r['test_error']:.2f}",
            "-" if r["val_error"] is None else f"{r['val_error']:.2f}",
            f"{r['seconds_per_epoch']:.2f}",
            f"{r['parameters']['model']:,} + {r['parameters']['learnable_synapses']:,}",
        ]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    for row in [header, *lines]:
        print(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------


def _run_options() -> argparse.ArgumentParser:
    """Options shared by ``train`` and ``compare`` (all default to "not given")."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("run options (override --config; --set overrides them)")
    g.add_argument("--model", help="model name (see `reclra list`)")
    g.add_argument("--dataset", help="dataset name (see `reclra list`)")
    g.add_argument("--data-dir", help="folder searched first for the data files")
    g.add_argument("--limit-train", type=int, help="keep at most N training examples")
    g.add_argument("--epochs", type=int, help="number of epochs")
    g.add_argument("--batch-size", type=int, help="training mini-batch size")
    g.add_argument("--lr", type=float, help="learning rate")
    g.add_argument("--seed", type=int, help="random seed")
    g.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    g.add_argument("--config", type=Path, help="YAML config file (sections as in config.yaml)")
    g.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config key (value parsed as YAML), e.g. --set model.hidden=[256,256]",
    )
    g.add_argument("--overwrite", action="store_true", help="replace an existing run's outputs")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``reclra`` command."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Train networks without backprop (rec-LRA, LRA) and baselines."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run_options = _run_options()

    train = sub.add_parser(
        "train",
        parents=[run_options],
        help="train one rule",
        description="Train one rule. With --resume and no --config, the run's config.yaml is "
        "the base config (so `reclra train --resume --out DIR --epochs 20` continues a run).",
    )
    train.add_argument("--rule", help="learning rule (see `reclra list`)")
    train.add_argument("--out", type=Path, help="run folder (default runs/RULE-DATASET-TIME)")
    train.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    train.set_defaults(func=_cmd_train)

    ev = sub.add_parser("eval", help="evaluate a checkpoint", description="Evaluate a checkpoint.")
    ev.add_argument("checkpoint", type=Path, help="a run's checkpoint.pt")
    ev.add_argument("--dataset", help="evaluate on another dataset of the same shape")
    ev.add_argument("--data-dir", help="folder searched first for the data files")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ev.add_argument("--json", action="store_true", help="print the full result as JSON")
    ev.set_defaults(func=_cmd_eval)

    ls = sub.add_parser("list", help="list rules, models, datasets and activations")
    ls.set_defaults(func=_cmd_list)

    cmp_ = sub.add_parser(
        "compare",
        parents=[run_options],
        help="train several rules on the same model, data and seed",
        description="Train several rules with the same model, data and seed (each in OUT/RULE/) "
        "and compare them. Every rule uses its default options: --set and --config apply to the "
        "model, optim, data and train sections (a config file's rule section is ignored). If the "
        f"dataset cannot be found or downloaded, {FALLBACK_DATASET} is used instead. Without "
        f"--epochs or --config, each rule trains for {COMPARE_EPOCHS} epoch.",
    )
    cmp_.add_argument(
        "--rules", required=True, help="comma-separated rule names, e.g. rec-lra,backprop"
    )
    cmp_.add_argument("--out", type=Path, help="output folder (default runs/compare-TIME)")
    cmp_.set_defaults(func=_cmd_compare)

    bench = sub.add_parser(
        "bench",
        help="time training steps of several rules side by side",
        description="Time full training steps (zero_grad, compute_grads, optimizer step) of "
        "several rules on the same model and random data, in interleaved rounds; prints per rule "
        "and batch size the median and spread of ms/step, its ratio to the first rule, the ratio "
        "of their matmul FLOPs (the floor), the fraction of this machine's measured matmul peak, "
        "examples/s and the peak memory of a step. Model options come from --set model.KEY=VALUE.",
    )
    bench.add_argument(
        "--rules",
        required=True,
        help="comma-separated rules, each with options if wanted: "
        "backprop,rec-lra,rec-lra:fused=false,executor=threads (the first is the reference)",
    )
    bench.add_argument("--model", default="mlp", help="model name (default mlp)")
    bench.add_argument("--input-shape", default="1,28,28", help="shape of one example (1,28,28)")
    bench.add_argument("--classes", type=int, default=10, help="number of classes (10)")
    bench.add_argument(
        "--batch-size", default="50", help="mini-batch size(s), comma-separated (50)"
    )
    bench.add_argument(
        "--optimizer", default="adam", help=f"one of {', '.join(OPTIMIZERS)} (adam: fused Adam)"
    )
    bench.add_argument("--steps", type=int, default=50, help="timed steps per round (50)")
    bench.add_argument("--rounds", type=int, default=7, help="interleaved rounds (7)")
    bench.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    bench.add_argument("--threads", type=int, help="torch CPU threads")
    bench.add_argument(
        "--set", action="append", default=[], metavar="model.KEY=VALUE", help="model option"
    )
    bench.add_argument("--json", type=Path, help="also write the results to this JSON file")
    bench.set_defaults(func=_cmd_bench)
    return parser


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def _timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _resolve_config(args: argparse.Namespace, *, base_file: Path | None = None) -> Config:
    """defaults < config file < explicit flags < --set."""
    config_file = args.config or base_file
    cfg = load_config(config_file) if config_file is not None else Config()
    updates: dict[str, dict[str, Any]] = {}
    for dest, (section, key) in FLAG_KEYS.items():
        value = getattr(args, dest, None)
        if value is not None:
            updates.setdefault(section, {})[key] = value
    return apply_overrides(merge_config(cfg, updates), args.set)


def _cmd_train(args: argparse.Namespace) -> int:
    base = None
    if args.resume:
        if args.out is None:
            raise ConfigError("--resume needs --out, the folder of the run to continue")
        if args.config is None and (args.out / CONFIG).is_file():
            base = args.out / CONFIG
    cfg = _resolve_config(args, base_file=base)
    out = args.out or Path("runs") / f"{cfg.rule['name']}-{cfg.data.dataset}-{_timestamp()}"
    trainer = Trainer(
        cfg,
        out,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        on_epoch=lambda record: _print_epoch(record, cfg.train.epochs),
    )
    _print_summary(trainer.run())
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    result = evaluate_checkpoint(
        args.checkpoint, dataset=args.dataset, data_dir=args.data_dir, device=args.device
    )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_eval(result)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    del args
    _print_list()
    return 0


def _parse_rules(text: str) -> list[str]:
    rules = list(dict.fromkeys(r.strip() for r in text.split(",") if r.strip()))
    if not rules:
        raise ConfigError("--rules needs at least one rule name, e.g. --rules rec-lra,backprop")
    for name in rules:
        RULES.get(name)  # unknown names fail before anything is trained
    return rules


def _cmd_compare(args: argparse.Namespace) -> int:
    rules = _parse_rules(args.rules)
    for text in args.set:
        if parse_override(text)[0] == "rule":
            raise ConfigError(
                f"compare: --set {text} is not supported: every rule uses its default options "
                f"(set model, optim, data or train keys)"
            )
    if args.epochs is None and args.config is None:
        args.epochs = COMPARE_EPOCHS
    cfg = _resolve_config(args)
    out = args.out or Path("runs") / f"compare-{_timestamp()}"
    requested = cfg.data.dataset
    rows: list[dict[str, Any]] = []
    curves: dict[str, list[dict[str, Any]]] = {}
    for name in rules:
        print(f"== {name} ==", flush=True)
        while True:
            run_cfg = dataclasses.replace(cfg, rule={"name": name}).validate()
            trainer = Trainer(
                run_cfg,
                out / name,
                overwrite=args.overwrite,
                progress=not args.no_progress,
                on_epoch=lambda record, n=run_cfg.train.epochs: _print_epoch(record, n),
            )
            try:
                summary = trainer.run()
                break
            except DatasetNotFound:
                if cfg.data.dataset == FALLBACK_DATASET:
                    raise
                epochs = max(cfg.train.epochs, FALLBACK_MIN_EPOCHS)
                _note(
                    f"dataset {cfg.data.dataset!r} is not available (no local files and no "
                    f"download); falling back to {FALLBACK_DATASET}, {epochs} epochs"
                )
                cfg = merge_config(
                    cfg, {"data": {"dataset": FALLBACK_DATASET}, "train": {"epochs": epochs}}
                )
        curves[name] = trainer.metrics
        rows.append(
            {
                "rule": name,
                "test_error": summary["final"]["test_error"],
                "val_error": summary["final"]["val_error"],
                "seconds_per_epoch": summary["seconds_per_epoch"],
                "parameters": summary["parameters"],
                "best": summary["best"],
                "out_dir": summary["out_dir"],
                "metrics": trainer.metrics,
            }
        )
    report = {
        "dataset": cfg.data.dataset,
        "requested_dataset": requested,
        "fell_back": cfg.data.dataset != requested,
        "config": cfg.to_dict(),
        "runs": rows,
    }
    (out / "comparison.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    plot_comparison(curves, out / "comparison.png", title=f"test error · {cfg.data.dataset}")
    _print_table(rows)
    print(f"comparison in {out / 'comparison.json'} and {out / 'comparison.png'}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    try:
        specs = parse_rule_list(args.rules)
        batch_sizes = [int(b) for b in args.batch_size.split(",") if b.strip()]
        shape = tuple(int(s) for s in args.input_shape.split(","))
    except ValueError as exc:
        raise ConfigError(
            f"bench: {exc} (--rules a,b:key=value,… --batch-size 32,50 --input-shape 1,28,28)"
        ) from None
    for spec in specs:
        RULES.get(spec.name)  # unknown names fail before anything is built
    cfg = Config(model={"name": args.model})
    for text in args.set:
        if parse_override(text)[0] != "model":
            raise ConfigError(f"bench: --set takes model options only, got {text!r}")
    cfg = apply_overrides(cfg, args.set)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    options = {k: v for k, v in cfg.model.items() if k != "name"}
    peak = matmul_peak(device)
    results = benchmark_rules(
        specs, model=args.model, model_options=options, input_shape=shape,
        num_classes=args.classes, batch_sizes=batch_sizes, steps=args.steps,
        rounds=args.rounds, optimizer=args.optimizer, device=device, peak_gflops=peak,
    )  # fmt: skip
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"{args.model} {options or ''} · {where} · {torch.get_num_threads()} threads · "
        f"{args.optimizer} · {args.rounds} rounds × {args.steps} steps · "
        f"matmul peak {peak:.1f} GFLOP/s"
    )
    width = max(len(s.label) for s in specs) + 2
    print(
        f"{'rule':<{width}}{'batch':>6}{'ms/step':>10}{'IQR':>8}{'× first':>9}{'FLOP ×':>8}"
        f"{'% peak':>8}{'ex/s':>10}{'MiB':>8}"
    )
    for r in results:
        print(
            f"{r.rule:<{width}}{r.batch_size:>6}{r.median_ms:>10.3f}{r.iqr_ms:>8.3f}"
            f"{r.ratio_to_first:>9.3f}{r.flop_ratio_to_first:>8.3f}{100 * r.peak_fraction:>8.1f}"
            f"{r.examples_per_s:>10.0f}{r.peak_mem_mib:>8.2f}"
        )
    if args.json:
        report = {
            "model": args.model, "model_options": options, "input_shape": list(shape),
            "device": where, "threads": torch.get_num_threads(), "optimizer": args.optimizer,
            "matmul_peak_gflops": peak, "torch": torch.__version__,
            "results": [r.as_dict() for r in results],
        }  # fmt: skip
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``reclra`` command; returns the exit status (0, 2 bad input, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or argparse's own usage errors
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return args.func(args)
    except TrainingInterrupted as exc:
        if exc.epoch is None:
            _note("interrupted before the first checkpoint; nothing to resume")
        else:
            run = exc.checkpoint.parent
            _note(
                f"interrupted; epoch {exc.epoch} is saved in {exc.checkpoint}. Resume with: "
                f"reclra train --resume --out {run}"
            )
        return 130
    except KeyboardInterrupt:
        _note("interrupted")
        return 130
    except (ValueError, OSError) as exc:  # ConfigError, DataError, RunError, CheckpointError, …
        _error(str(exc) or type(exc).__name__)
        return 2
