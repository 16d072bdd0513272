"""Run configuration: dataclasses with commented defaults, YAML loading and ``section.key=value``.

A :class:`Config` has six sections. ``model`` and ``rule`` are open mappings: the key ``name``
selects the registry entry (:data:`reclra.models.MODELS`, :data:`reclra.rules.RULES`) and every
other key is passed to the builder as an option (the registry rejects unknown ones; a run's
``config.yaml`` holds every option with its default filled in, see
:func:`reclra.train.resolve_config`). ``optim``, ``schedule``, ``data`` and ``train`` are fixed
dataclasses whose fields are declared once with :func:`option` (default, check, description);
unknown keys there are errors.

Configs are layered: defaults < a YAML file (:func:`load_config`) < explicit updates
(:func:`merge_config`) < ``section.key=value`` overrides (:func:`apply_overrides`). Every layer
only changes the keys it names: switching ``model.name`` keeps the other model options.

YAML is read with a :class:`yaml.SafeLoader` subclass that also reads exponent floats without a
dot (``2e-4``) as floats, which PyYAML's YAML 1.1 rules would leave as strings.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reclra.errors import ConfigError

__all__ = [
    "DEVICE_PATTERN",
    "SECTIONS",
    "Config",
    "ConfigError",
    "DataConfig",
    "OptimConfig",
    "ScheduleConfig",
    "TrainConfig",
    "apply_overrides",
    "config_to_yaml",
    "describe",
    "load_config",
    "merge_config",
    "option",
    "parse_override",
    "parse_yaml",
]

#: Accepted values of ``train.device``.
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "step", "cosine", "poly")
#: Largest accepted ``optim.lr`` (a larger one is a typo: every rule diverges at once).
MAX_LR = 10.0

#: Options of ``optim`` and ``schedule`` that only some optimizers / schedules use: setting one
#: away from its default for another is refused (it would silently do nothing).
APPLIES_TO: dict[str, dict[str, tuple[str, ...]]] = {
    "optim": {
        "momentum": ("sgd", "rmsprop"),
        "betas": ("adam", "adamw"),
        "eps": ("adam", "adamw", "rmsprop"),
        "alpha": ("rmsprop",),
    },
    "schedule": {
        "step_size": ("step",),
        "gamma": ("step",),
        "power": ("poly",),
        "min_lr": ("cosine", "poly"),
        "total": ("cosine", "poly"),
    },
}

_SEQ_TAG = "tag:yaml.org,2002:seq"


# --------------------------------------------------------------------------------------------
# Value checks: each returns the checked (normalised) value or raises ConfigError
# --------------------------------------------------------------------------------------------

Check = Callable[[str, Any], Any]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _integer(low: int, *, none_ok: bool = False) -> Check:
    def check(where: str, value: Any) -> int | None:
        if value is None and none_ok:
            return None
        if not _is_int(value) or value < low:
            null = " (or null)" if none_ok else ""
            raise ConfigError(f"{where} must be an integer >= {low}{null}, got {value!r}")
        return value

    return check


def _seed(where: str, value: Any) -> int:
    seed = _integer(0)(where, value)
    if seed >= 2**32:
        raise ConfigError(f"{where} must be below 2**32, got {value!r}")
    return seed


def _to_float(where: str, value: Any) -> float:
    if isinstance(value, str):  # e.g. "2e-4" written in a hand-made dict
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def _number(
    low: float, *, strict: bool = False, below: float | None = None, most: float | None = None
) -> Check:
    def check(where: str, value: Any) -> float:
        value = _to_float(where, value)
        if value < low or (strict and value == low):
            raise ConfigError(f"{where} must be {'>' if strict else '>='} {low}, got {value!r}")
        if below is not None and value >= below:
            raise ConfigError(f"{where} must be below {below}, got {value!r}")
        if most is not None and value > most:
            raise ConfigError(f"{where} must be at most {most:g}, got {value!r}")
        return value

    return check


def _or_null(check: Check) -> Check:
    """``check``, with ``null`` accepted as itself."""

    def or_null(where: str, value: Any) -> Any:
        return None if value is None else check(where, value)

    return or_null


def _choice(*choices: str) -> Check:
    def check(where: str, value: Any) -> str:
        if value not in choices:
            raise ConfigError(f"{where} must be one of {', '.join(choices)}, got {value!r}")
        return value

    return check


def _flag(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    return value


def _text(*, none_ok: bool = False) -> Check:
    def check(where: str, value: Any) -> str | None:
        if value is None and none_ok:
            return None
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where} must be a non-empty string, got {value!r}")
        return value

    return check


def _betas(where: str, value: Any) -> tuple[float, float]:
    message = f"{where} must be a list of two numbers in [0, 1), got {value!r}"
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(message)
    betas = tuple(_to_float(where, b) for b in value)
    if any(not 0 <= b < 1 for b in betas):
        raise ConfigError(message)
    return betas  # type: ignore[return-value]


def _device(where: str, value: Any) -> str:
    if not isinstance(value, str) or not DEVICE_PATTERN.match(value):
        raise ConfigError(f"{where} must be auto, cpu, cuda or cuda:N, got {value!r}")
    return value


def option(default: Any, check: Check, doc: str) -> Any:
    """A config field: its default, its check and its one-line description (the schema is
    these three, declared once; the CLI's ``--help`` shows ``doc`` and the default)."""
    return field(default=default, metadata={"check": check, "doc": doc})


def describe(section: str, key: str) -> tuple[str, Any]:
    """``(doc, default)`` of the fixed-section field ``section.key``."""
    f = next(f for f in dataclasses.fields(FIXED_SECTIONS[section]) if f.name == key)
    return f.metadata["doc"], f.default


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


@dataclass
class OptimConfig:
    """The ``torch.optim`` optimizer that applies the rule's update directions."""

    name: str = option("adam", _choice(*OPTIMIZERS), f"optimizer: {', '.join(OPTIMIZERS)}")
    lr: float = option(
        2e-4, _number(0.0, strict=True, most=MAX_LR), "learning rate (of the model's group)"
    )
    weight_decay: float = option(
        0.0, _number(0.0), "weight decay (L2 for adam/sgd/rmsprop, decoupled for adamw)"
    )
    momentum: float = option(0.0, _number(0.0, below=1.0), "momentum (sgd, rmsprop)")
    betas: tuple[float, float] = option((0.9, 0.999), _betas, "adam/adamw moment decays")
    synapse_lr_scale: float = option(
        1.0,
        _number(0.0, strict=True),
        "lr of the rule's learnable error synapses relative to lr (Adam ignores a gradient's "
        "scale, so this is how γ < 1 slows E down under Adam)",
    )
    synapse_weight_decay: float | None = option(
        None,
        _or_null(_number(0.0)),
        "weight decay of the rule's learnable error synapses (null: weight_decay, as the model's;"
        " set weight_decay: 0 and this > 0 to decay E alone)",
    )
    eps: float = option(1e-8, _number(0.0, strict=True), "denominator term (adam/adamw/rmsprop)")
    alpha: float = option(0.99, _number(0.0, below=1.0), "rmsprop smoothing constant")
    fused: bool = option(
        True, _flag, "torch's fused kernel for adam/adamw/sgd (else its foreach form)"
    )


@dataclass
class ScheduleConfig:
    """How every param group's learning rate changes during the run (see reclra.schedules)."""

    name: str = option("constant", _choice(*SCHEDULES), f"schedule: {', '.join(SCHEDULES)}")
    per: str = option("epoch", _choice("epoch", "step"), "unit of the schedule: epoch or step")
    warmup: int = option(0, _integer(0), "units of linear warm-up to the full lr")
    total: int | None = option(
        None,
        _integer(1, none_ok=True),
        "units over which cosine/poly decay, warm-up included (null: the whole run)",
    )
    min_lr: float = option(0.0, _number(0.0), "cosine/poly: final lr of the model's group")
    power: float = option(1.0, _number(0.0, strict=True), "poly: exponent of the decay")
    step_size: int = option(1, _integer(1), "step: units between decays")
    gamma: float = option(0.1, _number(0.0, strict=True), "step: factor of each decay")


@dataclass
class DataConfig:
    """Which dataset, where it lives, and how it is split and batched."""

    dataset: str = option("fashion-mnist", _text(), "dataset (see `reclra list`)")
    data_dir: str | None = option(None, _text(none_ok=True), "folder searched first for data")
    val_size: int | None = option(
        None,
        _integer(0, none_ok=True),
        "validation examples drawn from the training file (null: 2000; 5000 for cifar10)",
    )
    limit_train: int | None = option(
        None, _integer(1, none_ok=True), "keep at most this many training examples"
    )
    batch_size: int = option(50, _integer(1), "training mini-batch size")
    eval_batch_size: int = option(1000, _integer(1), "evaluation batch size (memory only)")
    download: bool = option(True, _flag, "allow downloading missing files into the user cache")
    preprocess: str | None = option(
        None, _text(none_ok=True), "cifar10: gcn_zca (null: default) or none"
    )
    image_size: int | None = option(
        None, _integer(1, none_ok=True), "imagefolder: crop size (null: 224)"
    )
    resize: int | None = option(
        None, _integer(1, none_ok=True), "imagefolder: shorter side before the crop"
    )


@dataclass
class TrainConfig:
    """The training loop."""

    epochs: int = option(10, _integer(1), "passes over the training split")
    seed: int = option(
        0,
        _seed,
        "seeds torch, numpy, random, the validation draw, the shuffles and evaluation",
    )
    device: str = option("auto", _device, "auto (cuda if available), cpu, cuda or cuda:N")
    deterministic: bool = option(
        True, _flag, "torch.use_deterministic_algorithms(True, warn_only=True)"
    )
    eval_samples: int = option(
        100, _integer(1), "forward passes averaged for stochastic nets at evaluation"
    )
    checkpoint_every: int = option(1, _integer(1), "epochs between checkpoints (and at the end)")
    threads: int | None = option(
        None, _integer(1, none_ok=True), "torch CPU threads during the run (null: as is)"
    )
    patience: int | None = option(
        None,
        _integer(1, none_ok=True),
        "early stopping: epochs without a better validation error (null: never stop early)",
    )
    bn_recalibrate: int = option(
        0,
        _integer(0),
        "training batches (of data.eval_batch_size) over which batch-norm statistics are "
        "re-estimated before each evaluation (a plain average; no weight changes); 0: the "
        "running averages the training steps left",
    )
    nonfinite: str = option(
        "stop",
        _choice("stop", "skip"),
        "a non-finite loss, error neuron or update: stop (keeping the last good checkpoint) "
        "or skip the batch",
    )


def _default_model() -> dict[str, Any]:
    return {"name": "mlp"}


def _default_rule() -> dict[str, Any]:
    return {"name": "rec-lra"}


@dataclass
class Config:
    """A full run configuration (see the module docstring for the layering rules)."""

    model: dict[str, Any] = field(default_factory=_default_model)  # name + build_model options
    rule: dict[str, Any] = field(default_factory=_default_rule)  # name + build_rule options
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dicts (tuples as lists), ready for YAML, JSON or a checkpoint."""
        return {name: _plain(copy.deepcopy(_section_dict(self, name))) for name in SECTIONS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Config:
        """A validated config from nested mappings; missing sections and keys keep defaults."""
        return merge_config(cls(), data)

    def options(self, section: str) -> dict[str, Any]:
        """The builder options of the ``model`` or ``rule`` section (every key but ``name``)."""
        return {k: v for k, v in getattr(self, section).items() if k != "name"}

    def validate(self) -> Config:
        """Check every value's type and range; returns ``self``. Raises :class:`ConfigError`."""
        for name in OPEN_SECTIONS:
            _check_open_section(name, getattr(self, name))
        for name, kind in FIXED_SECTIONS.items():
            section = getattr(self, name)
            if not isinstance(section, kind):
                raise ConfigError(f"section {name!r} must be a {kind.__name__}, got {section!r}")
            for f in dataclasses.fields(kind):
                value = f.metadata["check"](f"{name}.{f.name}", getattr(section, f.name))
                setattr(section, f.name, value)
        if self.schedule.min_lr > self.optim.lr:
            raise ConfigError(
                f"schedule.min_lr={self.schedule.min_lr} is above optim.lr={self.optim.lr}"
            )
        return self

    def check_applicable(self) -> Config:
        """Refuse an ``optim``/``schedule`` option set away from its default where the chosen
        optimizer or schedule does not use it (:data:`APPLIES_TO`); returns ``self``. Checked on
        the final config (a run's), not on each layer, so the order of overrides is free."""
        for name, options in APPLIES_TO.items():
            section = getattr(self, name)
            defaults = type(section)()
            for key, users in options.items():
                value = getattr(section, key)
                if section.name not in users and value != getattr(defaults, key):
                    raise ConfigError(
                        f"{name}.{key}={_plain(value)!r} does nothing with {name}.name="
                        f"{section.name} (it applies to {', '.join(users)}); remove it or "
                        f"choose one of those"
                    )
        return self


#: Sections whose keys are open (a registry name plus builder options).
OPEN_SECTIONS = ("model", "rule")
#: Sections with a fixed set of keys.
FIXED_SECTIONS: dict[str, type] = {
    "optim": OptimConfig,
    "schedule": ScheduleConfig,
    "data": DataConfig,
    "train": TrainConfig,
}
#: Every section, in file order.
SECTIONS = (*OPEN_SECTIONS, *FIXED_SECTIONS)


def _section_dict(cfg: Config, name: str) -> dict[str, Any]:
    section = getattr(cfg, name)
    return dict(section) if name in OPEN_SECTIONS else dataclasses.asdict(section)


def _plain(value: Any) -> Any:
    """Tuples → lists, recursively (YAML's safe dumper and JSON want plain containers)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _check_open_section(name: str, section: Any) -> None:
    if not isinstance(section, Mapping):
        raise ConfigError(f"section {name!r} must be a mapping with a 'name' key, got {section!r}")
    for key in section:
        if not isinstance(key, str) or not key:
            raise ConfigError(f"{name}: option names must be non-empty strings, got {key!r}")
    registry_name = section.get("name")
    if not isinstance(registry_name, str) or not registry_name:
        raise ConfigError(f"{name}.name must be a non-empty string, got {registry_name!r}")


# --------------------------------------------------------------------------------------------
# Merging, overrides, files
# --------------------------------------------------------------------------------------------


def merge_config(cfg: Config, updates: Mapping[str, Any]) -> Config:
    """A validated copy of ``cfg`` with the keys in ``updates`` (``{section: {key: value}}``) set.

    Only the named keys change; ``cfg`` itself is not modified. Naming another model or rule
    (``model.name`` / ``rule.name``) starts that section afresh: options belong to a model or a
    rule, so the old one's options are dropped before the update's other keys are applied.

    Raises:
        ConfigError: unknown section, unknown key of a fixed section, or a bad value.
    """
    if not isinstance(updates, Mapping):
        raise ConfigError(f"a config must be a mapping of sections, got {type(updates).__name__}")
    out = copy.deepcopy(cfg)
    for section, values in updates.items():
        if section not in SECTIONS:
            raise ConfigError(
                f"unknown config section {section!r}; sections: {', '.join(SECTIONS)}"
            )
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise ConfigError(f"section {section!r} must be a mapping, got {values!r}")
        target = getattr(out, section)
        if section in OPEN_SECTIONS and values.get("name", target["name"]) != target["name"]:
            target.clear()
        for key, value in values.items():
            if section in OPEN_SECTIONS:
                target[key] = copy.deepcopy(value)
                continue
            known = [f.name for f in dataclasses.fields(target)]
            if key not in known:
                raise ConfigError(
                    f"unknown key {key!r} in section {section!r}; known keys: {', '.join(known)}"
                )
            setattr(target, key, copy.deepcopy(value))
    return out.validate()


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-3``-style floats (no dot) as floats."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str, *, where: str = "<string>") -> Any:
    """Parse YAML safely (plain data only); syntax errors become :class:`ConfigError`."""
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: plain data only
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(f"{where}: invalid YAML: {detail}") from None


def parse_override(text: str) -> tuple[str, str, Any]:
    """Split ``section.key=value`` into its parts; the value is parsed as YAML.

    Raises:
        ConfigError: no ``=``, no section, an empty key, or a value that is not valid YAML.
    """
    if "=" not in text:
        raise ConfigError(f"malformed override {text!r}: expected section.key=value")
    path, raw = text.split("=", 1)
    section, dot, key = path.strip().partition(".")
    if not dot or not section:
        raise ConfigError(
            f"malformed override {text!r}: the key must name a section, as in optim.lr=0.01"
        )
    if not key or "." in key:
        raise ConfigError(f"malformed override {text!r}: expected exactly section.key=value")
    return section, key, parse_yaml(raw, where=f"override {text!r}")


def apply_overrides(cfg: Config, overrides: Iterable[str]) -> Config:
    """A validated copy of ``cfg`` with ``section.key=value`` overrides applied in order."""
    out = cfg
    for text in overrides:
        section, key, value = parse_override(text)
        out = merge_config(out, {section: {key: value}})
    return out


def load_config(path: str | os.PathLike[str], *, base: Config | None = None) -> Config:
    """Read a YAML config file over ``base`` (default: the defaults).

    The file may name only the sections and keys it changes; an empty file is the base.

    Raises:
        ConfigError: the file is missing or unreadable, not valid YAML, not a mapping, or has
            bad sections, keys or values.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    data = parse_yaml(text, where=str(path))
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{path}: a config file must be a mapping of sections "
            f"({', '.join(SECTIONS)}), got a {type(data).__name__}"
        )
    try:
        return merge_config(base or Config(), data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


class _Dumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` writing sections as blocks and lists inline (``[256, 256]``)."""


_Dumper.add_representer(
    list, lambda dumper, value: dumper.represent_sequence(_SEQ_TAG, value, flow_style=True)
)


def config_to_yaml(cfg: Config) -> str:
    """The config as YAML text (what ``config.yaml`` of a run holds)."""
    body = yaml.dump(cfg.to_dict(), Dumper=_Dumper, sort_keys=False, default_flow_style=False)
    return f"# reclra run config (layers: defaults < file < flags < --set)\n{body}"
