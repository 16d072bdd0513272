"""Fault test: a training process is killed with SIGKILL at random moments (a bounded number of
times); the last checkpoint is always readable, and resuming reaches the weights of an
uninterrupted run bit for bit."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from reclra.config import Config, apply_overrides, config_to_yaml
from reclra.train import CHECKPOINT, CONFIG, METRICS, fit, read_checkpoint

pytestmark = pytest.mark.usefixtures("isolated_data", "one_thread")

KILLS = 3  # this many SIGKILLs: the test's work is bounded by count, not by a clock
HANG_GUARD = 600.0  # seconds a (resumed) run may take before it counts as hung
EPOCHS = 20  # about 0.1 s each: a run outlives the first kills


def _epochs_done(run: Path) -> int:
    try:
        return (run / METRICS).read_text().count("\n")
    except FileNotFoundError:
        return 0


def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path, tiny_config: Config) -> None:
    cfg = apply_overrides(
        tiny_config, [f"train.epochs={EPOCHS}", "model.hidden=[16]", "train.eval_samples=1"]
    )
    reference = tmp_path / "reference"
    fit(cfg, reference, progress=False)
    config_file = tmp_path / "run.yaml"
    config_file.write_text(config_to_yaml(cfg))
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1] / "src"), *sys.path])
    rng = random.Random(1234)
    kills, seen = 0, []
    while True:
        argv = ["--resume"] if (run / CONFIG).is_file() else []
        proc = subprocess.Popen(
            [sys.executable, "-m", "reclra", "train", "--config", str(config_file),
             "--out", str(run), "--no-progress", *argv],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        if kills < KILLS:
            if kills == 0:  # during the start-up: before anything is written, or while it is
                time.sleep(rng.uniform(0.2, 2.0))
            else:  # a random moment a few epochs on (epochs take ~0.1 s)
                target = _epochs_done(run) + rng.randint(1, 4)
                while proc.poll() is None and _epochs_done(run) < target:
                    time.sleep(0.01)
                time.sleep(rng.uniform(0.0, 0.15))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                if (run / CHECKPOINT).exists():  # never unreadable, whenever it was killed
                    seen.append(read_checkpoint(run / CHECKPOINT)["epoch"])
                continue
        _, err = proc.communicate(timeout=HANG_GUARD)
        assert proc.returncode == 0, err
        break
    assert kills == KILLS
    assert len(seen) >= KILLS - 1 and seen == sorted(seen)  # killed mid-run, progress kept
    final, ref = read_checkpoint(run / CHECKPOINT), read_checkpoint(reference / CHECKPOINT)
    assert final["epoch"] == ref["epoch"] == EPOCHS
    for key, value in ref["rule"].items():
        assert torch.equal(final["rule"][key], value), key
    assert (run / METRICS).read_text().count("\n") == EPOCHS
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]  # no half-written file
