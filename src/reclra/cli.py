"""The ``reclra`` command line: ``train``, ``eval``, ``list``, ``sweep`` (alias ``compare``)
and ``bench``.

Configs are layered as defaults < ``--config FILE.yaml`` < explicit flags (``--rule``,
``--epochs``, …) < ``--set section.key=value`` (repeatable). Bad input (unknown names, malformed
overrides, missing or corrupt files, shapes that do not fit, a run that diverged: every
:class:`~reclra.errors.ReclraError`) and failures of the system (a full disk, a file that cannot
be written) are reported as one line ``reclra: error: …`` on stderr with exit code 2
(``--debug``: with the traceback). Anything else is a bug in reclra: it is reported as one, with
its traceback, and exit code 1. Ctrl-C (exit 130) and SIGTERM (exit 143) say how to resume; a
closed output pipe (``reclra eval … | head``) ends quietly.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import statistics
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

import reclra
from reclra.activations import activation_names
from reclra.bench import OPTIMIZERS, benchmark_rules, parse_rule_list
from reclra.config import (
    Config,
    ConfigError,
    apply_overrides,
    describe,
    load_config,
    merge_config,
    parse_override,
)
from reclra.data import DatasetNotFound, dataset_names, locate_dataset
from reclra.errors import ReclraError
from reclra.models import MODELS
from reclra.provenance import git_commit
from reclra.rules import RULES
from reclra.sweep import (
    SweepInterrupted,
    SweepSpec,
    build_grid,
    load_sweep,
    markdown_table,
    parse_seeds,
    parse_variant,
    run_grid,
    sweep_table,
    write_report,
)
from reclra.train import (
    BUILDER_ARGS,
    CONFIG,
    Trainer,
    TrainingInterrupted,
    _build,
    default_run_dir,
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
    "optimizer": ("optim", "name"),
    "schedule": ("schedule", "name"),
    "patience": ("train", "patience"),
    "seed": ("train", "seed"),
    "device": ("train", "device"),
}

#: Dataset used by ``sweep`` when the requested one cannot be found or downloaded.
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
        if k not in BUILDER_ARGS
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


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------


def _flag_help(dest: str) -> str:
    """The help of a run option: its config key's description and default."""
    section, key = FLAG_KEYS[dest]
    if section in ("model", "rule"):
        doc, default = f"{section} name (see `reclra list`)", getattr(Config(), section)["name"]
    else:
        doc, default = describe(section, key)
    shown = "null" if default is None else default
    return f"{doc} (default: {shown}; {section}.{key})"


class _Version(argparse.Action):
    """``--version``: the library version and, in a git checkout, its commit."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        git = git_commit()
        where = ""
        if git is not None:
            where = f" (git {git['commit'][:12]}{', modified' if git['dirty'] else ''})"
        print(f"{PROG} {reclra.__version__}{where}, torch {torch.__version__}")
        parser.exit()


def _run_options() -> argparse.ArgumentParser:
    """Options shared by ``train`` and ``sweep`` (all default to "not given", so that a config
    file's value stands unless a flag is given; the help shows the built-in defaults)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("run options (override --config; --set overrides them)")
    g.add_argument("--model", help=_flag_help("model"))
    g.add_argument("--dataset", help=_flag_help("dataset"))
    g.add_argument("--data-dir", help=_flag_help("data_dir"))
    g.add_argument("--limit-train", type=int, metavar="N", help=_flag_help("limit_train"))
    g.add_argument("--epochs", type=int, metavar="N", help=_flag_help("epochs"))
    g.add_argument("--batch-size", type=int, metavar="N", help=_flag_help("batch_size"))
    g.add_argument("--lr", type=float, help=_flag_help("lr"))
    g.add_argument("--optimizer", help=_flag_help("optimizer"))
    g.add_argument("--schedule", help=_flag_help("schedule"))
    g.add_argument("--patience", type=int, metavar="N", help=_flag_help("patience"))
    g.add_argument("--seed", type=int, help=_flag_help("seed"))
    g.add_argument("--device", help=_flag_help("device"))
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
    parser.add_argument("--version", action=_Version)
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error (and raise it)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    debug = argparse.ArgumentParser(add_help=False)  # `reclra train --debug` works too
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show "
                       "the traceback of an error")  # fmt: skip
    run_options = _run_options()

    train = sub.add_parser(
        "train",
        parents=[run_options, debug],
        help="train one rule",
        description="Train one rule. With --resume and no --config, the run's config.yaml is "
        "the base config (so `reclra train --resume --out DIR --epochs 20` continues a run).",
    )
    train.add_argument("--rule", help=_flag_help("rule"))
    train.add_argument("--out", type=Path, help="run folder (default runs/RULE-DATASET-TIME)")
    train.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    train.set_defaults(func=_cmd_train)

    ev = sub.add_parser(
        "eval", parents=[debug], help="evaluate a checkpoint", description="Evaluate a checkpoint."
    )
    ev.add_argument("checkpoint", type=Path, help="a run's checkpoint.pt")
    ev.add_argument("--dataset", help="evaluate on another dataset of the same shape")
    ev.add_argument("--data-dir", help="folder searched first for the data files")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ev.add_argument("--json", action="store_true", help="print the full result as JSON")
    ev.set_defaults(func=_cmd_eval)

    ls = sub.add_parser(
        "list", parents=[debug], help="list rules, models, datasets and activations"
    )
    ls.set_defaults(func=_cmd_list)

    sweep = sub.add_parser(
        "sweep",
        aliases=["compare"],
        parents=[run_options, debug],
        help="train a grid of rules × variants × seeds and tabulate it",
        description="Train every rule (--rules) and named variant (--variant) for every seed "
        "(--seeds), each in OUT/VARIANT/sSEED/, on the same model and data, and write one table "
        "(median, mean ± std, min–max of the final test error per variant) as OUT/sweep.md and "
        "OUT/sweep.csv, with OUT/sweep.json and a learning-curve plot with seed bands "
        "(OUT/sweep.png). A variant that sets no rule.name is crossed with every rule of --rules; "
        "--set rule.KEY=VALUE applies to every run's rule. "
        "Running the same command again resumes: finished runs are kept and skipped, "
        "interrupted ones continue from their checkpoint. A sweep file (YAML: config, rules, "
        "variants, seeds, jobs) may hold all of it; flags override it. If the dataset cannot be "
        f"found or downloaded, {FALLBACK_DATASET} is used instead (at least "
        f"{FALLBACK_MIN_EPOCHS} epochs).",
    )
    sweep.add_argument("spec", nargs="?", type=Path, help="a sweep file (YAML)")
    sweep.add_argument("--rules", help="comma-separated rule names, e.g. rec-lra,backprop")
    sweep.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:SECTION.KEY=VALUE[,…]",
        help="a named variant, e.g. skip-fixed:rule.pathway=skip,rule.error_rule=fixed "
        "(repeatable)",
    )
    sweep.add_argument("--seeds", help="seeds, e.g. 0,1,2 or 0-4 (default: --seed, i.e. 0)")
    sweep.add_argument(
        "--jobs", type=int, help="runs side by side, CPU threads split between them (default 1)"
    )
    sweep.add_argument("--out", type=Path, help="output folder (default runs/sweep-TIME)")
    sweep.set_defaults(func=_cmd_sweep)

    bench = sub.add_parser(
        "bench",
        parents=[debug],
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


def _resolve_config(
    args: argparse.Namespace, *, base_file: Path | None = None, base: Config | None = None
) -> Config:
    """defaults < ``base`` (a sweep file's config) < config file < explicit flags < --set."""
    config_file = args.config or base_file
    cfg = base or Config()
    if config_file is not None:
        cfg = load_config(config_file, base=cfg)
    updates: dict[str, dict[str, Any]] = {}
    for dest, (section, key) in FLAG_KEYS.items():
        value = getattr(args, dest, None)
        if value is not None:
            updates.setdefault(section, {})[key] = value
    return apply_overrides(merge_config(cfg, updates), args.set)


def _describe_run(cfg: Config) -> str:
    o, t = cfg.optim, cfg.train
    schedule = "" if cfg.schedule.name == "constant" else f", {cfg.schedule.name} schedule"
    return (
        f"{cfg.rule['name']} on {cfg.model['name']} · {cfg.data.dataset}, {t.epochs} epochs, "
        f"{o.name} lr {o.lr:g}{schedule}, batch {cfg.data.batch_size}, seed {t.seed}"
    )


def _cmd_train(args: argparse.Namespace) -> int:
    base = None
    if args.resume:
        if args.out is None:
            raise ConfigError("--resume needs --out, the folder of the run to continue")
        if args.config is None and (args.out / CONFIG).is_file():
            base = args.out / CONFIG
    cfg = _resolve_config(args, base_file=base)
    out = args.out or default_run_dir(cfg)
    trainer = Trainer(
        cfg,
        out,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        on_epoch=lambda record: _print_epoch(record, cfg.train.epochs),
    )
    verb = "resuming" if args.resume else "training"
    print(f"{verb} {_describe_run(cfg)} → {out} (full config: {out / CONFIG})", flush=True)
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


def _available(cfg: Config) -> Config:
    """``cfg``, or on the fallback dataset when its dataset cannot be found or downloaded."""
    if cfg.data.dataset in (FALLBACK_DATASET, "imagefolder"):
        return cfg
    try:
        locate_dataset(cfg.data.dataset, data_dir=cfg.data.data_dir, download=cfg.data.download)
    except DatasetNotFound:
        epochs = max(cfg.train.epochs, FALLBACK_MIN_EPOCHS)
        _note(
            f"dataset {cfg.data.dataset!r} is not available (no local files and no download); "
            f"falling back to {FALLBACK_DATASET}, {epochs} epochs"
        )
        return merge_config(
            cfg, {"data": {"dataset": FALLBACK_DATASET}, "train": {"epochs": epochs}}
        )
    return cfg


def _cmd_sweep(args: argparse.Namespace) -> int:
    spec = load_sweep(args.spec) if args.spec is not None else SweepSpec()
    rules = _parse_rules(args.rules) if args.rules else spec.rules
    for name in rules:
        RULES.get(name)  # unknown names fail before anything is trained
    variants = [parse_variant(v) for v in args.variant] or spec.variants
    rule_options = []
    for text in list(args.set):
        section, key, value = parse_override(text)
        if section == "rule" and key != "name":  # for every run's rule, not the base's only
            rule_options.append((key, value))
            args.set.remove(text)
    cfg = _available(_resolve_config(args, base=spec.config))
    seeds = parse_seeds(args.seeds) if args.seeds else spec.seeds
    jobs = args.jobs or spec.jobs or 1
    out = args.out or Path("runs") / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    cells = build_grid(
        cfg, out, rules=rules, variants=variants, seeds=seeds, rule_options=rule_options
    )
    names = list(dict.fromkeys(c.variant for c in cells))
    print(
        f"sweep: {len(names)} variant(s) × {len(cells) // len(names)} seed(s) = {len(cells)} "
        f"runs of {cfg.model['name']} · {cfg.data.dataset}, {cfg.train.epochs} epochs, "
        f"{jobs} at a time → {out}",
        flush=True,
    )

    def on_done(cell: Any, summary: dict[str, Any], skipped: bool) -> None:
        how = "kept" if skipped else "done"
        tqdm.write(
            f"{how} {cell.variant} seed {cell.seed}: test {_pct(summary['final']['test_error'])} "
            f"after {summary['epochs']} epochs ({cell.out_dir})"
        )

    summaries = run_grid(
        cells, jobs=jobs, overwrite=args.overwrite, progress=not args.no_progress, on_done=on_done
    )
    rows = sweep_table(cells, summaries)
    paths = write_report(out, cells, rows)
    print(markdown_table(rows), end="")
    print(f"table in {paths['md']} and {paths['csv']}; curves in {paths['png']}")
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
    cfg = Config(model={"name": args.model})
    for text in args.set:
        if parse_override(text)[0] != "model":
            raise ConfigError(f"bench: --set takes model options only, got {text!r}")
    cfg = apply_overrides(cfg, args.set)
    for spec in specs:  # bad names, options and shapes fail before anything is timed
        rule_cfg = merge_config(cfg, {"rule": {"name": spec.name, **spec.options}})
        _build(rule_cfg, shape, args.classes)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    options = {k: v for k, v in cfg.model.items() if k != "name"}
    results = benchmark_rules(
        specs, model=args.model, model_options=options, input_shape=shape,
        num_classes=args.classes, batch_sizes=batch_sizes, steps=args.steps,
        rounds=args.rounds, optimizer=args.optimizer, device=device,
    )  # fmt: skip
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peaks = [g for r in results[:: len(specs)] for g in r.round_peaks]
    print(
        f"{args.model} {options or ''} · {where} · {torch.get_num_threads()} threads · "
        f"{args.optimizer} · {args.rounds} rounds × {args.steps} steps · matmul peak "
        f"(every round) median {statistics.median(peaks):.1f}, {min(peaks):.1f}–{max(peaks):.1f} "
        "GFLOP/s"
    )
    width = max(len(s.label) for s in specs) + 2
    print(
        f"{'rule':<{width}}{'batch':>6}{'ms/step':>10}{'IQR':>8}{'× first':>9}{'FLOP ×':>8}"
        f"{'% peak':>8}{'ex/s':>10}{'MiB':>8}{'ratio IQR':>11}"
    )
    for r in results:
        print(
            f"{r.rule:<{width}}{r.batch_size:>6}{r.median_ms:>10.3f}{r.iqr_ms:>8.3f}"
            f"{r.ratio_to_first:>9.3f}{r.flop_ratio_to_first:>8.3f}{100 * r.peak_fraction:>8.1f}"
            f"{r.examples_per_s:>10.0f}{r.peak_mem_mib:>8.2f}{r.ratio_iqr:>11.3f}"
        )
    if args.json:
        report = {
            "model": args.model, "model_options": options, "input_shape": list(shape),
            "device": where, "threads": torch.get_num_threads(), "optimizer": args.optimizer,
            "matmul_peak_gflops": statistics.median(peaks), "torch": torch.__version__,
            "results": [r.as_dict() for r in results],
        }  # fmt: skip
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


#: Exit status of a run stopped by a signal: 128 + its number.
SIGNAL_EXIT = {"SIGINT": 130, "SIGTERM": 143}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``reclra`` command; returns the exit status (0; 1 a bug in reclra; 2 bad input
    or a failure of the system; 130/143 interrupted by SIGINT/SIGTERM)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or argparse's own usage errors
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return _run(args)
    except BrokenPipeError:  # the reader went away (`reclra eval … | head`): stop quietly
        with contextlib.suppress(OSError, ValueError):  # stdout may have no file descriptor
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 141
    except (ReclraError, OSError) as exc:  # bad input, or the system (disk full, permissions)
        if args.debug:
            traceback.print_exc()
        _error(str(exc) or type(exc).__name__)
        return 2
    except Exception:  # anything else is a bug in reclra, not bad input
        traceback.print_exc()
        _error(
            "internal error: this is a bug in reclra, not in your input; please report it with "
            "the traceback above and the command line"
        )
        return 1


def _run(args: argparse.Namespace) -> int:
    """The command, with interruptions turned into a note and their exit status."""
    try:
        return args.func(args)
    except SweepInterrupted as exc:
        _note(
            f"interrupted; {exc.finished} of {exc.total} runs are finished and kept. Run the "
            f"same command again to resume (finished runs are skipped)"
        )
        return 130
    except TrainingInterrupted as exc:
        run = exc.checkpoint.parent
        if exc.epoch is None:
            _note(f"{exc.signal}: interrupted before the first checkpoint; nothing to resume")
        else:
            where = (
                f"epoch {exc.epoch}"
                if not exc.step
                else f"step {exc.step} of epoch {exc.epoch + 1}"
            )
            _note(
                f"{exc.signal}: stopped; {where} is saved in {exc.checkpoint}. Resume with: "
                f"reclra train --resume --out {run}"
            )
        return SIGNAL_EXIT.get(exc.signal, 130)
    except KeyboardInterrupt:
        _note("interrupted")
        return 130
