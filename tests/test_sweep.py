"""Tests of reclra.sweep and ``reclra sweep``: grids, variants, resuming, parallel runs, tables."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest

from reclra.analysis import plot_bands
from reclra.cli import main
from reclra.config import Config, ConfigError, load_config
from reclra.rules import Backprop
from reclra.sweep import (
    Cell,
    Variant,
    build_grid,
    load_sweep,
    markdown_table,
    parse_seeds,
    parse_variant,
    sweep_table,
)
from reclra.train import CONFIG, METRICS, RUN, SUMMARY

pytestmark = pytest.mark.usefixtures("isolated_data", "one_thread")

FAST = ["--dataset", "digits", "--limit-train", "300", "--batch-size", "50", "--lr", "0.01",
        "--set", "model.hidden=[16]", "--set", "train.threads=1", "--no-progress"]  # fmt: skip


def test_parse_variant_keeps_commas_inside_values() -> None:
    v = parse_variant("wide-skip:model.hidden=[64, 64],rule.pathway=skip")
    assert v.name == "wide-skip"
    assert v.overrides == [("model", "hidden", [64, 64]), ("rule", "pathway", "skip")]
    with pytest.raises(ConfigError, match="malformed variant"):
        parse_variant("no-overrides")
    with pytest.raises(ConfigError, match="variant name 'a b'"):
        parse_variant("a b:rule.beta=1")


def test_parse_seeds() -> None:
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds("3-5,0") == [0, 3, 4, 5]
    with pytest.raises(ConfigError, match="--seeds must look like"):
        parse_seeds("a")


def test_grid_crosses_unnamed_variants_with_the_rules(tmp_path: Path) -> None:
    base = Config()
    beta = parse_variant("beta1:rule.beta=1.0")
    bp = Variant("bp", [("rule", "name", "backprop")])
    cells = build_grid(base, tmp_path, rules=["rec-lra"], variants=[beta, bp], seeds=[0, 1])
    assert [(c.variant, c.seed) for c in cells] == [
        ("rec-lra", 0), ("rec-lra", 1), ("beta1", 0), ("beta1", 1), ("bp", 0), ("bp", 1),
    ]  # fmt: skip
    assert cells[2].config.rule == {"name": "rec-lra", "beta": 1.0}
    assert cells[3].config.train.seed == 1 and cells[3].out_dir == tmp_path / "beta1" / "s1"
    assert cells[4].config.rule == {"name": "backprop"}
    lr = parse_variant("fast:optim.lr=0.1")
    two = build_grid(base, tmp_path, rules=["fa", "dfa"], variants=[lr])
    assert [c.variant for c in two] == ["fa", "dfa", "fa-fast", "dfa-fast"]
    assert two[3].config.rule["name"] == "dfa" and two[3].config.optim.lr == 0.1
    with pytest.raises(ConfigError, match="two variants are named fa"):
        build_grid(base, tmp_path, rules=["fa"], variants=[Variant("fa", [("optim", "lr", 1.0)])])
    with pytest.raises(ConfigError, match="variant x: unknown option\\(s\\) beta for rule 'fa'"):
        build_grid(base, tmp_path, variants=[parse_variant("x:rule.name=fa,rule.beta=1")])


def fake_summary(rule: str, error: float) -> dict:
    return {
        "rule": rule,
        "epochs": 2,
        "final": {"test_error": error, "val_error": error + 1},
        "best": {"test_error": error - 1},
        "seconds_per_epoch": 1.5,
        "parameters": {"model": 1000, "learnable_synapses": 0, "fixed_feedback": 12800},
    }


def test_table_by_hand(tmp_path: Path) -> None:
    cells = [Cell("v", s, Config(), tmp_path / f"s{s}") for s in (0, 1, 2)]
    (row,) = sweep_table(cells, [fake_summary("rec-lra", e) for e in (12.0, 14.0, 13.0)])
    assert (row["median"], row["mean"], row["std"]) == (13.0, 13.0, 1.0)
    assert (row["min"], row["max"], row["val_median"]) == (12.0, 14.0, 14.0)
    text = markdown_table([row])
    assert "| v | rec-lra | 12.00, 14.00, 13.00 | 13.00 | 13.00 ± 1.00 | 12.00–14.00 |" in text
    assert "1,000 + 12,800 fixed" in text


def test_plot_bands(tmp_path: Path) -> None:
    runs = {"a": [[{"epoch": 1, "test_error": 5.0}, {"epoch": 2, "test_error": 4.0}]] * 2}
    plot_bands(runs, tmp_path / "b.png")
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


def test_interrupted_sweep_resumes_and_skips_finished_runs(
    capsys, tmp_path: Path, monkeypatch
) -> None:
    out = tmp_path / "sw"
    argv = ["sweep", "--rules", "fa,backprop", "--seeds", "0,1", "--epochs", "2",
            "--out", str(out), *FAST]  # fmt: skip
    calls = {"n": 0}
    original = Backprop.compute_grads

    def interrupt_in_epoch_2(self, x, y):
        calls["n"] += 1
        if calls["n"] == 8:  # 6 steps per epoch: backprop seed 0, epoch 2
            raise KeyboardInterrupt
        return original(self, x, y)

    monkeypatch.setattr(Backprop, "compute_grads", interrupt_in_epoch_2)
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "2 of 4 runs are finished and kept" in err and "Run the same command again" in err
    kept = {s: (out / "fa" / f"s{s}" / SUMMARY).stat().st_mtime_ns for s in (0, 1)}
    assert [json.loads(x)["epoch"] for x in (out / "backprop/s0" / METRICS).open()] == [1]

    monkeypatch.setattr(Backprop, "compute_grads", original)
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "kept fa seed 0" in text and "kept fa seed 1" in text
    assert "done backprop seed 0" in text and "done backprop seed 1" in text
    assert {s: (out / "fa" / f"s{s}" / SUMMARY).stat().st_mtime_ns for s in (0, 1)} == kept
    sessions = json.loads((out / "backprop/s0" / RUN).read_text())["sessions"]
    assert [s["first_epoch"] for s in sessions] == [1, 2]  # resumed from its checkpoint
    rows = list(csv.DictReader(io.StringIO((out / "sweep.csv").read_text())))
    assert [(r["variant"], r["runs"]) for r in rows] == [("fa", "2"), ("backprop", "2")]
    assert (out / "sweep.md").read_text().startswith("| variant |")
    # a third time: nothing left to train
    assert main(argv) == 0
    assert "done" not in capsys.readouterr().out.replace("kept", "")


def test_sweep_file(capsys, tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("model: {name: mlp, hidden: [16]}\noptim: {lr: 0.01}\n")
    spec = tmp_path / "sweep.yaml"
    spec.write_text(
        "config: base.yaml\n"
        "seeds: [0, 1]\n"
        "jobs: 2\n"
        "variants:\n"
        "  skip-fixed: {rule.name: rec-lra, rule.pathway: skip, rule.error_rule: fixed}\n"
    )
    loaded = load_sweep(spec)
    assert loaded.jobs == 2 and loaded.seeds == [0, 1] and loaded.config.model["hidden"] == [16]
    out = tmp_path / "sw"
    code = main(["sweep", str(spec), "--jobs", "1", "--epochs", "1", "--out", str(out),
                 "--dataset", "digits", "--limit-train", "200", "--no-progress"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    for seed in (0, 1):
        cfg = load_config(out / "skip-fixed" / f"s{seed}" / CONFIG)
        assert (cfg.rule["pathway"], cfg.train.seed, cfg.model["hidden"]) == ("skip", seed, [16])
    assert (out / "sweep.png").is_file()


@pytest.mark.slow  # two worker processes each import torch, scikit-learn and matplotlib
def test_parallel_runs_split_the_threads(capsys, tmp_path: Path) -> None:
    out = tmp_path / "sw"
    code = main(["sweep", "--rules", "fa,dfa", "--jobs", "2", "--epochs", "1", "--out", str(out),
                 "--dataset", "digits", "--limit-train", "100", "--set", "model.hidden=[8]",
                 "--no-progress"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    for rule in ("fa", "dfa"):
        cfg = load_config(out / rule / "s0" / CONFIG)
        assert cfg.rule["name"] == rule
        assert cfg.train.threads == max(1, (os.cpu_count() or 1) // 2)
