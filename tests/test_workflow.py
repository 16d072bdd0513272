"""Tests of the run record (resolved config, run.json, per-epoch lr), strict resume, optimizers,
schedules, early stopping, best.pt and seeded evaluation."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

from reclra.cli import main
from reclra.config import Config, ScheduleConfig, apply_overrides
from reclra.data import Split
from reclra.models import build_model
from reclra.schedules import lr_factor
from reclra.train import (
    BEST,
    CHECKPOINT,
    CONFIG,
    METRICS,
    RUN,
    SUMMARY,
    RunError,
    Trainer,
    evaluate,
    evaluate_checkpoint,
    fit,
    read_checkpoint,
)

pytestmark = pytest.mark.usefixtures("isolated_data", "one_thread")


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / METRICS).read_text().splitlines()]


def results(run: Path) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "seconds"} for m in read_metrics(run)]


def test_training_from_a_run_folders_config_reproduces_it_bit_for_bit(
    tmp_path: Path, tiny_config: Config
) -> None:
    cfg = apply_overrides(tiny_config, ["train.epochs=2", "rule.error_rule=paper"])
    first = Trainer(cfg, tmp_path / "a", progress=False)
    first.run()
    fit(tmp_path / "a" / CONFIG, tmp_path / "b", progress=False)  # a path is a config too
    assert results(tmp_path / "b") == results(tmp_path / "a")
    a = read_checkpoint(tmp_path / "a" / CHECKPOINT)["rule"]
    b = read_checkpoint(tmp_path / "b" / CHECKPOINT)["rule"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "a" / CONFIG).read_text() == (tmp_path / "b" / CONFIG).read_text()


def test_run_json_records_versions_device_and_data_files(
    tmp_path: Path, tiny_config: Config, tiny_idx_dir: Path
) -> None:
    fit(apply_overrides(tiny_config, ["train.epochs=1"]), tmp_path / "r", progress=False)
    record = json.loads((tmp_path / "r" / RUN).read_text())
    (session,) = record["sessions"]
    assert session["torch"] == torch.__version__ and session["device"] == "cpu"
    assert session["reclra"] == "0.1.0" and "git" in session and session["first_epoch"] == 1
    files = {f["name"]: f for f in record["data"]["files"]}
    folder = tiny_idx_dir / "fashion-mnist"
    assert set(files) == {p.name for p in folder.iterdir()}
    for name, entry in files.items():
        assert entry["sha256"] == hashlib.sha256((folder / name).read_bytes()).hexdigest()
    assert record["data"]["sizes"] == {"train": 250, "val": 50, "test": 100}
    assert record["pathway"] == [[3, 1], [3, 2]]  # rec-lra's default on an MLP: skip
    summary = json.loads((tmp_path / "r" / SUMMARY).read_text())
    assert summary["config"]["rule"]["beta"] == 0.1  # hyperparameters in the summary too


def test_resume_refuses_a_changed_learning_rate(tmp_path: Path, tiny_config: Config) -> None:
    cfg = apply_overrides(tiny_config, ["train.epochs=1", "rule.name=dfa"])
    fit(cfg, tmp_path / "r", progress=False)
    changed = apply_overrides(cfg, ["optim.lr=1e-4", "train.epochs=2"])
    with pytest.raises(RunError, match=r"optim.lr: checkpoint 0.01, now 0.0001 \(only train"):
        fit(changed, tmp_path / "r", resume=True, progress=False)
    # the same from the command line: one error line, nothing rewritten
    before = (tmp_path / "r" / CONFIG).read_text()
    code = main(["train", "--resume", "--out", str(tmp_path / "r"), "--lr", "1e-4"])
    assert code == 2
    assert (tmp_path / "r" / CONFIG).read_text() == before


def test_resume_records_what_changed(tmp_path: Path, tiny_config: Config, tiny_idx_dir) -> None:
    cfg = apply_overrides(tiny_config, ["train.epochs=1", "rule.name=dfa"])
    fit(cfg, tmp_path / "r", progress=False)
    moved = apply_overrides(cfg, ["train.epochs=2", "data.download=false"])
    fit(moved, tmp_path / "r", resume=True, progress=False)
    change = {"data.download": [True, False], "train.epochs": [1, 2]}
    assert [m.get("resumed") for m in read_metrics(tmp_path / "r")] == [None, {"changed": change}]
    sessions = json.loads((tmp_path / "r" / RUN).read_text())["sessions"]
    assert [(s["first_epoch"], s["changed"]) for s in sessions] == [(1, {}), (2, change)]


def test_resume_refuses_longer_runs_under_a_schedule_that_spans_the_run(
    tmp_path: Path, tiny_config: Config
) -> None:
    cfg = apply_overrides(tiny_config, ["train.epochs=1", "rule.name=dfa", "schedule.name=cosine"])
    fit(cfg, tmp_path / "r", progress=False)
    with pytest.raises(RunError, match="cosine schedule spans the whole run"):
        fit(apply_overrides(cfg, ["train.epochs=2"]), tmp_path / "r", resume=True)


def test_lr_factor_by_hand() -> None:
    def f(t: int, total: int = 10, floor: float = 0.0, **kw) -> float:
        return lr_factor(ScheduleConfig(**kw), t, total=total, floor=floor)

    assert [f(t) for t in (0, 9)] == [1.0, 1.0]
    assert [f(t, name="step", step_size=2, gamma=0.5) for t in range(5)] == [1, 1, 0.5, 0.5, 0.25]
    assert f(0, name="cosine") == 1.0 and f(5, name="cosine") == pytest.approx(0.5)
    assert f(10, name="cosine", floor=0.1) == pytest.approx(0.1)
    # polynomial decay with warm-up (paper 002: 1e-2 → 1e-5, warm-up 40)
    kw = {"name": "poly", "warmup": 4, "power": 2.0}
    assert [f(t, **kw) for t in range(4)] == [0.2, 0.4, 0.6, 0.8]
    assert f(4, **kw) == 1.0
    assert f(7, floor=1e-3, **kw) == pytest.approx(1e-3 + (1 - 1e-3) * 0.5**2)
    assert f(12, floor=1e-3, **kw) == pytest.approx(1e-3)


def test_per_step_schedule_reaches_every_param_group(tmp_path: Path, tiny_config: Config) -> None:
    cfg = apply_overrides(
        tiny_config,
        ["train.epochs=2", "rule.error_rule=paper", "optim.synapse_lr_scale=0.1",
         "schedule.name=poly", "schedule.per=step", "schedule.warmup=5", "schedule.min_lr=1e-4"],
    )  # fmt: skip
    trainer = Trainer(cfg, tmp_path / "r", progress=False)
    trainer.run()
    metrics = read_metrics(tmp_path / "r")
    steps, total = 25, 50  # 250 examples, batches of 10, 2 epochs
    for m, t0 in zip(metrics, (0, steps), strict=True):
        for t, key in ((t0, "lr"), (t0 + steps - 1, "lr_last")):
            factor = lr_factor(cfg.schedule, t, total=total, floor=1e-4 / 0.01)
            assert m[key] == pytest.approx({"model": 0.01 * factor, "synapses": 0.001 * factor})
    groups = trainer.optimizer.param_groups
    assert [g["name"] for g in groups] == ["model", "synapses"]


@pytest.mark.parametrize(
    ("name", "kind"),
    [("adamw", torch.optim.AdamW), ("rmsprop", torch.optim.RMSprop), ("sgd", torch.optim.SGD)],
)
def test_optimizers(tmp_path: Path, tiny_config: Config, name: str, kind: type) -> None:
    cfg = apply_overrides(
        tiny_config,
        ["train.epochs=1", "rule.name=dfa", f"optim.name={name}", "optim.weight_decay=0.01"],
    )
    trainer = Trainer(cfg, tmp_path / "r", progress=False)
    summary = trainer.run()
    assert type(trainer.optimizer) is kind
    assert trainer.optimizer.param_groups[0]["weight_decay"] == 0.01
    assert summary["final"]["train_error"] < 90


def test_early_stopping_and_best_checkpoint(tmp_path: Path, tiny_config: Config) -> None:
    stop = ["train.epochs=30", "rule.name=backprop", "train.patience=2"]
    cfg = apply_overrides(tiny_config, stop)
    summary = fit(cfg, tmp_path / "r", progress=False)
    metrics = read_metrics(tmp_path / "r")
    best = summary["best"]
    assert summary["stopped_early"] and summary["epochs"] < 30
    assert summary["epochs"] - best["epoch"] == 2
    assert all(m["val_error"] >= best["val_error"] for m in metrics)
    assert read_checkpoint(tmp_path / "r" / BEST)["epoch"] == best["epoch"]
    assert read_checkpoint(tmp_path / "r" / CHECKPOINT)["epoch"] == summary["epochs"]
    result = evaluate_checkpoint(tmp_path / "r" / BEST, device="cpu")
    assert result["val_error"] == best["val_error"]
    # resuming an early-stopped run trains no further
    again = fit(cfg, tmp_path / "r", resume=True, progress=False)
    assert again["epochs"] == summary["epochs"]


def test_seeded_evaluation_of_a_stochastic_net() -> None:
    torch.manual_seed(0)
    net = build_model("mlp", input_shape=(4,), num_classes=3, hidden=[64], activation="bernoulli")
    split = Split(torch.randn(200, 4), torch.arange(200) % 3)
    state = torch.get_rng_state()
    a = evaluate(net, split, samples=2, seed=7)
    b = evaluate(net, split, samples=2, seed=7)
    assert torch.equal(a.y_pred, b.y_pred)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is untouched
    c = evaluate(net, split, samples=2, seed=8)
    assert not torch.equal(a.y_pred, c.y_pred)


def test_eval_of_a_stochastic_run_is_repeatable(tmp_path: Path, tiny_config: Config) -> None:
    cfg = apply_overrides(
        tiny_config, ["train.epochs=1", "model.activation=bernoulli", "train.eval_samples=2"]
    )
    fit(cfg, tmp_path / "r", progress=False)
    a = evaluate_checkpoint(tmp_path / "r" / CHECKPOINT, device="cpu")
    b = evaluate_checkpoint(tmp_path / "r" / CHECKPOINT, device="cpu")
    assert a["test_error"] == b["test_error"]
    assert a["test_error"] == read_metrics(tmp_path / "r")[-1]["test_error"]


def test_fit_takes_a_mapping_and_picks_a_run_folder(
    tmp_path: Path, tiny_config: Config, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    sections = apply_overrides(tiny_config, ["train.epochs=1", "rule.name=fa"]).to_dict()
    summary = fit(sections, progress=False)
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("fa-fashion-mnist-") and summary["out_dir"] == str(
        Path("runs") / run.name
    )
    assert math.isfinite(summary["final"]["test_error"])


def test_batch_norm_statistics_re_estimated_before_evaluation(
    tmp_path: Path, tiny_config: Config
) -> None:
    """train.bn_recalibrate: the checkpoint's running statistics are the plain average over the
    first training batches, and training itself follows the same path as without it."""
    base = [
        "model.name=resnet18", "model.width=2", "model.stages=[1]", "train.epochs=2",
        "rule.name=backprop",
    ]  # fmt: skip
    plain = fit(apply_overrides(tiny_config, base), tmp_path / "plain", progress=False)
    cfg = apply_overrides(tiny_config, [*base, "train.bn_recalibrate=2"])
    fit(cfg, tmp_path / "bn", progress=False)
    a = read_checkpoint(tmp_path / "plain" / CHECKPOINT)["rule"]
    b = read_checkpoint(tmp_path / "bn" / CHECKPOINT)["rule"]
    stats = [k for k in a if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert stats and all(torch.equal(a[k], b[k]) for k in a if k not in stats)  # same weights
    assert int(b[next(k for k in stats if k.endswith("num_batches_tracked"))]) == 2
    assert plain["epochs"] == 2
