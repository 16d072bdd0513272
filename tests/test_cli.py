"""Tests of the ``reclra`` command line (in-process through ``main``, and one subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reclra.cli import _format_options, main
from reclra.config import config_to_yaml, load_config
from reclra.data import dataset_names
from reclra.models import MODELS
from reclra.rules import RULES, Backprop
from reclra.train import CHECKPOINT, CONFIG, METRICS, SUMMARY

pytestmark = pytest.mark.usefixtures("isolated_data", "one_thread")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def tiny_yaml(tmp_path: Path, tiny_config) -> Path:
    """The tiny config as a YAML file (for ``--config``)."""
    path = tmp_path / "tiny.yaml"
    path.write_text(config_to_yaml(tiny_config))
    return path


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def epochs_of(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / METRICS).read_text().splitlines()]


def assert_one_error_line(code: int, err: str, match: str) -> None:
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("reclra: error: ")
    assert match in lines[0], lines[0]


# --------------------------------------------------------------------------------------------
# list
# --------------------------------------------------------------------------------------------


def test_list(capsys) -> None:
    code, out, _ = run_main(capsys, "list")
    assert code == 0
    for name in RULES.names() + MODELS.names() + dataset_names():
        assert name in out
    assert "beta=0.1" in out  # rec-LRA's options with their defaults
    assert "  backprop: error_norms=True" in out
    assert _format_options({}) == "(no options)"  # a user's rule that takes none
    assert "input_shape" not in out  # supplied by the trainer, not an option
    assert "activations: tanh" in out


def test_python_m_reclra_list() -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "reclra", "list"], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert "rules:" in proc.stdout and "rec-lra" in proc.stdout


def test_help_exits_zero(capsys) -> None:
    assert main(["train", "--help"]) == 0
    assert "--set SECTION.KEY=VALUE" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------


def test_train(capsys, tmp_path: Path, tiny_yaml: Path) -> None:
    run = tmp_path / "run"
    code, out, err = run_main(
        capsys, "train", "--config", tiny_yaml, "--rule", "backprop", "--out", run, "--no-progress"
    )
    assert code == 0, err
    lines = out.splitlines()
    # first, what is being run (never a silent start), then one line per epoch
    assert lines[0].startswith("training backprop on mlp · fashion-mnist, 3 epochs, adam lr 0.01")
    assert f"→ {run} (full config: {run / CONFIG})" in lines[0]
    assert [line.split()[1] for line in lines[1:4]] == ["1/3", "2/3", "3/3"]
    assert "test macro precision" in out
    summary = json.loads((run / SUMMARY).read_text())
    assert f"test {summary['final']['test_error']:.2f}%" in out
    assert summary["rule"] == "backprop"
    assert epochs_of(run) == [1, 2, 3]


def test_precedence_defaults_file_flags_set(capsys, tmp_path: Path, tiny_yaml: Path) -> None:
    text = tiny_yaml.read_text().replace("epochs: 3", "epochs: 5").replace("seed: 0", "seed: 4")
    tiny_yaml.write_text(text.replace("lr: 0.01", "lr: 0.5"))
    run = tmp_path / "run"
    code, _, err = run_main(
        capsys,
        "train",
        "--config", tiny_yaml,
        "--epochs", "2",  # flag beats file
        "--lr", "0.02",
        "--set", "train.epochs=1",  # --set beats flag
        "--rule", "dfa",
        "--out", run,
        "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    cfg = load_config(run / CONFIG)
    assert cfg.train.epochs == 1
    assert cfg.optim.lr == 0.02
    assert cfg.train.seed == 4  # from the file
    assert cfg.optim.name == "adam"  # default
    assert cfg.rule["name"] == "dfa"
    defaults = {k: v for k, v in RULES.options("dfa").items() if k != "net"}
    assert cfg.rule == {"name": "dfa", **defaults}  # resolved: every option written out
    assert epochs_of(run) == [1]


def test_default_out_folder(capsys, tmp_path: Path, tiny_yaml: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(
        capsys, "train", "--config", tiny_yaml, "--epochs", "1", "--rule", "fa", "--no-progress"
    )
    assert code == 0, err
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("fa-fashion-mnist-")
    assert (run / SUMMARY).is_file()


def test_resume_uses_the_runs_config(capsys, tmp_path: Path, tiny_yaml: Path) -> None:
    run = tmp_path / "run"
    args = ["train", "--config", tiny_yaml, "--rule", "dfa", "--out", run, "--no-progress"]
    assert run_main(capsys, *args, "--epochs", "1")[0] == 0
    code, out, err = run_main(
        capsys, "train", "--resume", "--out", run, "--epochs", "2", "--no-progress"
    )
    assert code == 0, err
    assert out.splitlines()[0].startswith("resuming dfa on mlp")
    assert out.splitlines()[1].startswith("epoch 2/2")
    assert epochs_of(run) == [1, 2]


def test_existing_run_is_refused(capsys, tmp_path: Path, tiny_yaml: Path) -> None:
    run = tmp_path / "run"
    args = ["train", "--config", tiny_yaml, "--rule", "dfa", "--out", run, "--no-progress"]
    assert run_main(capsys, *args, "--epochs", "1")[0] == 0
    code, _, err = run_main(capsys, *args, "--epochs", "1")
    assert_one_error_line(code, err, "already holds a run")
    code, _, err = run_main(capsys, *args, "--epochs", "2", "--overwrite")
    assert code == 0, err
    assert epochs_of(run) == [1, 2]


def test_ctrl_c_exits_130_and_says_how_to_resume(
    capsys, tmp_path: Path, tiny_yaml: Path, monkeypatch
) -> None:
    calls = {"n": 0}
    original = Backprop.compute_grads

    def interrupt_in_epoch_2(self, x, y):
        calls["n"] += 1
        if calls["n"] == 30:  # 25 steps per epoch
            raise KeyboardInterrupt
        return original(self, x, y)

    monkeypatch.setattr(Backprop, "compute_grads", interrupt_in_epoch_2)
    run = tmp_path / "run"
    code, out, err = run_main(
        capsys, "train", "--config", tiny_yaml, "--rule", "backprop", "--out", run, "--no-progress"
    )
    assert code == 130
    assert out.splitlines()[1].startswith("epoch 1/3") and "epoch 2/3" not in out
    assert "Traceback" not in err
    assert f"reclra train --resume --out {run}" in err
    assert torch.load(run / CHECKPOINT, weights_only=True)["epoch"] == 1
    assert epochs_of(run) == [1]
    monkeypatch.setattr(Backprop, "compute_grads", original)
    code, _, err = run_main(capsys, "train", "--resume", "--out", run, "--no-progress")
    assert code == 0, err
    assert epochs_of(run) == [1, 2, 3]


# --------------------------------------------------------------------------------------------
# eval
# --------------------------------------------------------------------------------------------


def test_eval(capsys, tmp_path: Path, tiny_yaml: Path) -> None:
    run = tmp_path / "run"
    args = ["train", "--config", tiny_yaml, "--epochs", "1", "--out", run, "--no-progress"]
    assert run_main(capsys, *args)[0] == 0
    summary = json.loads((run / SUMMARY).read_text())

    code, out, err = run_main(capsys, "eval", run / CHECKPOINT, "--device", "cpu", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["test_error"] == summary["final"]["test_error"]
    assert result["val_top5_error"] == summary["final"]["val_top5_error"]
    assert result["test_report"]["macro"] == summary["test_report"]["macro"]

    code, out, err = run_main(capsys, "eval", run / CHECKPOINT, "--device", "cpu")
    assert code == 0, err
    assert f"test  error {summary['final']['test_error']:.2f}%" in out
    assert "top-5" in out and "macro precision" in out


# --------------------------------------------------------------------------------------------
# compare (an alias of sweep; more sweep tests in test_sweep.py)
# --------------------------------------------------------------------------------------------


COMPARE_FAST = ["--limit-train", "300", "--set", "model.hidden=[32,32]", "--set", "train.threads=1"]


def test_compare_on_digits(capsys, tmp_path: Path) -> None:
    out_dir = tmp_path / "cmp"
    code, out, err = run_main(
        capsys,
        "compare", "--rules", "rec-lra,backprop", "--dataset", "digits", "--lr", "0.01",
        "--epochs", "1", "--out", out_dir, "--no-progress", *COMPARE_FAST,
    )  # fmt: skip
    assert code == 0, err
    header = next(line for line in out.splitlines() if line.startswith("| variant"))
    assert "test error % per seed" in header and "s/epoch" in header and "parameters" in header
    table = out[out.index(header) :]
    assert "| rec-lra |" in table and "| backprop |" in table
    report = json.loads((out_dir / "sweep.json").read_text())
    assert [r["variant"] for r in report["rows"]] == ["rec-lra", "backprop"]
    for row in report["rows"]:
        summary = json.loads((out_dir / row["variant"] / "s0" / SUMMARY).read_text())
        assert summary["rule"] == row["rule"] == row["variant"]
        assert summary["epochs"] == 1
        assert row["test_errors"] == [summary["final"]["test_error"]]
        assert summary["dataset"]["sizes"]["train"] == 300
    # fixed feedback entries are shown (summary.json counts them)
    fixed = json.loads((out_dir / "rec-lra" / "s0" / SUMMARY).read_text())["parameters"]
    assert fixed["fixed_feedback"] > 0 and f"+ {fixed['fixed_feedback']:,} fixed" in table
    # the same model, data and seed: identical configs but for the rule
    a = torch.load(out_dir / "rec-lra" / "s0" / CHECKPOINT, weights_only=True)["config"]
    b = torch.load(out_dir / "backprop" / "s0" / CHECKPOINT, weights_only=True)["config"]
    assert {k: v for k, v in a.items() if k != "rule"} == {
        k: v for k, v in b.items() if k != "rule"
    }
    assert (out_dir / "sweep.png").read_bytes()[:8] == PNG_MAGIC


def test_compare_falls_back_to_digits(capsys, tmp_path: Path, monkeypatch) -> None:
    empty = tmp_path / "no-data"
    empty.mkdir()
    monkeypatch.setenv("RECLRA_DATA", str(empty))
    out_dir = tmp_path / "cmp"
    code, _, err = run_main(
        capsys,
        "compare", "--rules", "dfa", "--dataset", "fashion-mnist", "--out", out_dir,
        "--no-progress", *COMPARE_FAST,
    )  # fmt: skip
    assert code == 0, err
    note = [line for line in err.splitlines() if "falling back" in line]
    assert len(note) == 1
    assert "'fashion-mnist'" in note[0] and "digits, 30 epochs" in note[0]
    summary = json.loads((out_dir / "dfa" / "s0" / SUMMARY).read_text())
    assert summary["dataset"]["name"] == "digits"
    assert summary["config"]["train"]["epochs"] == 30  # the tiny fallback set trains longer


def test_compare_applies_rule_overrides_and_the_config_files_rule(capsys, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("rule: {name: rec-lra, e_init_std: 0.2, beta: 0.2}\n")
    code, _, err = run_main(
        capsys, "compare", "--rules", "rec-lra,fa", "--config", config,
        "--set", "rule.executor=threads", "--dataset", "digits", "--epochs", "1",
        "--out", tmp_path / "cmp", "--no-progress", *COMPARE_FAST,
    )  # fmt: skip
    assert code == 0, err
    rec = load_config(tmp_path / "cmp" / "rec-lra" / "s0" / CONFIG).rule
    assert (rec["beta"], rec["e_init_std"], rec["executor"]) == (0.2, 0.2, "threads")
    fa = load_config(tmp_path / "cmp" / "fa" / "s0" / CONFIG).rule
    assert fa["executor"] == "threads" and "beta" not in fa


def test_compare_refuses_an_option_a_rule_does_not_take(capsys, tmp_path: Path) -> None:
    code, _, err = run_main(
        capsys, "compare", "--rules", "backprop,rec-lra", "--set", "rule.beta=0.2",
        "--dataset", "digits", "--out", tmp_path / "cmp",
    )  # fmt: skip
    assert_one_error_line(code, err, "variant backprop: unknown option(s) beta for rule 'backprop'")
    assert not (tmp_path / "cmp").exists()


def test_compare_rejects_unknown_rules_before_training(capsys, tmp_path: Path) -> None:
    code, _, err = run_main(
        capsys, "compare", "--rules", "backprop,nope", "--dataset", "digits", "--out", tmp_path
    )
    assert_one_error_line(code, err, "unknown rule 'nope'")
    assert not (tmp_path / "backprop").exists()


def test_version(capsys) -> None:
    code, out, _ = run_main(capsys, "--version")
    assert code == 0
    assert out.startswith("reclra 0.1.0") and "torch" in out


def test_help_shows_the_defaults(capsys) -> None:
    code, out, _ = run_main(capsys, "train", "--help")
    assert code == 0
    text = " ".join(out.split())
    assert "(default: 10; train.epochs)" in text
    assert "(default: 0.0002; optim.lr)" in text
    assert "(default: rec-lra; rule.name)" in text
    assert "(default: constant; schedule.name)" in text


# --------------------------------------------------------------------------------------------
# Bad input: one line on stderr, exit code 2
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--rule", "nope"], "unknown rule 'nope'"),
        (["--model", "nope"], "unknown model 'nope'"),
        (["--dataset", "nope"], "unknown dataset 'nope'"),
        (["--set", "optim.lr"], "malformed override 'optim.lr'"),
        (["--set", "lr=0.1"], "must name a section"),
        (["--set", "optimizer.lr=0.1"], "unknown config section 'optimizer'"),
        (["--set", "train.epoch=2"], "unknown key 'epoch' in section 'train'"),
        (["--epochs", "0"], "train.epochs must be an integer >= 1"),
        (["--set", "model.sizes=[10,5,10]"], "does not fit the data"),
        (["--set", "model.bogus=1"], "unknown option(s) bogus for model 'mlp'"),
        (
            ["--set", "rule.beta=abc"],
            ("rule.beta must be a finite number or a list of finite numbers, got 'abc'"),
        ),
        (["--device", "tpu"], "train.device must be auto, cpu, cuda or cuda:N"),
    ],
)
def test_bad_train_input(capsys, tmp_path: Path, tiny_yaml: Path, args, match) -> None:
    run = tmp_path / "run"
    code, _, err = run_main(capsys, "train", "--config", tiny_yaml, "--out", run, *args)
    assert_one_error_line(code, err, match)
    assert not (run / CONFIG).exists()


def test_missing_data_file(capsys, tmp_path: Path, tiny_idx_dir: Path) -> None:
    data = tmp_path / "data" / "fashion-mnist"
    data.mkdir(parents=True)
    for f in (tiny_idx_dir / "fashion-mnist").iterdir():
        if "t10k-labels" not in f.name:
            (data / f.name).write_bytes(f.read_bytes())
    code, _, err = run_main(
        capsys, "train", "--data-dir", data.parent, "--out", tmp_path / "run", "--no-progress"
    )
    assert_one_error_line(code, err, "dataset 'fashion-mnist' not found")
    assert "missing t10k-labels-idx1-ubyte.gz" in err


def test_corrupt_data_file(capsys, tmp_path: Path, tiny_idx_dir: Path) -> None:
    data = tmp_path / "data" / "fashion-mnist"
    data.mkdir(parents=True)
    for f in (tiny_idx_dir / "fashion-mnist").iterdir():
        (data / f.name).write_bytes(f.read_bytes())
    (data / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    code, _, err = run_main(
        capsys, "train", "--data-dir", data.parent, "--out", tmp_path / "run", "--no-progress"
    )
    assert_one_error_line(code, err, "train-images-idx3-ubyte: truncated IDX header")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("- a\n- b\n", "must be a mapping of sections"),
        ("train: [1,\n", "invalid YAML"),
        ("train: {epoch: 3}\n", "unknown key 'epoch'"),
    ],
)
def test_bad_config_file(capsys, tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code, _, err = run_main(capsys, "train", "--config", path, "--out", tmp_path / "run")
    assert_one_error_line(code, err, match)


def test_missing_config_file(capsys, tmp_path: Path) -> None:
    code, _, err = run_main(capsys, "train", "--config", tmp_path / "nope.yaml")
    assert_one_error_line(code, err, "nope.yaml not found")


def test_resume_without_out(capsys) -> None:
    code, _, err = run_main(capsys, "train", "--resume")
    assert_one_error_line(code, err, "--resume needs --out")


@pytest.mark.parametrize(
    ("content", "match"),
    [(None, "not found"), (b"garbage", "is not a checkpoint")],
)
def test_bad_checkpoint(capsys, tmp_path: Path, content: bytes | None, match: str) -> None:
    path = tmp_path / "checkpoint.pt"
    if content is not None:
        path.write_bytes(content)
    code, _, err = run_main(capsys, "eval", path)
    assert_one_error_line(code, err, match)


def test_eval_bad_device(capsys, tmp_path: Path) -> None:
    code, _, err = run_main(capsys, "eval", tmp_path / "checkpoint.pt", "--device", "tpu")
    assert_one_error_line(code, err, "device must be auto, cpu, cuda or cuda:N, got 'tpu'")


def test_unavailable_cuda(capsys, tmp_path: Path, tiny_yaml: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = run_main(
        capsys, "train", "--config", tiny_yaml, "--device", "cuda", "--out", tmp_path / "r"
    )
    assert_one_error_line(code, err, "CUDA is not available")


def test_bench_times_rules_side_by_side(capsys, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    code, stdout, _ = run_main(
        capsys, "bench", "--rules", "backprop,rec-lra", "--steps", "2", "--rounds", "2",
        "--set", "model.hidden=[8]", "--input-shape", "1,4,4", "--json", str(out),
        "--device", "cpu",
    )  # fmt: skip
    assert code == 0 and "rec-lra" in stdout
    report = json.loads(out.read_text())
    rows = {r["rule"]: r for r in report["results"]}
    assert set(rows) == {"backprop", "rec-lra"} and rows["backprop"]["ratio_to_first"] == 1.0
    assert all(len(r["rounds"]) == 2 and r["median_ms"] > 0 for r in rows.values())


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--rules", "backprop", "--input-shape", "1,x"], "--input-shape"),
        (["--rules", "backprop", "--set", "optim.lr=1"], "model options only"),
        (["--rules", "backprop", "--set", "model.width=3"], "unknown option"),
        (["--rules", "backprop", "--optimizer", "lbfgs"], "unknown optimizer 'lbfgs'"),
        (["--rules", "backprop,backprop"], "listed twice"),
        (["--rules", "rec-lra:fused"], "must look like key=value"),
        (["--rules", "rec-lra:executor=gpu"], "unknown executor 'gpu'"),
    ],
)
def test_bench_bad_input(capsys, argv, match) -> None:
    code, _, err = run_main(capsys, "bench", "--steps", "1", "--rounds", "1", *argv)
    assert_one_error_line(code, err, match)


@pytest.mark.parametrize("conv", ["standard", "pseudo"])
def test_train_pseudo_conv_resnet_and_restore_its_masks(capsys, tmp_path: Path, tiny_yaml, conv):
    """`reclra train --model resnet18 --set model.conv=pseudo`: masks are saved and restored."""
    run = tmp_path / conv
    code, _, err = run_main(
        capsys, "train", "--config", tiny_yaml, "--model", "resnet18", "--set", "model.width=2",
        "--set", "model.stages=[1]", "--set", f"model.conv={conv}", "--set", "model.masks=2",
        "--limit-train", "40", "--epochs", "1", "--out", run, "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads((run / SUMMARY).read_text())
    assert summary["model"] == "resnet18"
    state = torch.load(run / CHECKPOINT, weights_only=True)["rule"]
    masks = {k: v for k, v in state.items() if k.endswith(".masks")}
    assert bool(masks) == (conv == "pseudo")
    code, out, err = run_main(capsys, "eval", run / CHECKPOINT, "--json")
    assert code == 0, err
    assert json.loads(out)["test_error"] == summary["final"]["test_error"]
