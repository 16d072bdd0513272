"""Tests of reclra.train and reclra.analysis: runs, outputs, checkpoints, exact resume."""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from reclra.analysis import classification_report, plot_comparison, plot_learning_curves
from reclra.config import Config, ConfigError, apply_overrides
from reclra.data import Split, load_dataset
from reclra.models import build_model
from reclra.rules import RULES, Backprop, build_rule
from reclra.train import (
    BEST,
    CHECKPOINT,
    CONFIG,
    CURVE,
    METRICS,
    RUN,
    SUMMARY,
    CheckpointError,
    RunError,
    Trainer,
    TrainingInterrupted,
    count_parameters,
    evaluate,
    evaluate_checkpoint,
    fit,
    load_checkpoint,
    read_checkpoint,
    resolve_config,
)

pytestmark = pytest.mark.usefixtures("isolated_data", "one_thread")

REQUIRED_KEYS = {
    "epoch",
    "train_error",
    "val_error",
    "test_error",
    "seconds",
    "loss",
    "depth",
    "error_norms",
    "test_top5_error",
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / METRICS).read_text().splitlines()]


def without_seconds(metrics: list[dict]) -> list[dict]:
    """The records without their wall-clock seconds and resume notes (not results)."""
    return [{k: v for k, v in m.items() if k not in ("seconds", "resumed")} for m in metrics]


def assert_same_state(a: dict, b: dict) -> None:
    """Exact equality of two (nested) state dicts."""
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        elif isinstance(a[key], dict):
            assert_same_state(a[key], b[key])
        else:
            assert a[key] == b[key], key


# --------------------------------------------------------------------------------------------
# A full run and its outputs
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, tiny_idx_dir: Path) -> tuple:
    """One 3-epoch rec-LRA run (chain pathway) on the tiny set, shared by the output tests."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECLRA_NO_DOWNLOAD", "1")
        cfg = apply_overrides(
            Config(),
            [
                "model.hidden=[32, 32]",
                "rule.pathway=chain",  # pinned: the tests count its synapses and depth
                "rule.error_rule=paper",
                "optim.lr=0.01",
                f"data.data_dir={tiny_idx_dir}",
                "data.val_size=50",
                "data.batch_size=10",
                "train.epochs=3",
                "train.threads=1",
                "train.device=cpu",
            ],
        )
        run = tmp_path_factory.mktemp("run")
        records: list[dict] = []
        before = runtime_settings()
        during: list[tuple] = []

        def on_epoch(record: dict) -> None:
            records.append(record)
            during.append(runtime_settings())

        summary = fit(cfg, run, progress=False, on_epoch=on_epoch)
    return cfg, run, summary, records, (before, during[0], runtime_settings())


def runtime_settings() -> tuple[int, bool]:
    return torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()


def test_run_writes_every_output(finished_run: tuple) -> None:
    _, run, *_ = finished_run
    for name in (CONFIG, METRICS, SUMMARY, CHECKPOINT, BEST, RUN, CURVE):
        assert (run / name).is_file(), name
    assert (run / CURVE).read_bytes()[:8] == PNG_MAGIC
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]


def test_config_yaml_is_the_resolved_config(finished_run: tuple) -> None:
    from reclra.config import load_config

    cfg, run, *_ = finished_run
    saved = load_config(run / CONFIG)
    assert saved == resolve_config(cfg)
    # every option of the model and the rule is written out, defaults filled in
    assert {"hidden", "activation", "init", "init_std"} <= saved.model.keys()
    assert {"pathway", "beta", "gamma", "error_rule", "e_init_std", "executor"} <= saved.rule.keys()
    assert saved.rule["pathway"] == "chain" and saved.rule["beta"] == 0.1


def test_metrics_has_one_line_per_epoch(finished_run: tuple) -> None:
    _, run, _, records, _ = finished_run
    metrics = read_metrics(run)
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    assert metrics == records  # on_epoch saw the same records
    for m in metrics:
        assert m.keys() >= REQUIRED_KEYS
        assert set(m["error_norms"]) == {"1", "2", "3"}
        assert m["depth"] == 2.0  # rec-LRA on a 3-layer chain: pathway depth L - 1
        assert m["seconds"] > 0
        assert math.isfinite(m["loss"]) and m["loss"] > 0
        for split in ("train", "val", "test"):
            assert 0 <= m[f"{split}_top5_error"] <= m[f"{split}_error"] <= 100


def test_training_learns(finished_run: tuple, tiny_idx_dir: Path) -> None:
    cfg, _, summary, records, _ = finished_run
    # The untrained network (same seed, same init) is near chance on the tiny set ...
    torch.manual_seed(cfg.train.seed)
    ds = load_dataset("fashion-mnist", data_dir=tiny_idx_dir, val_size=50)
    net = build_model("mlp", input_shape=ds.input_shape, num_classes=10, hidden=[32, 32])
    assert evaluate(net, ds.test).error >= 60.0
    # ... and three epochs bring it well below chance (90 %).
    assert summary["final"]["test_error"] <= 15.0
    assert summary["final"]["train_error"] <= 15.0
    assert records[-1]["loss"] < records[0]["loss"]


def test_summary(finished_run: tuple) -> None:
    _, run, summary, records, _ = finished_run
    on_disk = json.loads((run / SUMMARY).read_text())
    assert on_disk == summary
    assert summary["epochs"] == 3
    assert summary["final"]["test_error"] == records[-1]["test_error"]
    best = min(records, key=lambda m: (m["val_error"], m["epoch"]))
    assert summary["best"]["by"] == "val_error"
    assert summary["best"]["epoch"] == best["epoch"]
    assert summary["best"]["test_error"] == best["test_error"]
    assert summary["seconds_per_epoch"] == sorted(m["seconds"] for m in records)[1]
    assert summary["parameters"]["model"] == 784 * 32 + 32 + 32 * 32 + 32 + 32 * 10 + 10
    assert summary["parameters"]["learnable_synapses"] == 10 * 32 + 32 * 32  # E_{3→2}, E_{2→1}
    assert summary["dataset"]["name"] == "fashion-mnist"
    assert summary["dataset"]["sizes"] == {"train": 250, "val": 50, "test": 100}
    assert summary["dataset"]["source"].endswith("fashion-mnist")
    assert summary["device"] == "cpu"
    assert summary["versions"]["torch"] == torch.__version__


def test_summary_report_is_consistent_with_its_confusion_matrix(finished_run: tuple) -> None:
    _, _, summary, *_ = finished_run
    report = summary["test_report"]
    matrix = np.array(report["confusion_matrix"])
    assert matrix.shape == (10, 10)
    assert matrix.sum() == 100
    correct = np.diag(matrix)
    assert 100.0 * (1 - correct.sum() / 100) == pytest.approx(summary["final"]["test_error"])
    for c, row in enumerate(report["per_class"]):
        predicted, actual = matrix[:, c].sum(), matrix[c, :].sum()
        precision = correct[c] / predicted if predicted else 0.0
        recall = correct[c] / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        assert row["class"] == c
        assert row["support"] == actual
        assert row["precision"] == pytest.approx(precision)
        assert row["recall"] == pytest.approx(recall)
        assert row["f1"] == pytest.approx(f1)
    for key in ("precision", "recall", "f1"):
        mean = np.mean([row[key] for row in report["per_class"]])
        assert report["macro"][key] == pytest.approx(mean)


def test_checkpoint_loads_with_weights_only(finished_run: tuple) -> None:
    cfg, run, _, records, _ = finished_run
    ckpt = torch.load(run / CHECKPOINT, weights_only=True)
    assert ckpt["epoch"] == 3
    assert ckpt["config"] == resolve_config(cfg).to_dict()
    assert ckpt["metrics"] == records
    assert ckpt["data_info"]["input_shape"] == [1, 28, 28]
    assert set(ckpt["rng"]) == {"torch", "cuda", "numpy", "python"}
    assert {"net.layers.0.op.weight", "E.3->2", "E.2->1"} <= set(ckpt["rule"])
    assert ckpt["optim"]["state"]  # Adam moments are saved


def test_load_checkpoint_rebuilds_the_trained_rule(finished_run: tuple, tiny_idx_dir) -> None:
    cfg, run, summary, *_ = finished_run
    loaded_cfg, rule = load_checkpoint(run / CHECKPOINT)
    assert loaded_cfg == resolve_config(cfg)
    assert type(rule).__name__ == "RecLRA"
    assert not rule.training
    ds = load_dataset("fashion-mnist", data_dir=tiny_idx_dir, val_size=50)
    assert evaluate(rule, ds.test).error == summary["final"]["test_error"]


def test_evaluate_checkpoint(finished_run: tuple) -> None:
    _, run, summary, *_ = finished_run
    result = evaluate_checkpoint(run / CHECKPOINT, device="cpu")
    assert result["test_error"] == summary["final"]["test_error"]
    assert result["val_error"] == summary["final"]["val_error"]
    assert result["test_top5_error"] == summary["final"]["test_top5_error"]
    assert result["test_report"] == summary["test_report"]


def test_evaluate_checkpoint_on_a_dataset_of_another_shape(finished_run: tuple) -> None:
    _, run, *_ = finished_run
    with pytest.raises(ValueError, match="dataset 'digits' has inputs of size 64"):
        evaluate_checkpoint(run / CHECKPOINT, dataset="digits", device="cpu")


def test_runtime_settings_apply_during_the_run_only(finished_run: tuple) -> None:
    before, during, after = finished_run[4]
    assert during == (1, True)  # train.threads=1, train.deterministic=true
    assert after == before


def small_model_for(rule: str) -> dict:
    """A small plain MLP, or a residual one for the rules that need blocks (e.g. rec-lra-bp)."""
    for model in ({"name": "mlp", "hidden": [32, 32]}, {"name": "mlp-resnet", "width": 32}):
        options = {k: v for k, v in model.items() if k != "name"}
        net = build_model(model["name"], input_shape=(1, 28, 28), num_classes=10, **options)
        with contextlib.suppress(ValueError):
            build_rule(rule, net)
            return model
    pytest.fail(f"rule {rule!r} accepts neither a plain nor a residual MLP")


@pytest.mark.parametrize("rule", RULES.names())
def test_every_registered_rule_trains_and_reloads(tmp_path: Path, tiny_config, rule: str) -> None:
    model = small_model_for(rule)
    cfg = apply_overrides(
        replace(tiny_config, model=model), [f"rule.name={rule}", "train.epochs=1"]
    )
    summary = fit(cfg, tmp_path / "run", progress=False)
    (record,) = read_metrics(tmp_path / "run")
    assert summary["rule"] == rule
    assert math.isfinite(record["loss"]) and math.isfinite(record["depth"])
    assert record["error_norms"]
    _, rule_again = load_checkpoint(tmp_path / "run" / CHECKPOINT)
    ds = load_dataset("fashion-mnist", data_dir=cfg.data.data_dir, val_size=50)
    assert evaluate(rule_again, ds.test).error == summary["final"]["test_error"]


# --------------------------------------------------------------------------------------------
# Exact resume
# --------------------------------------------------------------------------------------------


def resume_config(cfg: Config, rule: str, *extra: str) -> Config:
    return apply_overrides(cfg, [f"rule.name={rule}", *extra])


@pytest.mark.parametrize(
    ("rule", "extra"),
    [
        ("rec-lra", ()),
        ("backprop", ()),
        # Bernoulli units sample in training and in evaluation: the RNG state must be restored.
        ("rec-lra", ("model.activation=bernoulli",)),
    ],
    ids=["rec-lra", "backprop", "rec-lra-bernoulli"],
)
def test_resume_reproduces_an_uninterrupted_run(
    tmp_path: Path, tiny_config: Config, rule: str, extra: tuple[str, ...]
) -> None:
    cfg = resume_config(tiny_config, rule, *extra)
    straight = Trainer(cfg, tmp_path / "straight", progress=False)
    straight.run()

    short = apply_overrides(cfg, ["train.epochs=1"])
    fit(short, tmp_path / "resumed", progress=False)
    # A crash after writing metrics but before the checkpoint leaves a stale line behind.
    with open(tmp_path / "resumed" / METRICS, "a") as handle:
        handle.write(json.dumps({"epoch": 2, "stale": True}) + "\n")
    resumed = Trainer(cfg, tmp_path / "resumed", resume=True, progress=False)
    resumed.run()

    assert_same_state(straight.rule.state_dict(), resumed.rule.state_dict())
    assert_same_state(straight.optimizer.state_dict(), resumed.optimizer.state_dict())
    assert without_seconds(read_metrics(tmp_path / "resumed")) == without_seconds(
        read_metrics(tmp_path / "straight")
    )
    # the resume's first epoch says what the resume changed
    notes = [m.get("resumed") for m in read_metrics(tmp_path / "resumed")]
    assert notes == [None, {"changed": {"train.epochs": [1, 3]}}, None]
    a = torch.load(tmp_path / "straight" / CHECKPOINT, weights_only=True)
    b = torch.load(tmp_path / "resumed" / CHECKPOINT, weights_only=True)
    assert_same_state(a["rule"], b["rule"])
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])


def test_interrupt_then_resume(tmp_path: Path, tiny_config: Config, monkeypatch) -> None:
    cfg = resume_config(tiny_config, "backprop")
    straight = Trainer(cfg, tmp_path / "straight", progress=False)
    straight.run()

    calls = {"n": 0}
    original = Backprop.compute_grads

    def interrupt_in_epoch_2(self, x, y):
        calls["n"] += 1
        if calls["n"] == 25 + 3:  # 250 examples / batches of 10: 25 steps per epoch
            raise KeyboardInterrupt
        return original(self, x, y)

    monkeypatch.setattr(Backprop, "compute_grads", interrupt_in_epoch_2)
    with pytest.raises(TrainingInterrupted) as info:
        fit(cfg, tmp_path / "run", progress=False)
    assert info.value.epoch == 1
    assert info.value.checkpoint == tmp_path / "run" / CHECKPOINT
    assert read_checkpoint(info.value.checkpoint)["epoch"] == 1
    monkeypatch.setattr(Backprop, "compute_grads", original)

    resumed = Trainer(cfg, tmp_path / "run", resume=True, progress=False)
    resumed.run()
    assert_same_state(straight.rule.state_dict(), resumed.rule.state_dict())
    assert [m["epoch"] for m in read_metrics(tmp_path / "run")] == [1, 2, 3]


def test_checkpoint_every(tmp_path: Path, tiny_config: Config, monkeypatch) -> None:
    cfg = apply_overrides(tiny_config, ["train.checkpoint_every=2", "rule.name=dfa"])
    saved: list[int] = []
    original = Trainer._save_checkpoint

    def spy(self, epoch, name=CHECKPOINT):
        if name == CHECKPOINT:
            saved.append(epoch)
        original(self, epoch, name)

    monkeypatch.setattr(Trainer, "_save_checkpoint", spy)
    fit(cfg, tmp_path / "run", progress=False)
    assert saved == [2, 3]  # every 2 epochs, and at the end


def test_resuming_a_finished_run_only_rewrites_the_summary(tmp_path, tiny_config) -> None:
    cfg = apply_overrides(tiny_config, ["train.epochs=1", "rule.name=fa"])
    first = fit(cfg, tmp_path / "run", progress=False)
    (tmp_path / "run" / SUMMARY).unlink()
    again = fit(cfg, tmp_path / "run", resume=True, progress=False)
    assert again["final"] == first["final"]
    assert again["test_report"] == first["test_report"]
    assert len(read_metrics(tmp_path / "run")) == 1


def test_without_a_validation_split(tmp_path: Path, tiny_config: Config) -> None:
    cfg = apply_overrides(tiny_config, ["data.val_size=0", "train.epochs=2", "rule.name=dfa"])
    summary = fit(cfg, tmp_path / "run", progress=False)
    assert [m["val_error"] for m in read_metrics(tmp_path / "run")] == [None, None]
    assert summary["best"]["by"] == "train_error"
    assert summary["dataset"]["sizes"]["val"] == 0


# --------------------------------------------------------------------------------------------
# Run-folder rules
# --------------------------------------------------------------------------------------------


@pytest.fixture
def one_epoch_run(tmp_path: Path, tiny_config: Config) -> tuple[Config, Path]:
    cfg = apply_overrides(tiny_config, ["train.epochs=1", "rule.name=dfa"])
    fit(cfg, tmp_path / "run", progress=False)
    return cfg, tmp_path / "run"


def test_refuses_to_overwrite_a_run(one_epoch_run: tuple) -> None:
    cfg, run = one_epoch_run
    before = (run / CHECKPOINT).read_bytes()
    with pytest.raises(RunError, match=r"already holds a run .*--resume / --overwrite"):
        fit(cfg, run, progress=False)
    assert (run / CHECKPOINT).read_bytes() == before


def test_overwrite_starts_afresh(one_epoch_run: tuple) -> None:
    cfg, run = one_epoch_run
    (run / METRICS).write_text('{"epoch": 1, "old": true}\n')
    summary = fit(apply_overrides(cfg, ["train.epochs=2"]), run, overwrite=True, progress=False)
    assert [m["epoch"] for m in read_metrics(run)] == [1, 2]
    assert "old" not in read_metrics(run)[0]
    assert summary["epochs"] == 2


def test_resume_and_overwrite_exclude_each_other(one_epoch_run: tuple) -> None:
    cfg, run = one_epoch_run
    with pytest.raises(RunError, match="exclude each other"):
        fit(cfg, run, resume=True, overwrite=True)


def test_nothing_to_resume(tmp_path: Path, tiny_config: Config) -> None:
    with pytest.raises(RunError, match="nothing to resume"):
        fit(tiny_config, tmp_path / "empty", resume=True)
    assert not (tmp_path / "empty").exists()


def test_resume_checks_the_config(one_epoch_run: tuple) -> None:
    cfg, run = one_epoch_run
    changed = apply_overrides(cfg, ["model.hidden=[16]", "data.batch_size=5", "train.epochs=2"])
    with pytest.raises(RunError, match=r"model.hidden: checkpoint \[32, 32\], now \[16\]"):
        fit(changed, run, resume=True, progress=False)
    with pytest.raises(RunError, match=r"data.batch_size: checkpoint 10, now 5"):
        fit(changed, run, resume=True, progress=False)
    # where the files come from may change
    moved = apply_overrides(cfg, ["data.download=false", "train.epochs=2"])
    assert fit(moved, run, resume=True, progress=False)["epochs"] == 2


def test_resume_beyond_epochs(tmp_path: Path, tiny_config: Config) -> None:
    cfg = apply_overrides(tiny_config, ["train.epochs=2", "rule.name=dfa"])
    fit(cfg, tmp_path / "run", progress=False)
    with pytest.raises(RunError, match=r"at epoch 2, beyond train.epochs=1"):
        fit(apply_overrides(cfg, ["train.epochs=1"]), tmp_path / "run", resume=True)


def test_checkpoint_state_that_does_not_fit_its_config(one_epoch_run: tuple) -> None:
    _, run = one_epoch_run
    ckpt = torch.load(run / CHECKPOINT, weights_only=True)
    ckpt["config"]["model"]["hidden"] = [16, 16]
    torch.save(ckpt, run / CHECKPOINT)
    with pytest.raises(CheckpointError, match="state does not fit the configured model"):
        load_checkpoint(run / CHECKPOINT)


def test_corrupt_checkpoint(one_epoch_run: tuple) -> None:
    cfg, run = one_epoch_run
    (run / CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
        fit(cfg, run, resume=True)
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
        load_checkpoint(run / CHECKPOINT)
    torch.save({"epoch": 1}, run / CHECKPOINT)
    with pytest.raises(CheckpointError, match=r"not a reclra checkpoint .*missing rule"):
        load_checkpoint(run / CHECKPOINT)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(run / "nope.pt")


# --------------------------------------------------------------------------------------------
# Bad input surfaces as clear exceptions, before anything is written
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "error", "match"),
    [
        ("rule.name=nope", ValueError, "unknown rule 'nope'; choose from"),
        ("model.name=nope", ValueError, "unknown model 'nope'; choose from"),
        ("model.bogus=1", ValueError, "unknown option.* bogus for model 'mlp'"),
        ("model.sizes=[10, 5, 10]", ValueError, "model.sizes .* does not fit the data"),
        ("model.hidden=32", ConfigError, "model.hidden must be a list of integers, got 32"),
        (
            "rule.beta=abc",
            ConfigError,
            ("rule.beta must be a finite number or a list of finite numbers, got 'abc'"),
        ),
        ("data.dataset=nope", ValueError, "unknown dataset 'nope'"),
    ],
)
def test_bad_input(tmp_path: Path, tiny_config: Config, override, error, match) -> None:
    cfg = apply_overrides(tiny_config, [override])
    with pytest.raises(error, match=match):
        fit(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / CONFIG).exists()


def test_unavailable_cuda(tmp_path: Path, tiny_config: Config) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        fit(apply_overrides(tiny_config, ["train.device=cuda"]), tmp_path / "run")


# --------------------------------------------------------------------------------------------
# evaluate, count_parameters, analysis
# --------------------------------------------------------------------------------------------


def test_evaluate_counts_errors_and_top5() -> None:
    torch.manual_seed(0)
    net = build_model("mlp", input_shape=(4,), num_classes=7, hidden=[5])
    x = torch.randn(23, 4)
    proba = torch.softmax(net(x), dim=1)
    y = torch.arange(23) % 7
    ev = evaluate(net, Split(x, y), batch_size=5)
    pred = proba.argmax(1)
    assert ev.error == pytest.approx(100.0 * (pred != y).float().mean().item())
    in_top5 = (proba.topk(5, dim=1).indices == y[:, None]).any(1)
    assert ev.top5_error == pytest.approx(100.0 * (~in_top5).float().mean().item())
    assert torch.equal(ev.y_pred, pred)
    assert torch.equal(ev.y_true, y)


def test_evaluate_without_top5_and_on_an_empty_split() -> None:
    net = build_model("mlp", input_shape=(4,), num_classes=3, hidden=[5])
    assert (
        evaluate(net, Split(torch.randn(6, 4), torch.zeros(6, dtype=torch.long))).top5_error is None
    )
    empty = evaluate(net, Split(torch.empty(0, 4), torch.empty(0, dtype=torch.long)))
    assert (empty.error, empty.top5_error, len(empty.y_pred)) == (None, None, 0)


def test_evaluate_restores_training_mode() -> None:
    net = build_model("mlp", input_shape=(4,), num_classes=3, hidden=[5])
    net.train()
    evaluate(net, Split(torch.randn(6, 4), torch.zeros(6, dtype=torch.long)))
    assert net.training


def test_evaluate_averages_stochastic_nets() -> None:
    torch.manual_seed(0)
    net = build_model("mlp", input_shape=(4,), num_classes=3, hidden=[64], activation="bernoulli")
    assert net.stochastic
    split = Split(torch.randn(50, 4), torch.arange(50) % 3)
    torch.manual_seed(1)
    a = evaluate(net, split, samples=100)
    torch.manual_seed(2)
    b = evaluate(net, split, samples=100)
    torch.manual_seed(1)
    c = evaluate(net, split, samples=1)
    torch.manual_seed(2)
    d = evaluate(net, split, samples=1)
    # many samples give (nearly) the same predictions; single samples do not
    assert (a.y_pred != b.y_pred).sum() < (c.y_pred != d.y_pred).sum()


def test_count_parameters() -> None:
    net = build_model("mlp", input_shape=(4,), num_classes=3, hidden=[5])
    model = 4 * 5 + 5 + 5 * 3 + 3
    assert count_parameters(build_rule("backprop", net)) == {
        "model": model,
        "learnable_synapses": 0,
        "fixed_feedback": 0,
    }
    net = build_model("mlp", input_shape=(4,), num_classes=3, hidden=[5])
    assert count_parameters(build_rule("dfa", net))["fixed_feedback"] == 5 * 3
    net = build_model("mlp", input_shape=(4,), num_classes=3, hidden=[5])
    counts = count_parameters(build_rule("rec-lra", net))  # fixed synapses by default
    assert (counts["learnable_synapses"], counts["fixed_feedback"]) == (0, 5 * 3)
    learned = count_parameters(build_rule("rec-lra", net, error_rule="transpose"))
    assert (learned["learnable_synapses"], learned["fixed_feedback"]) == (5 * 3, 0)


def test_classification_report_by_hand() -> None:
    y_true = [0, 0, 1, 1, 1, 2]
    y_pred = torch.tensor([0, 1, 1, 1, 0, 0])
    report = classification_report(y_true, y_pred, num_classes=4)
    assert report["confusion_matrix"] == [
        [1, 1, 0, 0],
        [1, 2, 0, 0],
        [1, 0, 0, 0],
        [0, 0, 0, 0],
    ]
    p0, r0 = 1 / 3, 1 / 2
    assert report["per_class"][0]["precision"] == pytest.approx(p0)
    assert report["per_class"][0]["recall"] == pytest.approx(r0)
    assert report["per_class"][0]["f1"] == pytest.approx(2 * p0 * r0 / (p0 + r0))
    assert report["per_class"][1]["precision"] == pytest.approx(2 / 3)
    assert report["per_class"][2] == {
        "class": 2,
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 1,
    }
    assert report["per_class"][3]["support"] == 0
    assert report["accuracy"] == pytest.approx(0.5)
    assert report["macro"]["recall"] == pytest.approx((1 / 2 + 2 / 3 + 0 + 0) / 4)


def test_classification_report_length_mismatch() -> None:
    with pytest.raises(ValueError, match="3 labels but y_pred has 2"):
        classification_report([0, 1, 1], [0, 1], num_classes=2)


def test_plots(tmp_path: Path) -> None:
    import matplotlib

    backend = matplotlib.get_backend()
    metrics = [
        {"epoch": 1, "train_error": 50.0, "val_error": None, "test_error": 55.0},
        {"epoch": 2, "train_error": 20.0, "val_error": None, "test_error": 25.0},
    ]
    plot_learning_curves(metrics, tmp_path / "curve.png", "a title")
    plot_comparison({"a": metrics, "b": metrics[:1]}, tmp_path / "cmp.png")
    for name in ("curve.png", "cmp.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC
    assert matplotlib.get_backend() == backend  # the global backend is left alone


def test_synapse_lr_scale_gives_error_synapses_their_own_learning_rate() -> None:
    from reclra.models import build_model
    from reclra.rules import build_rule
    from reclra.train import _make_optimizer

    cfg = Config()
    cfg = apply_overrides(cfg, ["optim.lr=0.01", "optim.synapse_lr_scale=0.1"])
    net = build_model("mlp", input_shape=(4,), num_classes=3, hidden=[5, 5])
    rule = build_rule("rec-lra", net, error_rule="paper")
    opt = _make_optimizer(cfg, rule)
    model_group, synapse_group = opt.param_groups
    assert model_group["lr"] == 0.01 and synapse_group["lr"] == pytest.approx(0.001)
    assert {id(p) for p in synapse_group["params"]} == {id(p) for p in rule.E.parameters()}
    fixed = build_rule("rec-lra", net, error_rule="fixed")
    assert len(_make_optimizer(cfg, fixed).param_groups) == 1  # no learnable synapses


def test_synapse_weight_decay_decays_the_error_synapses_alone() -> None:
    """``optim.synapse_weight_decay`` sets the synapse group's decay (E alone with weight_decay
    0); by default the synapses decay as the model does. One AdamW step on zero directions moves
    only what decays, by ``lr · wd`` of itself."""
    from reclra.models import build_model
    from reclra.rules import build_rule
    from reclra.train import _make_optimizer

    net = build_model("mlp", input_shape=(4,), num_classes=3, hidden=[5, 5])
    rule = build_rule("rec-lra", net, error_rule="transpose")
    base = apply_overrides(Config(), ["optim.name=adamw", "optim.lr=0.1", "optim.weight_decay=0"])
    alone = apply_overrides(base, ["optim.synapse_weight_decay=0.5"])
    model_group, synapse_group = _make_optimizer(alone, rule).param_groups
    assert (model_group["weight_decay"], synapse_group["weight_decay"]) == (0.0, 0.5)
    shared = apply_overrides(base, ["optim.weight_decay=0.01"])
    assert [g["weight_decay"] for g in _make_optimizer(shared, rule).param_groups] == [0.01] * 2

    opt = _make_optimizer(alone, rule)
    before = [p.detach().clone() for p in rule.parameters()]
    for p in rule.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    ids = {id(p) for p in net.parameters()}
    for p, old in zip(rule.parameters(), before, strict=True):
        want = old if id(p) in ids else old * (1 - 0.1 * 0.5)
        torch.testing.assert_close(p.detach(), want)
    with pytest.raises(ConfigError, match="synapse_weight_decay must be >= 0"):
        apply_overrides(base, ["optim.synapse_weight_decay=-1"])
