"""Sweeps: a grid of rules × named variants × seeds, run resumably, summarised in one table.

A *variant* is a name and a list of ``section.key=value`` overrides of the base config
(``skip-fixed:rule.pathway=skip,rule.error_rule=fixed``). The grid is built by
:func:`build_grid`:

- every rule of ``rules`` is a variant named after it (``rule.name=RULE``);
- a named variant that sets ``rule.name`` is one variant; one that does not is crossed with every
  rule of ``rules`` (named ``RULE-NAME`` when there are several; with none, it applies to the
  base config's rule);
- ``rule_options`` (``--set rule.KEY=VALUE``) apply to every run's rule, after its variant names
  the rule and before the variant's own overrides;
- every variant runs once per seed (``train.seed``, which also draws the validation split), in
  ``OUT/VARIANT/sSEED/``.

:func:`run_grid` skips the runs whose ``summary.json`` already holds their config, resumes those
with a checkpoint (an interrupted sweep loses at most the epochs since each run's last
checkpoint) and starts the rest, optionally ``jobs`` at a time in separate processes with the CPU
threads split between them. :func:`sweep_table` reduces the summaries to one row per variant
(median, mean ± std, min–max of the final test error over seeds) and :func:`write_report` writes
it as ``sweep.md``, ``sweep.csv`` and ``sweep.json``, with ``sweep.png`` (mean test error per
epoch, min–max band over seeds).

A sweep file (YAML) holds the same: ``config`` (a config file, relative to the sweep file, or a
mapping of sections), ``rules``, ``variants`` (name → mapping of ``section.key: value``),
``seeds`` and ``jobs``.
"""

from __future__ import annotations

import concurrent.futures
import csv
import io
import json
import multiprocessing
import os
import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from reclra.analysis import plot_bands
from reclra.config import (
    Config,
    ConfigError,
    load_config,
    merge_config,
    parse_override,
    parse_yaml,
)
from reclra.train import (
    CHECKPOINT,
    METRICS,
    RESUMABLE,
    SUMMARY,
    config_changes,
    fit,
    resolve_config,
)

__all__ = [
    "Cell",
    "SweepInterrupted",
    "SweepSpec",
    "Variant",
    "build_grid",
    "load_sweep",
    "markdown_table",
    "parse_seeds",
    "parse_variant",
    "run_grid",
    "sweep_table",
    "write_report",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]*$")
#: Splits ``a.b=1,c.d=[1,2]`` before each ``section.key=`` (commas inside values stay).
_NEXT_OVERRIDE = re.compile(r",(?=\s*[A-Za-z_]+\.[A-Za-z_]+\s*=)")

Override = tuple[str, str, Any]


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep; ``finished`` runs are kept and skipped when it is run again."""

    def __init__(self, finished: int, total: int) -> None:
        super().__init__(f"sweep interrupted after {finished} of {total} runs")
        self.finished, self.total = finished, total


@dataclass
class Variant:
    """A named set of overrides of the base config."""

    name: str
    overrides: list[Override] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(
                f"variant name {self.name!r} must start with a letter or digit and hold only "
                f"letters, digits and _ . + = -"
            )

    @property
    def rule(self) -> str | None:
        """The rule the variant names, if it names one."""
        return next((v for s, k, v in self.overrides if (s, k) == ("rule", "name")), None)


@dataclass
class Cell:
    """One run of the grid."""

    variant: str
    seed: int
    config: Config
    out_dir: Path


@dataclass
class SweepSpec:
    """What a sweep file holds (every field optional)."""

    config: Config | None = None
    rules: list[str] = field(default_factory=list)
    variants: list[Variant] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    jobs: int | None = None


def parse_variant(text: str) -> Variant:
    """``NAME:section.key=value,section.key=value`` → :class:`Variant`."""
    name, colon, body = text.partition(":")
    if not colon or not body.strip():
        raise ConfigError(
            f"malformed variant {text!r}: expected NAME:section.key=value[,section.key=value…]"
        )
    return Variant(name.strip(), [parse_override(p.strip()) for p in _NEXT_OVERRIDE.split(body)])


def parse_seeds(text: str) -> list[int]:
    """``0,1,2`` or ``0-4`` (inclusive) or a mix → sorted unique seeds."""
    seeds: set[int] = set()
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            low, dash, high = part.partition("-")
            seeds.update(range(int(low), int(high) + 1) if dash else [int(low)])
    except ValueError:
        raise ConfigError(f"--seeds must look like 0,1,2 or 0-4, got {text!r}") from None
    if not seeds:
        raise ConfigError(f"--seeds names no seed: {text!r}")
    return sorted(seeds)


def _overrides_of(where: str, values: Any) -> list[Override]:
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where} must be a mapping of section.key: value, got {values!r}")
    out = []
    for path, value in values.items():
        section, dot, key = str(path).partition(".")
        if not dot or not section or not key:
            raise ConfigError(f"{where}: {path!r} is not section.key")
        out.append((section, key, value))
    return out


def load_sweep(path: str | os.PathLike[str]) -> SweepSpec:
    """Read a sweep file (see the module docstring)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read sweep file {path}: {exc}") from None
    data = parse_yaml(text, where=str(path)) or {}
    known = ("config", "rules", "variants", "seeds", "jobs")
    if not isinstance(data, Mapping) or set(data) - set(known):
        raise ConfigError(f"{path}: a sweep file is a mapping with keys {', '.join(known)}")
    spec = SweepSpec(jobs=data.get("jobs"))
    base = data.get("config")
    if isinstance(base, str):
        spec.config = load_config(path.parent / base)
    elif base is not None:
        spec.config = Config.from_dict(base)
    spec.rules = [str(r) for r in data.get("rules") or []]
    for name, values in (data.get("variants") or {}).items():
        spec.variants.append(Variant(str(name), _overrides_of(f"{path}: variant {name}", values)))
    spec.seeds = [int(s) for s in data.get("seeds") or []]
    return spec


def _apply(cfg: Config, overrides: Sequence[Override]) -> Config:
    """``cfg`` with the overrides set, names (``model.name``, ``rule.name``) first."""
    ordered = sorted(overrides, key=lambda o: o[1] != "name")
    for section, key, value in ordered:
        cfg = merge_config(cfg, {section: {key: value}})
    return cfg


def build_grid(
    base: Config,
    out: str | os.PathLike[str],
    *,
    rules: Sequence[str] = (),
    variants: Sequence[Variant] = (),
    seeds: Sequence[int] = (),
    rule_options: Sequence[tuple[str, Any]] = (),
) -> list[Cell]:
    """The runs of the grid, variant-major (see the module docstring); ``seeds`` default to the
    base config's ``train.seed``.

    Raises:
        ConfigError: no variant, two variants with one name, or a bad override.
        ValueError: an unknown rule or model, or an option a run's rule or model does not take.
    """
    named: list[Variant] = [Variant(r, [("rule", "name", r)]) for r in rules]
    for v in variants:
        if v.rule is not None or not rules:
            named.append(v)
            continue
        for r in rules:
            label = v.name if len(rules) == 1 else f"{r}-{v.name}"
            named.append(Variant(label, [("rule", "name", r), *v.overrides]))
    if not named:
        raise ConfigError("a sweep needs at least one rule or variant (--rules, --variant)")
    names = [v.name for v in named]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise ConfigError(f"two variants are named {', '.join(clash)}")
    seeds = list(seeds) or [base.train.seed]
    cells = []
    for v in named:
        names = [o for o in v.overrides if o[1] == "name"]
        common = [("rule", k, value) for k, value in rule_options]
        rest = [o for o in v.overrides if o[1] != "name"]
        try:
            cfg = _apply(_apply(base, names), [*common, *rest])
            resolve_config(cfg)  # unknown options, bad values, before anything is trained
        except ConfigError as exc:
            raise ConfigError(f"variant {v.name}: {exc}") from None
        for seed in seeds:
            run_cfg = merge_config(cfg, {"train": {"seed": seed}})
            cells.append(Cell(v.name, seed, run_cfg, Path(out) / v.name / f"s{seed}"))
    return cells


def _finished(cell: Cell) -> dict[str, Any] | None:
    """The cell's summary when it holds the cell's config (up to how and where it ran)."""
    path = cell.out_dir / SUMMARY
    if not path.is_file():
        return None
    summary = json.loads(path.read_text(encoding="utf-8"))
    changes = config_changes(summary.get("config", {}), resolve_config(cell.config).to_dict())
    if any(k not in RESUMABLE or k == "train.epochs" for k in changes):
        return None
    return summary


def _run_cell(config: dict[str, Any], out_dir: str, overwrite: bool) -> dict[str, Any]:
    """Train one cell (in this process or a worker); resume it when it has a checkpoint."""
    resume = not overwrite and (Path(out_dir) / CHECKPOINT).is_file()
    return fit(
        Config.from_dict(config), out_dir, resume=resume, overwrite=overwrite, progress=False
    )


def run_grid(
    cells: Sequence[Cell],
    *,
    jobs: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    on_done: Callable[[Cell, dict[str, Any], bool], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every cell not finished yet; the summaries, in cell order.

    Args:
        cells: from :func:`build_grid`.
        jobs: runs side by side, each in its own process; a run whose ``train.threads`` is null
            gets ``cpu_count // jobs`` threads (at least 1).
        overwrite: run every cell afresh (finished ones too).
        progress: a progress bar over the grid (only on a terminal).
        on_done: called with each cell, its summary and whether it was skipped.

    Raises:
        SweepInterrupted: on Ctrl-C; finished runs are kept.
    """
    if jobs < 1:
        raise ConfigError(f"jobs must be >= 1, got {jobs}")
    summaries: dict[int, dict[str, Any]] = {}
    todo = []
    for i, cell in enumerate(cells):
        done = None if overwrite else _finished(cell)
        if done is not None:
            summaries[i] = done
            if on_done is not None:
                on_done(cell, done, True)
        else:
            todo.append(i)
    threads = max(1, (os.cpu_count() or 1) // jobs)

    def payload(i: int) -> tuple[dict[str, Any], str, bool]:
        cfg = cells[i].config
        if jobs > 1 and cfg.train.threads is None:
            cfg = merge_config(cfg, {"train": {"threads": threads}})
        return cfg.to_dict(), str(cells[i].out_dir), overwrite

    bar = tqdm(
        total=len(cells), initial=len(summaries), desc="sweep", unit="run",
        disable=None if progress else True,
    )  # fmt: skip

    def finish(i: int, summary: dict[str, Any]) -> None:
        summaries[i] = summary
        bar.update()
        if on_done is not None:
            on_done(cells[i], summary, False)

    try:
        with bar:
            if jobs == 1:
                for i in todo:
                    finish(i, _run_cell(*payload(i)))
            else:
                context = multiprocessing.get_context("spawn")
                with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
                    futures = {pool.submit(_run_cell, *payload(i)): i for i in todo}
                    try:
                        for future in concurrent.futures.as_completed(futures):
                            finish(futures[future], future.result())
                    except BaseException:
                        pool.shutdown(cancel_futures=True)
                        raise
    except KeyboardInterrupt:
        raise SweepInterrupted(len(summaries), len(cells)) from None
    return [summaries[i] for i in range(len(cells))]


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


def sweep_table(cells: Sequence[Cell], summaries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per variant, in grid order: final test errors by seed and their median, mean,
    standard deviation (over seeds, n − 1; 0 for one seed), min and max; median validation
    error, best-epoch test error and s/epoch; parameter counts of the first seed's run."""
    groups: dict[str, list[tuple[Cell, dict[str, Any]]]] = {}
    for cell, summary in zip(cells, summaries, strict=True):
        groups.setdefault(cell.variant, []).append((cell, summary))
    rows = []
    for variant, runs in groups.items():
        errors = [s["final"]["test_error"] for _, s in runs]
        vals = [s["final"]["val_error"] for _, s in runs if s["final"]["val_error"] is not None]
        rows.append(
            {
                "variant": variant,
                "rule": runs[0][1]["rule"],
                "seeds": [c.seed for c, _ in runs],
                "test_errors": errors,
                "median": statistics.median(errors),
                "mean": statistics.fmean(errors),
                "std": statistics.stdev(errors) if len(errors) > 1 else 0.0,
                "min": min(errors),
                "max": max(errors),
                "val_median": statistics.median(vals) if vals else None,
                "best_test_median": statistics.median(s["best"]["test_error"] for _, s in runs),
                "epochs": [s["epochs"] for _, s in runs],
                "seconds_per_epoch": statistics.median(s["seconds_per_epoch"] for _, s in runs),
                "parameters": runs[0][1]["parameters"],
                "runs": [str(c.out_dir) for c, _ in runs],
            }
        )
    return rows


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _params(p: Mapping[str, int]) -> str:
    text = f"{p['model']:,}"
    if p["learnable_synapses"]:
        text += f" + {p['learnable_synapses']:,} learnable"
    if p["fixed_feedback"]:
        text += f" + {p['fixed_feedback']:,} fixed"
    return text


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The table as GitHub markdown (errors in %)."""
    lines = [
        "| variant | rule | test error % per seed | median | mean ± std | min–max "
        "| val error % (median) | s/epoch (median) | parameters |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        per_seed = ", ".join(f"{_pct(e)}" for e in r["test_errors"])
        lines.append(
            f"| {r['variant']} | {r['rule']} | {per_seed} | {_pct(r['median'])} "
            f"| {r['mean']:.2f} ± {r['std']:.2f} | {_pct(r['min'])}–{_pct(r['max'])} "
            f"| {_pct(r['val_median'])} | {r['seconds_per_epoch']:.2f} "
            f"| {_params(r['parameters'])} |"
        )
    return "\n".join(lines) + "\n"


def _csv_table(rows: Sequence[dict[str, Any]]) -> str:
    columns = ["variant", "rule", "runs", "seeds", "test_errors", "median", "mean", "std", "min",
               "max", "val_median", "best_test_median", "seconds_per_epoch", "model_parameters",
               "learnable_synapses", "fixed_feedback"]  # fmt: skip
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for r in rows:
        p = r["parameters"]
        writer.writerow(
            [r["variant"], r["rule"], len(r["seeds"]), " ".join(map(str, r["seeds"])),
             " ".join(f"{e:.4f}" for e in r["test_errors"]), r["median"], r["mean"], r["std"],
             r["min"], r["max"], r["val_median"], r["best_test_median"], r["seconds_per_epoch"],
             p["model"], p["learnable_synapses"], p["fixed_feedback"]]
        )  # fmt: skip
    return buffer.getvalue()


def write_report(
    out: str | os.PathLike[str], cells: Sequence[Cell], rows: Sequence[dict[str, Any]]
) -> dict[str, Path]:
    """Write ``sweep.md``, ``sweep.csv``, ``sweep.json`` and ``sweep.png`` into ``out``;
    returns their paths by suffix."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {ext: out / f"sweep.{ext}" for ext in ("md", "csv", "json", "png")}
    paths["md"].write_text(markdown_table(rows), encoding="utf-8")
    paths["csv"].write_text(_csv_table(rows), encoding="utf-8")
    report = {
        "runs": [{"variant": c.variant, "seed": c.seed, "out_dir": str(c.out_dir)} for c in cells],
        "rows": list(rows),
    }
    paths["json"].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    curves: dict[str, list[list[dict[str, Any]]]] = {}
    for c in cells:
        lines = (c.out_dir / METRICS).read_text(encoding="utf-8").splitlines()
        curves.setdefault(c.variant, []).append([json.loads(line) for line in lines])
    dataset = cells[0].config.data.dataset if cells else ""
    plot_bands(curves, paths["png"], title=f"test error · {dataset} (mean, min–max over seeds)")
    return paths
