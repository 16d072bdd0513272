"""Training runs: seeding, the epoch loop, evaluation, checkpoints, resume and run outputs.

:func:`fit` (or :class:`Trainer`) trains the rule and model a :class:`~reclra.config.Config`
describes and writes everything into one run folder::

    config.yaml          the resolved config: every model and rule option with its default
                         filled in (training from it reproduces the run bit for bit)
    run.json             provenance, one session per start or resume: reclra version, git
                         commit, torch/numpy/Python versions, device, threads, what a resume
                         changed; the data folder's files with sizes and SHA-256
    metrics.jsonl        one JSON object per epoch (errors, loss, depth, error norms, learning
                         rate of every param group, seconds; ``resumed`` on a resume's first)
    checkpoint.pt        rule + optimizer + RNG states + metrics (every checkpoint_every epochs
                         and at the end; loads with torch.load(..., weights_only=True))
    best.pt              the same, of the best epoch (lowest validation error, else training)
    summary.json         resolved config, final/best errors, test-set confusion matrix and
                         P/R/F1, timings, parameter counts, versions, early stopping
    learning_curve.png   train/validation/test error against epoch

A resumed run (``resume=True``) continues from the checkpoint and reproduces the uninterrupted
run exactly: the shuffle of epoch ``e`` depends only on ``(seed, e)``, the learning rate only on
the epoch and step, evaluation runs on its own seeded RNG, and every RNG state is restored. Only
the options in :data:`RESUMABLE` may differ from the checkpoint's; the changes are recorded.
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import itertools
import json
import math
import os
import pickle
import platform
import random
import signal
import statistics
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

import reclra
from reclra.analysis import classification_report, plot_learning_curves
from reclra.config import (
    DEVICE_PATTERN,
    Config,
    ConfigError,
    TrainConfig,
    config_to_yaml,
    load_config,
    merge_config,
)
from reclra.data import Dataset, Split, dataset_shape, iterate_minibatches, load_dataset
from reclra.errors import ReclraError
from reclra.models import MODELS, LayeredNet, build_model
from reclra.pathway import Pathway
from reclra.provenance import data_files, environment
from reclra.registry import Registry
from reclra.rules import RULES, Rule, StepStats, build_rule
from reclra.schedules import DECAYING, lr_factor

__all__ = [
    "BEST",
    "BUILDER_ARGS",
    "CHECKPOINT",
    "CHECKPOINT_FORMAT",
    "CONFIG",
    "CURVE",
    "METRICS",
    "RESUMABLE",
    "RUN",
    "SUMMARY",
    "CheckpointError",
    "DivergenceError",
    "Evaluation",
    "RunError",
    "Trainer",
    "TrainingInterrupted",
    "config_changes",
    "count_parameters",
    "default_run_dir",
    "evaluate",
    "evaluate_checkpoint",
    "fit",
    "load_checkpoint",
    "read_checkpoint",
    "resolve_config",
    "select_device",
]

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
CONFIG = "config.yaml"
RUN = "run.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CURVE = "learning_curve.png"

#: Top-k error reported besides the error when there are more than this many classes.
TOPK = 5

#: Options that may differ between a run and its resumption: how long it trains, where the data
#: files come from, and where and how fast it runs. Any other change is refused.
RESUMABLE = (
    "train.epochs",
    "data.data_dir",
    "data.download",
    "data.eval_batch_size",
    "train.device",
    "train.threads",
    "train.checkpoint_every",
    "train.nonfinite",
)

#: Version of the checkpoint layout; a checkpoint of a later version is refused.
CHECKPOINT_FORMAT = 1

#: Builder arguments the trainer supplies itself (not config options).
BUILDER_ARGS = ("net", "input_shape", "num_classes")


class RunError(ReclraError):
    """The run folder does not allow what was asked (existing run, nothing to resume, mismatch,
    not writable)."""


class CheckpointError(ReclraError):
    """A checkpoint file is missing, unreadable, truncated, of a newer format, or of another
    model."""


class DivergenceError(ReclraError):
    """Training met a non-finite loss, error neuron, update or weight (see ``train.nonfinite``);
    the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during training.

    Attributes:
        epoch: the last complete epoch saved in ``checkpoint`` (None: nothing was saved).
        checkpoint: the checkpoint to resume from.
        step: optimizer steps of epoch ``epoch + 1`` saved with it (0: at an epoch's end).
        signal: the signal's name (``SIGINT``, ``SIGTERM``).
    """

    def __init__(
        self, epoch: int | None, checkpoint: Path, *, step: int = 0, signal: str = "SIGINT"
    ) -> None:
        super().__init__(f"interrupted; last checkpointed epoch: {epoch}")
        self.epoch, self.checkpoint, self.step, self.signal = epoch, checkpoint, step, signal


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


@dataclass
class Evaluation:
    """Errors of a model on a split.

    Attributes:
        error: misclassified examples in % (None for an empty split).
        top5_error: examples whose class is not among the 5 most probable, in % (None when the
            model has at most 5 classes or the split is empty).
        y_true, y_pred: labels and predicted classes (CPU int64 tensors).
    """

    error: float | None
    top5_error: float | None
    y_true: Tensor
    y_pred: Tensor


def _net_of(model: Rule | LayeredNet) -> LayeredNet:
    return model.net if isinstance(model, Rule) else model


@torch.no_grad()
def evaluate(
    model: Rule | LayeredNet,
    split: Split,
    *,
    batch_size: int = 1000,
    samples: int = 100,
    seed: int | None = None,
) -> Evaluation:
    """Classification error of ``model`` (a rule or a network) on ``split``, batched.

    Stochastic networks are scored by their posterior averaged over ``samples`` forward passes
    (:meth:`~reclra.models.LayeredNet.predict_proba`). With ``seed``, their sampling runs on a
    forked RNG seeded with it, so two evaluations agree and the caller's RNG state is untouched
    (None: the global RNG, as it stands). Batches are moved to the model's device; counts stay
    there until one sync at the end. The network is put in eval mode meanwhile.
    """
    net = _net_of(model)
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        return _evaluate(net, split, batch_size, samples, device, was_training)


def _evaluate(
    net: LayeredNet,
    split: Split,
    batch_size: int,
    samples: int,
    device: torch.device,
    was_training: bool,
) -> Evaluation:
    try:
        wrong = torch.zeros((), dtype=torch.long, device=device)
        wrong_k = torch.zeros((), dtype=torch.long, device=device)
        preds: list[Tensor] = []
        num_classes = 0
        for x, y in iterate_minibatches(split, batch_size, shuffle=False, device=device):
            proba = net.predict_proba(x, samples=samples)
            num_classes = proba.shape[1]
            pred = proba.argmax(dim=1)
            preds.append(pred)
            wrong += (pred != y).sum()
            if num_classes > TOPK:
                top = proba.topk(TOPK, dim=1).indices
                wrong_k += (~(top == y[:, None]).any(dim=1)).sum()
    finally:
        net.train(was_training)
    n = len(split)
    y_pred = torch.cat(preds).cpu() if preds else torch.empty(0, dtype=torch.long)
    if n == 0:
        return Evaluation(None, None, split.y.cpu(), y_pred)
    counts = torch.stack([wrong, wrong_k]).tolist()
    top5 = 100.0 * counts[1] / n if num_classes > TOPK else None
    return Evaluation(100.0 * counts[0] / n, top5, split.y.cpu(), y_pred)


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def select_device(name: str) -> torch.device:
    """``auto`` → ``cuda`` when available, else ``cpu``; ``cuda[:N]`` must be available."""
    if not isinstance(name, str) or not DEVICE_PATTERN.match(name):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={name}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"train.device={name}: only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    return device


def _describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_parameters(rule: Rule) -> dict[str, int]:
    """Numbers of model parameters, rule-owned learnable synapses and fixed feedback weights."""
    net_params = {id(p) for p in rule.net.parameters()}
    net_buffers = {id(b) for b in rule.net.buffers()}
    return {
        "model": sum(p.numel() for p in rule.net.parameters()),
        "learnable_synapses": sum(p.numel() for p in rule.parameters() if id(p) not in net_params),
        "fixed_feedback": sum(b.numel() for b in rule.buffers() if id(b) not in net_buffers),
    }


def _epoch_seed(seed: int, epoch: int) -> int:
    """Seed of the shuffle of ``epoch``: depends only on ``(seed, epoch)``."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write ``path`` through a temp file in the same folder, fsync it, ``os.replace`` it and
    fsync the folder: after a crash at any moment ``path`` is the old file or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # not every file system syncs a folder
        _fsync(path.parent)


def _is_temporary(name: str) -> bool:
    """Whether ``name`` is a temporary file of :func:`_atomic_write` or the write probe."""
    return name.startswith(".") and name.endswith(".tmp")


def _write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _write_json(path: Path, obj: Any) -> None:
    _write_text(path, json.dumps(obj, indent=2) + "\n")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # CPU and every CUDA device


def _rng_state(device: torch.device) -> dict[str, Any]:
    """Every RNG state as plain data and tensors (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
        "numpy": {
            "name": str(name),
            "keys": [int(k) for k in keys],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    keys = np.asarray(n["keys"], dtype=np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))


@contextlib.contextmanager
def _runtime(train: TrainConfig, device: torch.device) -> Iterator[None]:
    """Thread count and determinism for the run; the previous settings are restored after."""
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    det_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    try:
        if train.threads is not None:
            torch.set_num_threads(train.threads)
        if train.deterministic:
            if device.type == "cuda":  # cuBLAS needs it for reproducible GEMMs
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det, warn_only=det_warn)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


def _build(cfg: Config, input_shape: tuple[int, ...], num_classes: int) -> Rule:
    """The rule (and its model, ``rule.net``) of ``cfg`` for data of this shape.

    Option types are checked first (see :meth:`reclra.registry.Registry.check`); a builder's
    own argument check (a ``ValueError``: β ≤ 0, a pathway with a cycle, sizes that do not fit
    the data) becomes a :class:`ConfigError` naming the model or rule.
    """
    model_name, rule_name = cfg.model["name"], cfg.rule["name"]
    try:
        net = build_model(
            model_name, input_shape=input_shape, num_classes=num_classes, **cfg.options("model")
        )
    except ReclraError:
        raise
    except ValueError as exc:
        raise ConfigError(f"model {model_name!r}: {exc}") from exc
    try:
        return build_rule(rule_name, net, **cfg.options("rule"))
    except ReclraError:
        raise
    except ValueError as exc:
        raise ConfigError(f"rule {rule_name!r}: {exc}") from exc


def _load_data(cfg: Config, *, dataset: str | None = None, data_dir: str | None = None) -> Dataset:
    """The dataset of ``cfg`` (split with the run's seed), or ``dataset`` loaded the same way."""
    d = cfg.data
    return load_dataset(
        dataset or d.dataset,
        data_dir=data_dir if data_dir is not None else d.data_dir,
        val_size=d.val_size,
        limit_train=d.limit_train,
        seed=cfg.train.seed,
        download=d.download,
        preprocess=d.preprocess,
        image_size=d.image_size,
        resize=d.resize,
    )


def _load_rule_state(rule: Rule, state: Mapping[str, Any], path: Path) -> None:
    """Load a checkpoint's rule state; a mismatch becomes a :class:`CheckpointError`."""
    try:
        rule.load_state_dict(state)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise CheckpointError(
            f"{path}: state does not fit the configured model: {detail}"
        ) from None


def _evaluate_with(cfg: Config, rule: Rule, split: Split) -> Evaluation:
    """:func:`evaluate` with the config's evaluation batch size, posterior samples and seed."""
    return evaluate(
        rule,
        split,
        batch_size=cfg.data.eval_batch_size,
        samples=cfg.train.eval_samples,
        seed=cfg.train.seed,
    )


def _param_groups(cfg: Config, rule: Rule) -> list[dict[str, Any]]:
    """The model's parameters at ``lr``; the rule's own learnable synapses (if any) at
    ``lr · synapse_lr_scale`` and with ``synapse_weight_decay`` where set. Each group keeps its
    ``name`` and ``base_lr`` (the lr the schedule's factor multiplies)."""
    model = list(rule.net.parameters())
    ids = {id(p) for p in model}
    synapses = [p for p in rule.parameters() if id(p) not in ids]
    groups = [{"params": model, "name": "model", "base_lr": cfg.optim.lr}]
    if synapses:
        lr = cfg.optim.lr * cfg.optim.synapse_lr_scale
        group = {"params": synapses, "name": "synapses", "base_lr": lr, "lr": lr}
        if cfg.optim.synapse_weight_decay is not None:
            group["weight_decay"] = cfg.optim.synapse_weight_decay
        groups.append(group)
    return groups


def _make_optimizer(cfg: Config, rule: Rule) -> torch.optim.Optimizer:
    o = cfg.optim
    groups = _param_groups(cfg, rule)
    kernel = {"fused": True} if o.fused else {"foreach": True}  # rmsprop has no fused form
    if o.name == "sgd":
        return torch.optim.SGD(
            groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, **kernel
        )
    if o.name == "rmsprop":
        return torch.optim.RMSprop(
            groups, lr=o.lr, alpha=o.alpha, eps=o.eps, momentum=o.momentum,
            weight_decay=o.weight_decay, foreach=True,
        )  # fmt: skip
    adam = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
    return adam(groups, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay, **kernel)


def _registry_defaults(registry: Registry[Any], section: dict[str, Any]) -> dict[str, Any]:
    """``section`` (its options checked) with every option its builder takes filled in with the
    builder's default."""
    registry.check(section["name"], {k: v for k, v in section.items() if k != "name"})
    defaults = {
        k: v
        for k, v in registry.options(section["name"]).items()
        if k not in BUILDER_ARGS and v is not inspect.Parameter.empty
    }
    return {"name": section["name"], **defaults, **section}


def resolve_config(cfg: Config) -> Config:
    """A validated copy of ``cfg`` whose ``model`` and ``rule`` sections name every option of
    their builders, defaults filled in (what ``config.yaml`` records, so that a run folder stays
    unambiguous when a default changes).

    Raises:
        ConfigError: an unknown model or rule name or option, an option value of the wrong
            type (or not finite), an optimizer or schedule option the chosen one does not use.
    """
    cfg.check_applicable()
    filled = {
        "model": _registry_defaults(MODELS, cfg.model),
        "rule": _registry_defaults(RULES, cfg.rule),
    }
    return Config.from_dict(merge_config(cfg, filled).to_dict())  # tuples → lists, as in YAML


def default_run_dir(cfg: Config) -> Path:
    """``runs/RULE-DATASET-YYYYmmdd-HHMMSS`` (the run folder when none is given)."""
    return Path("runs") / f"{cfg.rule['name']}-{cfg.data.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------

_CHECKPOINT_KEYS = ("rule", "optim", "epoch", "config", "data_info", "rng", "metrics")


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (onto the CPU) and check its keys.

    Raises:
        CheckpointError: the file is missing, unreadable or not a reclra checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror}") from None
    if not magic:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); it is not usable")
    if magic != b"PK\x03\x04":
        raise CheckpointError(
            f"{path} is not a checkpoint (checkpoints are torch zip files, e.g. a run's "
            f"{CHECKPOINT} or {BEST})"
        )
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt (its zip directory is missing); use the "
            f"run's other checkpoint ({CHECKPOINT} or {BEST}) or train again"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        detail = type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a reclra checkpoint ({detail}); use the run's "
            f"other checkpoint ({CHECKPOINT} or {BEST}) or train again"
        ) from None
    missing = [k for k in _CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is not a reclra checkpoint (missing {', '.join(missing)})")
    version = ckpt.get("format", 1)
    if not isinstance(version, int) or version > CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} has checkpoint format {version!r}, newer than this reclra reads "
            f"({CHECKPOINT_FORMAT}); upgrade reclra to use it"
        )
    return ckpt


def load_checkpoint(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> tuple[Config, Rule]:
    """Rebuild the model and rule a checkpoint was trained with and load its state.

    Returns:
        The run's config and the rule (its network is ``rule.net``), on ``device``, in eval mode.
    """
    ckpt = read_checkpoint(path)
    cfg = Config.from_dict(ckpt["config"])
    info = ckpt["data_info"]
    rule = _build(cfg, tuple(info["input_shape"]), int(info["num_classes"]))
    _load_rule_state(rule, ckpt["rule"], Path(path))
    return cfg, rule.to(device).eval()


def evaluate_checkpoint(
    path: str | os.PathLike[str],
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Validation and test errors and the test-set P/R/F1 report of a saved run.

    The data are split as in training (same ``val_size``, ``limit_train`` and seed) unless
    ``dataset`` names another dataset, which must have the same input size and classes.
    """
    cfg, rule = load_checkpoint(path, device=select_device(device))
    data = _load_data(cfg, dataset=dataset, data_dir=data_dir)
    net = rule.net
    n_in, n_out = math.prod(net.input_shape), net.layer(net.num_layers).size
    if data.input_dim != n_in or data.num_classes != n_out:
        raise CheckpointError(
            f"dataset {data.name!r} has inputs of size {data.input_dim} and {data.num_classes} "
            f"classes, but the checkpoint's model takes {n_in} inputs and has {n_out} classes"
        )
    out: dict[str, Any] = {"checkpoint": str(path), "dataset": data.name, "source": data.source}
    for split_name in ("val", "test"):
        ev = _evaluate_with(cfg, rule, getattr(data, split_name))
        out[f"{split_name}_error"] = ev.error
        if ev.top5_error is not None:
            out[f"{split_name}_top5_error"] = ev.top5_error
    out["test_report"] = classification_report(ev.y_true, ev.y_pred, data.num_classes)
    return out


# --------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------


def _flatten(cfg_dict: Mapping[str, Any]) -> dict[str, Any]:
    """``{"section.key": value}`` of a plain config dict."""
    return {f"{section}.{k}": v for section, values in cfg_dict.items() for k, v in values.items()}


def config_changes(stored: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, list[Any]]:
    """``{"section.key": [stored value, current value]}`` for every key of two plain config
    dicts (:meth:`Config.to_dict`) that differs."""
    old, new = _flatten(stored), _flatten(current)
    return {
        k: [old.get(k), new.get(k)]
        for k in sorted(old.keys() | new.keys())
        if old.get(k) != new.get(k)
    }


def _best(metrics: list[dict[str, Any]], by: str) -> dict[str, Any]:
    """The epoch record with the lowest ``by`` (the earliest among ties)."""
    return min(metrics, key=lambda m: (m[by], m["epoch"]))


def _early_stop(metrics: list[dict[str, Any]], by: str, patience: int | None) -> bool:
    """True once ``patience`` epochs have passed without a lower ``by`` than the best."""
    if patience is None or not metrics:
        return False
    return metrics[-1]["epoch"] - _best(metrics, by)["epoch"] >= patience


def _extremes(tensors: list[Tensor]) -> list[Tensor]:
    """Scalars that are all finite exactly when every tensor is: each one's max ``|x|`` (no
    overflow, NaN kept). On CPU each tensor's ``aminmax``, one vectorized pass: torch's foreach
    inf-norm has no fast CPU kernel (2.1 ms a step for the MLP 5×256's weights and directions,
    against 0.3 ms; ``docs/PERFORMANCE.md``, section 4)."""
    if not tensors:
        return []
    if tensors[0].device.type != "cpu":
        return list(torch._foreach_norm(tensors, ord=math.inf))
    return [v for t in tensors if t.numel() for v in torch.aminmax(t)]


class _Guard:
    """The divergence guard: one fused finiteness check per step (loss, error norms, update
    directions, weights and buffers; one device sync), and, only once something is not finite,
    the naming of what, where."""

    def __init__(self, rule: Rule) -> None:
        self.params = list(rule.named_parameters())
        buffers = [(f"net.{n}", b) for n, b in rule.net.named_buffers() if b.is_floating_point()]
        self.state: list[tuple[str, Tensor]] = [*self.params, *buffers]

    @torch.no_grad()
    def finite(self, stats: StepStats | None) -> bool:
        """Whether the weights and buffers (and the step's ``stats`` and ``.grad``) are finite."""
        tensors = [t for _, t in self.state]
        values: list[Tensor] = []
        if stats is not None:
            values += [stats.loss.detach(), *(v.detach() for v in stats.error_norms.values())]
            tensors += [p.grad for _, p in self.params if p.grad is not None]
        values += _extremes(tensors)
        by_dtype: dict[torch.dtype, list[Tensor]] = {}
        for v in values:
            by_dtype.setdefault(v.dtype, []).append(v.reshape(()))
        flags = [torch.stack(vs).isfinite().all() for vs in by_dtype.values()]
        return bool(torch.stack(flags).all())

    @torch.no_grad()
    def diagnose(self, stats: StepStats | None) -> tuple[str, bool]:
        """What is not finite, in words, and whether skipping the batch avoids it (not for a
        weight or buffer, which the previous update already changed)."""
        named = [
            (f"{'weight' if isinstance(t, nn.Parameter) else 'buffer'} {n} (after the last update)",
             t, False)
            for n, t in self.state
        ]  # fmt: skip
        if stats is not None:
            named.append(("the loss", stats.loss.detach(), True))
            named += [
                (f"the error neurons of layer {ell} (mean ‖e_{ell}‖)", stats.error_norms[ell], True)
                for ell in sorted(stats.error_norms, reverse=True)
            ]
            named += [
                (f"the update of {n}", p.grad, True) for n, p in self.params if p.grad is not None
            ]
        for what, t, skippable in named:
            if not bool(t.isfinite().all()):
                return f"{what} is {'NaN' if bool(t.isnan().any()) else 'infinite'}", skippable
        raise AssertionError("the divergence guard found a non-finite value it cannot name")


class _StopRequest:
    """Set by SIGINT/SIGTERM during training: the loop stops at the next step boundary after
    saving a checkpoint there; a second signal interrupts at once."""

    def __init__(self) -> None:
        self.signal: str | None = None


@contextlib.contextmanager
def _stop_signals() -> Iterator[_StopRequest]:
    """Turn SIGINT and SIGTERM into a :class:`_StopRequest` meanwhile (main thread only; the
    previous handlers are restored after)."""
    request = _StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum: int, frame: Any) -> None:
        if request.signal is not None:
            raise KeyboardInterrupt
        request.signal = signal.Signals(signum).name

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


class Trainer:
    """One training run of ``cfg`` in the folder ``out_dir`` (see the module docstring).

    Args:
        cfg: the run configuration (validated and resolved, see :func:`resolve_config`; not
            modified).
        out_dir: the run folder (created if needed); nothing is written outside it.
        resume: continue from ``out_dir/checkpoint.pt``; the config must match the
            checkpoint's except for the options in :data:`RESUMABLE` (``train.epochs`` may be
            raised to train longer, unless a cosine/poly schedule spans the whole run).
        overwrite: start afresh even though ``out_dir`` holds a checkpoint.
        progress: show a tqdm bar per epoch (only on a terminal).
        on_epoch: called with each epoch's metrics record once it is saved.

    After :meth:`run`, ``dataset``, ``rule``, ``optimizer`` and ``metrics`` hold the trained state.
    """

    def __init__(
        self,
        cfg: Config,
        out_dir: str | os.PathLike[str],
        *,
        resume: bool = False,
        overwrite: bool = False,
        progress: bool = True,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        if resume and overwrite:
            raise RunError("resume and overwrite exclude each other")
        self.cfg = resolve_config(cfg)  # a validated private copy
        self.out_dir = Path(out_dir)
        self.resume, self.overwrite = resume, overwrite
        self.progress, self.on_epoch = progress, on_epoch
        self.device = select_device(self.cfg.train.device)
        self.metrics: list[dict[str, Any]] = []
        self.dataset: Dataset | None = None
        self.rule: Rule | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.saved_epoch: int | None = None
        self.changed: dict[str, list[Any]] = {}  # what a resume changed
        self._guard: _Guard | None = None
        self._stop = _StopRequest()

    def path(self, name: str) -> Path:
        """A file of the run folder."""
        return self.out_dir / name

    # -- set-up ----------------------------------------------------------------------------

    def _check_folder(self) -> dict[str, Any] | None:
        """Refuse what the folder does not allow (before any data is loaded); the checkpoint to
        resume from, if any."""
        ckpt_path = self.path(CHECKPOINT)
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise RunError(f"run folder {self.out_dir} is a file, not a folder; choose another")
        if not self.resume:
            held = [p.name for p in self._files() if not _is_temporary(p.name)]
            if not held or self.overwrite:
                return None
            if ckpt_path.exists() or CONFIG in held:
                found = CHECKPOINT if ckpt_path.exists() else CONFIG
                raise RunError(
                    f"{self.out_dir} already holds a run ({found}); "
                    f"resume it, choose another folder, or overwrite it (resume=True / "
                    f"overwrite=True, --resume / --overwrite)"
                )
            shown = ", ".join(held[:5]) + (", …" if len(held) > 5 else "")
            raise RunError(
                f"{self.out_dir} is not empty ({shown}) and holds no run to resume; choose "
                f"another folder, or write the run into it anyway (overwrite=True, --overwrite)"
            )
        if ckpt_path.exists():
            ckpt: dict[str, Any] | None = read_checkpoint(ckpt_path)
            stored_cfg, where = ckpt["config"], ckpt_path
        elif self.path(CONFIG).is_file():  # stopped before its first checkpoint: start again
            ckpt, where = None, self.path(CONFIG)
            stored_cfg = load_config(where).to_dict()
        else:
            raise RunError(f"nothing to resume: {ckpt_path} does not exist")
        stored = resolve_config(Config.from_dict(stored_cfg)).to_dict()
        changes = config_changes(stored, self.cfg.to_dict())
        refused = [
            f"{k}: checkpoint {old!r}, now {new!r}"
            for k, (old, new) in changes.items()
            if k not in RESUMABLE
        ]
        if refused:
            raise RunError(
                f"cannot resume {where}: the config differs from the checkpoint's in "
                + "; ".join(refused)
                + f" (only {', '.join(RESUMABLE)} may change on resume)"
            )
        s = self.cfg.schedule
        if "train.epochs" in changes and s.name in DECAYING and s.total is None:
            raise RunError(
                f"cannot resume {where} with train.epochs changed: the {s.name} schedule "
                f"spans the whole run (set schedule.total to fix its length)"
            )
        if ckpt is not None and ckpt["epoch"] > self.cfg.train.epochs:
            raise RunError(
                f"cannot resume {ckpt_path}: it is at epoch {ckpt['epoch']}, beyond "
                f"train.epochs={self.cfg.train.epochs}"
            )
        self.changed = changes
        return ckpt

    def _files(self) -> list[Path]:
        """The files of the run folder, sorted (none if it does not exist)."""
        return sorted(self.out_dir.iterdir()) if self.out_dir.is_dir() else []

    def _make_folder(self) -> bool:
        """Create the run folder and check that it is writable; whether it was created."""
        created = not self.out_dir.exists()
        probe = self.out_dir / f".write-test-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise RunError(
                f"cannot write the run folder {self.out_dir}: {exc.strerror or exc}; choose "
                f"another folder"
            ) from None
        return created

    def _setup(self, ckpt: dict[str, Any] | None) -> tuple[int, dict[str, Any] | None]:
        """Seed, load the data, build model/rule/optimizer, restore a checkpoint; the first
        epoch and, for a checkpoint taken within an epoch, its position."""
        cfg = self.cfg
        _seed_everything(cfg.train.seed)
        self.dataset = _load_data(cfg).to(self.device)
        n_train = len(self.dataset.train)
        if cfg.data.batch_size > n_train:
            raise ConfigError(
                f"data.batch_size={cfg.data.batch_size} is larger than the training split "
                f"({n_train} examples of {self.dataset.name}); choose at most {n_train}"
            )
        rule = _build(cfg, self.dataset.input_shape, self.dataset.num_classes).to(self.device)
        self.rule = rule
        self.optimizer = _make_optimizer(cfg, rule)
        self._guard = _Guard(rule)
        if ckpt is None:
            return 1, None
        _load_rule_state(rule, ckpt["rule"], self.path(CHECKPOINT))
        self.optimizer.load_state_dict(ckpt["optim"])
        self.metrics = [dict(m) for m in ckpt["metrics"]]
        self.saved_epoch = int(ckpt["epoch"])
        _set_rng_state(ckpt["rng"])
        return self.saved_epoch + 1, ckpt.get("position")

    def _start_outputs(self, first: int) -> None:
        """Write config.yaml, run.json (a new session) and metrics.jsonl (the checkpoint's
        epochs only); clear old files."""
        assert self.dataset is not None
        for path in self._files():  # left by a process killed while writing
            if _is_temporary(path.name):
                path.unlink(missing_ok=True)
        if self.overwrite:
            for name in (CHECKPOINT, BEST, SUMMARY, CURVE, RUN):
                self.path(name).unlink(missing_ok=True)
        _write_text(self.path(CONFIG), config_to_yaml(self.cfg))
        sessions = []
        if self.resume and self.path(RUN).is_file():
            sessions = json.loads(self.path(RUN).read_text(encoding="utf-8"))["sessions"]
        sessions.append(
            {
                "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                "first_epoch": first,
                "changed": self.changed,
                **environment(_describe_device(self.device)),
            }
        )
        ds = self.dataset
        pathway = getattr(self.rule, "pathway", None)
        record = {
            # the error pathway the rule built (``rule.pathway: null`` picks a preset by model)
            "pathway": [list(e) for e in pathway.edges] if isinstance(pathway, Pathway) else None,
            "data": {
                "name": ds.name,
                "source": ds.source,
                "sizes": {"train": len(ds.train), "val": len(ds.val), "test": len(ds.test)},
                "files": data_files(ds.source),
            },
            "sessions": sessions,
        }
        _write_json(self.path(RUN), record)
        _write_text(self.path(METRICS), "".join(json.dumps(m) + "\n" for m in self.metrics))

    # -- epochs ----------------------------------------------------------------------------

    def _steps_per_epoch(self) -> int:
        assert self.dataset is not None
        return math.ceil(len(self.dataset.train) / self.cfg.data.batch_size)

    def _set_lr(self, t: int) -> dict[str, float]:
        """Set every param group's lr for unit ``t`` of the schedule; ``{group name: lr}``."""
        assert self.optimizer is not None
        s, o = self.cfg.schedule, self.cfg.optim
        per_epoch = 1 if s.per == "epoch" else self._steps_per_epoch()
        total = s.total or self.cfg.train.epochs * per_epoch
        factor = lr_factor(s, t, total=total, floor=s.min_lr / o.lr)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        return {g["name"]: g["lr"] for g in self.optimizer.param_groups}

    def _train_epoch(self, epoch: int, position: dict[str, Any] | None = None) -> dict[str, Any]:
        """One pass over the shuffled training split (from ``position``, a checkpoint's place
        within the epoch); loss/depth/error-norm means, the learning rates (at the first step;
        and at the last under a per-step schedule), skipped batches, seconds.

        Raises:
            DivergenceError: a non-finite value (unless the batch can be skipped, see
                ``train.nonfinite``).
            TrainingInterrupted: SIGINT/SIGTERM; a checkpoint of this step is saved first.
        """
        assert self.rule is not None and self.optimizer is not None and self.dataset is not None
        cfg, rule, opt, device = self.cfg, self.rule, self.optimizer, self.device
        split = self.dataset.train
        per_step = cfg.schedule.per == "step"
        steps = self._steps_per_epoch()
        generator = torch.Generator().manual_seed(_epoch_seed(cfg.train.seed, epoch))
        batches = iterate_minibatches(split, cfg.data.batch_size, shuffle=True, generator=generator)
        first_t = (epoch - 1) * steps if per_step else epoch - 1
        lrs = self._set_lr(first_t)
        p: dict[str, Any] = position or {
            "step": 0,
            "loss_sum": torch.zeros((), device=device),
            "depth_sum": 0.0,
            "norm_sums": {},
            "count": 0,
            "skipped": 0,
            "seconds": 0.0,
            "last_lrs": lrs,
        }
        loss_sum, depth_sum = p["loss_sum"].to(device), p["depth_sum"]
        norm_sums: dict[int, Tensor] = {k: v.to(device) for k, v in p["norm_sums"].items()}
        count, skipped, last_lrs = p["count"], p["skipped"], p["last_lrs"]
        rule.train()
        _sync(device)
        start = time.perf_counter() - p["seconds"]
        with tqdm(
            total=steps,
            initial=p["step"],
            desc=f"epoch {epoch}/{cfg.train.epochs}",
            unit="batch",
            leave=False,
            disable=None if self.progress else True,
        ) as bar:
            for step, (x, y) in enumerate(
                itertools.islice(batches, p["step"], None), start=p["step"] + 1
            ):
                if per_step and step > 1:
                    last_lrs = self._set_lr(first_t + step - 1)
                opt.zero_grad()
                stats = rule.compute_grads(x, y)
                if not self._guard.finite(stats):
                    problem, skippable = self._guard.diagnose(stats)
                    if not (skippable and cfg.train.nonfinite == "skip"):
                        raise self._diverged(problem, epoch, step, skippable)
                    opt.zero_grad()
                    skipped += 1
                else:
                    opt.step()
                    n = y.shape[0]
                    loss_sum += stats.loss.detach() * n
                    depth_sum = depth_sum + stats.depth * n
                    for ell, norm in stats.error_norms.items():
                        weighted = norm.detach() * n
                        norm_sums[ell] = norm_sums[ell] + weighted if ell in norm_sums else weighted
                    count += n
                bar.update()
                if not bar.disable and count and (step % 10 == 0 or step == bar.total):
                    bar.set_postfix(loss=f"{(loss_sum / count).item():.4f}")  # a sync per 10
                if self._stop.signal is not None and step < steps:
                    self._check_state(epoch, step)
                    _sync(device)
                    here = {
                        "step": step,
                        "loss_sum": loss_sum,
                        "depth_sum": depth_sum,
                        "norm_sums": norm_sums,
                        "count": count,
                        "skipped": skipped,
                        "seconds": time.perf_counter() - start,
                        "last_lrs": last_lrs,
                    }
                    self._save_checkpoint(epoch - 1, position=here)
                    raise TrainingInterrupted(
                        epoch - 1, self.path(CHECKPOINT), step=step, signal=self._stop.signal
                    )
        self._check_state(epoch, steps)
        _sync(device)
        seconds = time.perf_counter() - start
        layers = sorted(norm_sums)
        values = torch.stack(
            [loss_sum, torch.as_tensor(depth_sum, device=device, dtype=loss_sum.dtype)]
            + [norm_sums[ell].to(loss_sum.dtype) for ell in layers]
        )
        means = (values / max(count, 1)).tolist()  # the epoch's one sync
        record = {
            "loss": means[0],
            "depth": means[1],
            "error_norms": {str(ell): v for ell, v in zip(layers, means[2:], strict=True)},
            "lr": lrs,
            "seconds": seconds,
        }
        if per_step:
            record["lr_last"] = last_lrs
        if skipped:
            record["skipped_batches"] = skipped
        return record

    def _check_state(self, epoch: int, step: int) -> None:
        """Refuse to go on (and to save) with a non-finite weight or buffer."""
        assert self._guard is not None
        if not self._guard.finite(None):
            problem, _ = self._guard.diagnose(None)
            raise self._diverged(problem, epoch, step, False)

    def _diverged(self, problem: str, epoch: int, step: int, skippable: bool) -> DivergenceError:
        """The error for a non-finite ``problem`` at ``step`` of ``epoch``, with remedies."""
        options = RULES.options(self.cfg.rule["name"])
        remedies = [
            text
            for key, text in (
                ("clip", "re-project the updates (--set rule.clip=1.0)"),
                ("beta", "a smaller β (--set rule.beta=…)"),
            )
            if key in options
        ]
        remedies.append("a smaller learning rate (--lr)")
        if skippable and self.cfg.train.nonfinite == "stop":
            remedies.append("or skip such batches (--set train.nonfinite=skip)")
        if self.saved_epoch is None:
            kept = "no checkpoint was saved yet"
        else:
            kept = f"the last good checkpoint (epoch {self.saved_epoch}) is kept in " + str(
                self.path(CHECKPOINT)
            )
        return DivergenceError(
            f"training diverged at epoch {epoch}, step {step}: {problem}; {kept}. "
            f"Try {', '.join(remedies)}"
        )

    def _evaluate_all(self, record: dict[str, Any]) -> Evaluation:
        """Add train/val/test errors (and top-5) to ``record``; returns the test evaluation.

        With ``train.bn_recalibrate`` the batch-norm statistics are re-estimated first, over
        that many training batches in order."""
        assert self.rule is not None and self.dataset is not None
        n = self.cfg.train.bn_recalibrate
        if n:
            batches = iterate_minibatches(
                self.dataset.train, self.cfg.data.eval_batch_size, shuffle=False,
                device=self.device,
            )  # fmt: skip
            self.rule.net.recalibrate_norms(x for x, _ in itertools.islice(batches, n))
        ev = None
        for name in ("train", "val", "test"):
            ev = _evaluate_with(self.cfg, self.rule, getattr(self.dataset, name))
            record[f"{name}_error"] = ev.error
            if ev.top5_error is not None:
                record[f"{name}_top5_error"] = ev.top5_error
        assert ev is not None
        return ev

    def _save_checkpoint(
        self, epoch: int, name: str = CHECKPOINT, *, position: dict[str, Any] | None = None
    ) -> None:
        """Save the state after ``epoch`` (and ``position``'s steps of the next epoch)."""
        assert self.rule is not None and self.optimizer is not None and self.dataset is not None
        state = {
            "format": CHECKPOINT_FORMAT,
            "rule": self.rule.state_dict(),
            "optim": self.optimizer.state_dict(),
            "epoch": epoch,
            "position": position,
            "config": self.cfg.to_dict(),
            "data_info": {
                "name": self.dataset.name,
                "input_shape": list(self.dataset.input_shape),
                "num_classes": self.dataset.num_classes,
                "source": self.dataset.source,
            },
            "rng": _rng_state(self.device),
            "metrics": self.metrics,
        }
        _atomic_write(self.path(name), lambda tmp: torch.save(state, tmp))
        if name == CHECKPOINT:
            self.saved_epoch = epoch

    @property
    def best_by(self) -> str:
        """The metric the best epoch and early stopping go by."""
        assert self.dataset is not None
        return "val_error" if len(self.dataset.val) > 0 else "train_error"

    # -- the run ---------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Train (or continue) to ``train.epochs`` or an early stop; write every output; return
        the summary.

        Raises:
            TrainingInterrupted: on Ctrl-C or SIGTERM; a checkpoint of the step reached is
                saved first (a second signal stops at once; the last checkpoint stays).
            DivergenceError: a non-finite value (see ``train.nonfinite``); the last good
                checkpoint stays.
            ConfigError, RunError, CheckpointError, reclra.data.DataError: bad config, run
                folder, checkpoint, data or options (before any training).
        """
        ckpt = self._check_folder()
        shape = dataset_shape(self.cfg.data.dataset)
        if shape is not None:  # the builders' own checks, before the data are loaded
            _build(self.cfg, *shape)
        created = self._make_folder()
        with _runtime(self.cfg.train, self.device):
            try:
                first, position = self._setup(ckpt)
            except BaseException:
                if created:  # leave no empty folder behind a failed start
                    with contextlib.suppress(OSError):
                        self.out_dir.rmdir()
                raise
            self._start_outputs(first)
            test_eval = None
            epochs, every = self.cfg.train.epochs, self.cfg.train.checkpoint_every
            patience, by = self.cfg.train.patience, self.best_by
            try:
                with _stop_signals() as self._stop:
                    for epoch in range(first, epochs + 1):
                        if _early_stop(self.metrics, by, patience):
                            break
                        record = {"epoch": epoch, **self._train_epoch(epoch, position)}
                        position = None
                        if epoch == first and self.changed:
                            record["resumed"] = {"changed": self.changed}
                        test_eval = self._evaluate_all(record)
                        self.metrics.append(record)
                        with open(self.path(METRICS), "a", encoding="utf-8") as handle:
                            handle.write(json.dumps(record) + "\n")
                        if _best(self.metrics, by)["epoch"] == epoch:
                            self._save_checkpoint(epoch, BEST)
                        stop = _early_stop(self.metrics, by, patience)
                        signalled = self._stop.signal
                        if epoch % every == 0 or epoch == epochs or stop or signalled:
                            self._save_checkpoint(epoch)
                        if self.on_epoch is not None:
                            self.on_epoch(record)
                        signalled = self._stop.signal  # (or during on_epoch)
                        if signalled is not None and epoch < epochs:
                            if self.saved_epoch != epoch:
                                self._save_checkpoint(epoch)
                            raise TrainingInterrupted(
                                epoch, self.path(CHECKPOINT), signal=signalled
                            )
            except TrainingInterrupted:
                raise
            except KeyboardInterrupt:
                raise TrainingInterrupted(self.saved_epoch, self.path(CHECKPOINT)) from None
            finally:
                self._stop = _StopRequest()
            if test_eval is None:  # resumed a finished run: nothing was trained
                assert self.rule is not None and self.dataset is not None
                test_eval = _evaluate_with(self.cfg, self.rule, self.dataset.test)
            return self._finish(test_eval)

    def _finish(self, test_eval: Evaluation) -> dict[str, Any]:
        """Write summary.json and the learning curve; returns the summary."""
        assert self.rule is not None and self.dataset is not None
        ds, last = self.dataset, self.metrics[-1]
        error_keys = [k for k in last if k.endswith("_error")]
        by = self.best_by
        best = _best(self.metrics, by)
        stopped = last["epoch"] < self.cfg.train.epochs
        summary = {
            "rule": self.cfg.rule["name"],
            "model": self.cfg.model["name"],
            "epochs": last["epoch"],
            "stopped_early": stopped,
            "final": {k: last[k] for k in error_keys},
            "best": {"by": by, "epoch": best["epoch"], **{k: best[k] for k in error_keys}},
            "seconds_per_epoch": statistics.median(m["seconds"] for m in self.metrics),
            "train_seconds": sum(m["seconds"] for m in self.metrics),
            "parameters": count_parameters(self.rule),
            "test_report": classification_report(
                test_eval.y_true, test_eval.y_pred, ds.num_classes
            ),
            "dataset": {
                "name": ds.name,
                "source": ds.source,
                "num_classes": ds.num_classes,
                "input_shape": list(ds.input_shape),
                "sizes": {"train": len(ds.train), "val": len(ds.val), "test": len(ds.test)},
            },
            "device": _describe_device(self.device),
            "versions": {
                "reclra": reclra.__version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
            "config": self.cfg.to_dict(),
            "out_dir": str(self.out_dir),
        }
        _write_json(self.path(SUMMARY), summary)
        title = f"{self.cfg.rule['name']} · {self.cfg.model['name']} · {ds.name}"
        plot_learning_curves(self.metrics, self.path(CURVE), title)
        return summary


def fit(
    config: Config | Mapping[str, Any] | str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train ``config`` into the run folder ``out_dir``; returns the summary (see :class:`Trainer`).

    Args:
        config: a :class:`~reclra.config.Config`, a mapping of sections (missing keys keep
            their defaults), or the path of a YAML config file (e.g. a run's ``config.yaml``).
        out_dir: the run folder (None: :func:`default_run_dir`).
    """
    if isinstance(config, (str, os.PathLike)):
        cfg = load_config(config)
    elif isinstance(config, Config):
        cfg = config
    else:
        cfg = Config.from_dict(config)
    trainer = Trainer(
        cfg,
        default_run_dir(cfg) if out_dir is None else out_dir,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        on_epoch=on_epoch,
    )
    return trainer.run()
