"""Hardening: every bad input gets one clear message (exit 2), bugs are reported as bugs (exit 1),
interruptions and divergence lose nothing (docs/robustness.md lists each case and its test)."""

from __future__ import annotations

import json
import signal
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

import reclra.cli
from reclra.cli import main
from reclra.config import Config, ConfigError, apply_overrides, config_to_yaml
from reclra.data import DATASETS, DataError, RawDataset, load_dataset
from reclra.registry import describe_type, matches_type
from reclra.rules import RecLRA
from reclra.train import (
    BEST,
    CHECKPOINT,
    CONFIG,
    METRICS,
    CheckpointError,
    DivergenceError,
    RunError,
    TrainingInterrupted,
    _extremes,
    fit,
    read_checkpoint,
)

pytestmark = pytest.mark.usefixtures("isolated_data", "one_thread")


def run_main(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(code: int, err: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reclra: error: "), err
    return lines[0]


@pytest.fixture
def tiny_yaml(tmp_path: Path, tiny_config: Config) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(config_to_yaml(tiny_config))
    return path


@pytest.fixture
def short_config(tiny_config: Config) -> Config:
    """Two epochs of rec-LRA on the tiny set (25 steps per epoch)."""
    return apply_overrides(tiny_config, ["train.epochs=2", "model.hidden=[16]"])


def weights(run: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(run / CHECKPOINT)["rule"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


# --------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, before any expensive work
# --------------------------------------------------------------------------------------------

BAD_TRAIN_INPUT = [
    (
        ["--set", "rule.beta=abc"],
        ("rule.beta must be a finite number or a list of finite numbers, got 'abc'"),
    ),
    (["--set", "model.hidden=abc"], "model.hidden must be a list of integers, got 'abc'"),
    (
        ["--set", "rule.beta=1e400"],
        ("rule.beta must be a finite number or a list of finite numbers, got inf"),
    ),
    (["--set", "rule.beta=-1"], "rule 'rec-lra': beta must be > 0"),
    (["--set", "model.hidden=[]"], "model.hidden must list at least one width"),
    (["--set", "rule.error_rule=hebb"], "rule.error_rule must be one of 'paper'"),
    (["--set", "optim.momentum=0.9"], "optim.momentum=0.9 does nothing with optim.name=adam"),
    (["--set", "schedule.gamma=0.5"], "schedule.gamma=0.5 does nothing with schedule.name="),
    (["--optimizer", "sgd", "--set", "optim.momentum=1.5"], "optim.momentum must be below 1"),
    (["--lr", "1e6"], "optim.lr must be at most 10"),
    (["--lr", "nan"], "optim.lr must be a finite number"),
    (["--batch-size", "100000"], "data.batch_size=100000 is larger than the training split"),
    (["--set", "rule.pathway=[[3,2],[2,1],[1,2]]"], "the error pathway has a cycle"),
    (["--set", "rule.pathway=[[9,1]]"], "edge 9->1 names a layer outside"),
    (["--set", "rule.pathway=[[3,1]]"], "rule 'rec-lra':"),  # layer 2 never reached
    (["--model", "cnn", "--set", "model.channels=[0]"], "model.channels must be positive"),
    (["--model", "cnn", "--set", "model.channels=[2,2,2,2,2]"], "conv layer 5 on maps (2, 1, 1)"),
    (["--model", "resnet18", "--set", "model.stages=[]"], "stages of >= 1 blocks"),
    (["--data-dir", "/nonexistent"], "data folder /nonexistent does not exist"),
    (["--set", "train.nonfinite=ignore"], "train.nonfinite must be one of stop, skip"),
]


@pytest.mark.parametrize(("argv", "match"), BAD_TRAIN_INPUT)
def test_bad_train_input(capsys, tmp_path: Path, tiny_yaml: Path, argv, match) -> None:
    run = tmp_path / "run"
    code, _, err = run_main(
        capsys, "train", "--config", tiny_yaml, *argv, "--out", run, "--no-progress",
    )  # fmt: skip
    assert match in one_error_line(code, err)
    assert not run.exists()  # nothing written, not even the folder


def test_builder_errors_come_before_the_data(monkeypatch, tmp_path: Path, tiny_config) -> None:
    """A rule's own argument check runs on a dry build, before the data files are read."""

    def no_data(*args: object, **kwargs: object) -> None:
        raise AssertionError("data loaded before the options were checked")

    monkeypatch.setattr("reclra.train.load_dataset", no_data)
    with pytest.raises(ConfigError, match="beta must be > 0"):
        fit(apply_overrides(tiny_config, ["rule.beta=-1"]), tmp_path / "r", progress=False)


def test_option_types_from_annotations() -> None:
    assert matches_type([1, 2], Sequence[int]) and not matches_type("ab", Sequence[int])
    assert matches_type(None, float | None) and not matches_type(float("inf"), float)
    assert not matches_type(True, int) and matches_type(3, float)
    assert matches_type((1, 2), tuple[int, int]) and not matches_type((1,), tuple[int, int])
    assert matches_type({"a": 1}, dict) and not matches_type([], dict)
    assert describe_type(Sequence[float]) == "a list of finite numbers"
    assert describe_type(tuple[int, int]) == "a list of 2 values"
    assert describe_type(str | None) == "a string or null"
    assert describe_type(dict) == "a mapping" and describe_type(Sequence) == "a list"


def test_out_folder_checks(capsys, tmp_path: Path, tiny_yaml: Path) -> None:
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / METRICS).write_text('{"epoch": 1}\n')
    code, _, err = run_main(capsys, "train", "--config", tiny_yaml, "--out", stray)
    assert "is not empty (metrics.jsonl) and holds no run to resume" in one_error_line(code, err)
    assert (stray / METRICS).read_text() == '{"epoch": 1}\n'  # the old metrics are kept
    (tmp_path / "file").write_text("x")
    code, _, err = run_main(capsys, "train", "--config", tiny_yaml, "--out", tmp_path / "file")
    assert "is a file, not a folder" in one_error_line(code, err)
    code, _, err = run_main(capsys, "train", "--config", tiny_yaml, "--out", "/proc/x/run")
    assert "cannot write the run folder /proc/x/run" in one_error_line(code, err)
    code, _, err = run_main(capsys, "train", "--config", tiny_yaml, "--resume", "--out", stray)
    assert "nothing to resume" in one_error_line(code, err)


def test_overwrite_writes_into_a_stray_folder(tmp_path: Path, tiny_config) -> None:
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    fit(apply_overrides(tiny_config, ["train.epochs=1"]), stray, overwrite=True, progress=False)
    assert (stray / "notes.txt").read_text() == "mine" and (stray / CHECKPOINT).is_file()


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "is empty (0 bytes)"),
        (b"model:\n  name: mlp\n", "is not a checkpoint"),
        (b"PK\x03\x04" + b"\x00" * 100, "is truncated or corrupt"),
    ],
)
def test_bad_checkpoint_files(capsys, tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    code, _, err = run_main(capsys, "eval", path)
    assert match in one_error_line(code, err)


@pytest.fixture
def finished_run(tmp_path: Path, short_config: Config) -> Path:
    fit(short_config, tmp_path / "done", progress=False)
    return tmp_path / "done"


def test_truncated_newer_and_foreign_checkpoints(capsys, tmp_path: Path, finished_run) -> None:
    data = (finished_run / CHECKPOINT).read_bytes()
    for cut in (len(data) // 2, len(data) - 30):
        (tmp_path / "cut.pt").write_bytes(data[:cut])
        code, _, err = run_main(capsys, "eval", tmp_path / "cut.pt")
        assert "is truncated or corrupt" in one_error_line(code, err)
    ckpt = torch.load(finished_run / CHECKPOINT, weights_only=True)
    torch.save({**ckpt, "format": 99}, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match="format 99, newer than this reclra reads"):
        read_checkpoint(tmp_path / "new.pt")
    ckpt["config"]["model"]["hidden"] = [32]
    torch.save(ckpt, tmp_path / "other.pt")
    code, _, err = run_main(capsys, "eval", tmp_path / "other.pt")
    assert "state does not fit the configured model" in one_error_line(code, err)


def test_nan_inputs_are_refused(monkeypatch) -> None:
    def nan_set(*, data_dir: object = None, download: bool = True) -> RawDataset:
        x = torch.rand(20, 4).numpy()
        x[3, 1] = float("nan")
        y = (torch.arange(20) % 2).numpy()
        return RawDataset(
            x, y, x[:5], y[:5], num_classes=2, input_shape=(4,), source="mem", scale=1.0
        )

    monkeypatch.setitem(DATASETS._builders, "nanset", nan_set)
    monkeypatch.setitem(DATASETS._fixed, "nanset", {})
    with pytest.raises(DataError, match="nanset: 1 training examples of mem hold NaN"):
        load_dataset("nanset", val_size=0)


# --------------------------------------------------------------------------------------------
# Bugs are bugs; --debug; broken pipes
# --------------------------------------------------------------------------------------------


def test_a_library_bug_is_reported_as_a_bug(capsys, monkeypatch) -> None:
    def broken() -> None:
        raise ValueError("some internal invariant")

    monkeypatch.setattr(reclra.cli, "_print_list", broken)
    code, _, err = run_main(capsys, "list")
    assert code == 1
    assert "Traceback" in err and "ValueError: some internal invariant" in err
    assert "this is a bug in reclra" in err.strip().splitlines()[-1]


def test_debug_shows_the_traceback(capsys, tmp_path: Path) -> None:
    for argv in (["--debug", "eval", tmp_path / "no.pt"], ["eval", tmp_path / "no.pt", "--debug"]):
        code, _, err = run_main(capsys, *argv)
        assert code == 2 and "Traceback" in err and "CheckpointError" in err
        assert err.strip().splitlines()[-1].startswith("reclra: error: checkpoint")


def test_broken_pipe_ends_quietly(capsys, monkeypatch) -> None:
    def closed() -> None:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(reclra.cli, "_print_list", closed)
    code, _, err = run_main(capsys, "list")
    assert code == 141 and err == ""


# --------------------------------------------------------------------------------------------
# Interruptions: SIGINT/SIGTERM save the step reached; resuming gives the same weights
# --------------------------------------------------------------------------------------------


def _signal_at(monkeypatch, call: int, signum: int) -> None:
    """Send ``signum`` to this process during the ``call``-th ``compute_grads`` of rec-LRA."""
    original = RecLRA.compute_grads
    calls = [0]

    def compute_grads(self, x, y):
        calls[0] += 1
        if calls[0] == call:
            signal.raise_signal(signum)
        return original(self, x, y)

    monkeypatch.setattr(RecLRA, "compute_grads", compute_grads)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_epoch_saves_and_resume_is_exact(
    capsys, monkeypatch, tmp_path: Path, short_config: Config, finished_run: Path, signum, code
) -> None:
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(config_to_yaml(short_config))
    run = tmp_path / "run"
    _signal_at(monkeypatch, 30, signum)  # step 5 of epoch 2 (25 steps per epoch)
    got, _, err = run_main(capsys, "train", "--config", cfg_file, "--out", run, "--no-progress")
    assert got == code
    name = signal.Signals(signum).name
    assert f"{name}: stopped; step 5 of epoch 2 is saved in {run / CHECKPOINT}" in err
    ckpt = read_checkpoint(run / CHECKPOINT)
    assert ckpt["epoch"] == 1 and ckpt["position"]["step"] == 5
    monkeypatch.undo()
    got, _, err = run_main(capsys, "train", "--resume", "--out", run, "--no-progress")
    assert got == 0, err
    assert_same_weights(run, finished_run)
    done = [json.loads(line) for line in (run / METRICS).read_text().splitlines()]
    ref = [json.loads(line) for line in (finished_run / METRICS).read_text().splitlines()]
    assert [m["loss"] for m in done] == [m["loss"] for m in ref]


def test_signal_at_an_epoch_end_and_a_second_signal(
    monkeypatch, tmp_path: Path, short_config: Config
) -> None:
    epochs = []

    def on_epoch(record: dict) -> None:
        epochs.append(record["epoch"])
        signal.raise_signal(signal.SIGTERM)

    with pytest.raises(TrainingInterrupted) as info:
        fit(short_config, tmp_path / "a", progress=False, on_epoch=on_epoch)
    assert (info.value.epoch, info.value.step, info.value.signal) == (1, 0, "SIGTERM")
    assert epochs == [1] and read_checkpoint(tmp_path / "a" / CHECKPOINT)["position"] is None
    original = RecLRA.compute_grads
    calls = [0]

    def twice(self, x, y):  # a second signal before the step boundary stops at once
        calls[0] += 1
        if calls[0] == 3:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
        return original(self, x, y)

    monkeypatch.setattr(RecLRA, "compute_grads", twice)
    before = signal.getsignal(signal.SIGINT)  # the default handler, or SIG_IGN in a background job
    with pytest.raises(TrainingInterrupted) as info:
        fit(short_config, tmp_path / "b", progress=False)
    assert info.value.epoch is None and not (tmp_path / "b" / CHECKPOINT).exists()
    assert signal.getsignal(signal.SIGINT) is before  # restored


def test_resume_a_run_stopped_before_its_first_checkpoint(
    tmp_path: Path, short_config: Config, finished_run: Path
) -> None:
    run = tmp_path / "early"
    run.mkdir()
    (run / CONFIG).write_text((finished_run / CONFIG).read_text())
    fit(short_config, run, resume=True, progress=False)
    assert_same_weights(run, finished_run)
    with pytest.raises(RunError, match=r"cannot resume .*config.yaml: the config differs"):
        (run / CHECKPOINT).unlink()
        fit(apply_overrides(short_config, ["optim.lr=0.5"]), run, resume=True, progress=False)


# --------------------------------------------------------------------------------------------
# Divergence guard
# --------------------------------------------------------------------------------------------


def _poison(monkeypatch, call: int, how: str) -> None:
    """Make the ``call``-th step non-finite: a NaN input, or an infinite direction."""
    original = RecLRA.compute_grads
    calls = [0]

    def compute_grads(self, x, y):
        calls[0] += 1
        if calls[0] == call and how == "input":
            x = x.clone()
            x[0, 0] = float("nan")
        stats = original(self, x, y)
        if calls[0] == call and how == "grad":
            self.net.layers[0].op.weight.grad[0, 0] = float("inf")
        if calls[0] == call and how == "weight":
            with torch.no_grad():
                self.net.layers[1].op.bias[0] = float("nan")
        return stats

    monkeypatch.setattr(RecLRA, "compute_grads", compute_grads)


@pytest.mark.parametrize(
    ("how", "match"),
    [
        ("input", "epoch 2, step 2: the loss is NaN"),
        ("grad", "epoch 2, step 2: the update of net.layers.0.op.weight is infinite"),
        ("weight", "epoch 2, step 2: weight net.layers.1.op.bias .* is NaN"),
    ],
)
def test_divergence_stops_and_keeps_the_last_good_checkpoint(
    capsys, monkeypatch, tmp_path: Path, short_config: Config, how: str, match: str
) -> None:
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(config_to_yaml(short_config))
    run = tmp_path / "run"
    _poison(monkeypatch, 27, how)
    code, _, err = run_main(capsys, "train", "--config", cfg_file, "--out", run, "--no-progress")
    line = one_error_line(code, err)
    assert "training diverged at" in line
    with pytest.raises(DivergenceError, match=match):
        raise DivergenceError(line)
    assert f"the last good checkpoint (epoch 1) is kept in {run / CHECKPOINT}" in line
    assert "rule.clip=1.0" in line and "smaller β" in line and "--lr" in line
    assert ("train.nonfinite=skip" in line) == (how != "weight")
    ckpt = read_checkpoint(run / CHECKPOINT)
    assert ckpt["epoch"] == 1 and all(t.isfinite().all() for t in ckpt["rule"].values())
    assert (run / BEST).is_file() and len((run / METRICS).read_text().splitlines()) == 1


@pytest.mark.parametrize(
    ("bad", "finite"),
    [
        (None, True),
        (3.0e38, True),  # huge but finite: no overflow (a 2-norm would overflow)
        (float("nan"), False),
        (float("inf"), False),
        (-float("inf"), False),
    ],
)
def test_the_guards_extremes_are_finite_exactly_when_every_tensor_is(bad, finite) -> None:
    tensors = [torch.randn(5, 7), torch.zeros(0), torch.randn(300, dtype=torch.float64)]
    if bad is not None:
        tensors[2][123] = bad
    values = _extremes(tensors)
    assert bool(torch.stack([v.float() for v in values]).isfinite().all()) == finite
    assert _extremes([]) == []


def test_skip_mode_skips_the_bad_batch(monkeypatch, tmp_path: Path, short_config) -> None:
    _poison(monkeypatch, 27, "input")
    cfg = apply_overrides(short_config, ["train.nonfinite=skip"])
    summary = fit(cfg, tmp_path / "run", progress=False)
    metrics = [json.loads(line) for line in (tmp_path / "run" / METRICS).read_text().splitlines()]
    assert [m.get("skipped_batches") for m in metrics] == [None, 1]
    assert summary["epochs"] == 2 and all(
        t.isfinite().all() for t in weights(tmp_path / "run").values()
    )


def test_a_real_divergence_is_caught(tmp_path: Path, tiny_config: Config) -> None:
    """rec-LRA with relu, β = 10 and SGD at lr 10 overflows: the guard names it."""
    cfg = apply_overrides(
        tiny_config,
        ["optim.name=sgd", "optim.lr=10", "rule.error_rule=paper", "rule.beta=10",
         "model.activation=relu", "train.epochs=3"],
    )  # fmt: skip
    with pytest.raises(DivergenceError, match=r"training diverged at epoch \d+, step \d+: "):
        fit(cfg, tmp_path / "run", progress=False)
