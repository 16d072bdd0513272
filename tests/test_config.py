"""Tests of reclra.config: defaults, YAML files, overrides, layering and validation errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from reclra.config import (
    Config,
    ConfigError,
    DataConfig,
    OptimConfig,
    TrainConfig,
    apply_overrides,
    config_to_yaml,
    load_config,
    merge_config,
    parse_override,
    parse_yaml,
)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# Defaults and round trips
# --------------------------------------------------------------------------------------------


def test_defaults() -> None:
    cfg = Config()
    assert cfg.model == {"name": "mlp"}
    assert cfg.rule == {"name": "rec-lra"}
    assert cfg.optim == OptimConfig("adam", 2e-4, 0.0, 0.0, (0.9, 0.999))
    assert cfg.data == DataConfig("fashion-mnist", None, None, None, 50, 1000, True)
    assert (cfg.data.preprocess, cfg.data.image_size, cfg.data.resize) == (None, None, None)
    assert cfg.train == TrainConfig(10, 0, "auto", True, 100, 1, None)
    assert cfg.validate() is cfg


def test_default_sections_are_not_shared() -> None:
    a, b = Config(), Config()
    a.model["hidden"] = [3]
    assert b.model == {"name": "mlp"}


def test_to_dict_from_dict_round_trip() -> None:
    cfg = apply_overrides(Config(), ["model.hidden=[32, 16]", "optim.betas=[0.8, 0.9]"])
    d = cfg.to_dict()
    assert list(d) == ["model", "rule", "optim", "schedule", "data", "train"]
    assert d["optim"]["betas"] == [0.8, 0.9]  # plain list, not a tuple
    again = Config.from_dict(d)
    assert again == cfg
    assert again.optim.betas == (0.8, 0.9)
    d["model"]["hidden"].append(1)  # to_dict is a deep copy
    assert cfg.model["hidden"] == [32, 16]


def test_yaml_round_trip(tmp_path: Path) -> None:
    cfg = apply_overrides(
        Config(), ["model.hidden=[32, 32]", "rule.pathway=skip", "data.limit_train=500"]
    )
    text = config_to_yaml(cfg)
    assert "hidden: [32, 32]" in text
    assert load_config(write(tmp_path / "c.yaml", text)) == cfg


def test_from_dict_fills_missing_sections_and_keys() -> None:
    cfg = Config.from_dict({"train": {"epochs": 3}, "model": {"hidden": [8]}})
    assert cfg.train.epochs == 3
    assert cfg.train.seed == 0
    assert cfg.model == {"name": "mlp", "hidden": [8]}
    assert cfg.rule == {"name": "rec-lra"}


def test_options_exclude_name() -> None:
    cfg = apply_overrides(Config(), ["rule.beta=0.5", "rule.gamma=2"])
    assert cfg.options("rule") == {"beta": 0.5, "gamma": 2}
    assert cfg.options("model") == {}


# --------------------------------------------------------------------------------------------
# Overrides and layering
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("model.sizes=[784,256,10]", ("model", "sizes", [784, 256, 10])),
        ("rule.beta=0.1", ("rule", "beta", 0.1)),
        ("optim.lr=2e-4", ("optim", "lr", 2e-4)),
        ("optim.lr=1E3", ("optim", "lr", 1000.0)),
        ("data.download=true", ("data", "download", True)),
        ("data.limit_train=null", ("data", "limit_train", None)),
        ("rule.pathway=skip", ("rule", "pathway", "skip")),
        ("rule.pathway=[[0, 2], [1, 2]]", ("rule", "pathway", [[0, 2], [1, 2]])),
        ("model.activation=a=b", ("model", "activation", "a=b")),
        (" train.epochs = 3", ("train", "epochs", 3)),
    ],
)
def test_parse_override(text: str, expected: tuple) -> None:
    assert parse_override(text) == expected


def test_exponent_floats_are_floats_in_files_too(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path / "c.yaml", "optim:\n  lr: 5e-3\nrule:\n  beta: 1e-2\n"))
    assert cfg.optim.lr == 5e-3
    assert cfg.rule["beta"] == 1e-2
    assert isinstance(cfg.rule["beta"], float)


def test_apply_overrides_returns_a_copy() -> None:
    cfg = Config()
    out = apply_overrides(cfg, ["optim.lr=0.1", "model.hidden=[4]", "train.epochs=2"])
    assert (out.optim.lr, out.model["hidden"], out.train.epochs) == (0.1, [4], 2)
    assert cfg == Config()


def test_later_overrides_win() -> None:
    assert apply_overrides(Config(), ["optim.lr=0.1", "optim.lr=0.2"]).optim.lr == 0.2


def test_naming_another_model_or_rule_starts_its_options_afresh() -> None:
    cfg = apply_overrides(Config(), ["model.hidden=[8]", "rule.beta=0.3"])
    same = apply_overrides(cfg, ["model.name=mlp", "rule.name=rec-lra"])
    assert same.model == {"name": "mlp", "hidden": [8]} and same.rule["beta"] == 0.3
    cfg = apply_overrides(cfg, ["model.name=resnet18", "model.width=4", "rule.name=backprop"])
    assert cfg.model == {"name": "resnet18", "width": 4}
    assert cfg.rule == {"name": "backprop"}


def test_file_then_merge_then_overrides(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "optim: {lr: 0.5}\ntrain: {epochs: 5, seed: 7}\n")
    cfg = load_config(path)
    assert (cfg.optim.lr, cfg.train.epochs, cfg.train.seed) == (0.5, 5, 7)
    cfg = merge_config(cfg, {"train": {"epochs": 2}})
    cfg = apply_overrides(cfg, ["train.epochs=1"])
    assert (cfg.optim.lr, cfg.train.epochs, cfg.train.seed) == (0.5, 1, 7)


def test_load_config_over_a_base(tmp_path: Path) -> None:
    base = apply_overrides(Config(), ["train.epochs=4"])
    cfg = load_config(write(tmp_path / "c.yaml", "train: {seed: 3}\n"), base=base)
    assert (cfg.train.epochs, cfg.train.seed) == (4, 3)


def test_empty_file_is_the_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path / "c.yaml", "# nothing\n")) == Config()


def test_float_field_accepts_int_and_numeric_string() -> None:
    assert Config.from_dict({"optim": {"lr": 1}}).optim.lr == 1.0
    assert Config.from_dict({"optim": {"lr": "3e-4"}}).optim.lr == 3e-4


def test_validate_normalises_a_hand_made_config() -> None:
    cfg = Config(optim=OptimConfig(lr="1e-3", betas=[0.5, 0.6]))  # type: ignore[arg-type]
    cfg.validate()
    assert cfg.optim.lr == 1e-3
    assert cfg.optim.betas == (0.5, 0.6)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1"])
def test_device_values(device: str) -> None:
    assert apply_overrides(Config(), [f"train.device={device}"]).train.device == device


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("optim.lr", "expected section.key=value"),
        ("optimlr=0.1", "must name a section"),
        (".lr=0.1", "must name a section"),
        ("optim.=0.1", "expected exactly section.key=value"),
        ("optim.lr.x=0.1", "expected exactly section.key=value"),
        ("optim.lr=[1,", "invalid YAML"),
    ],
)
def test_malformed_overrides(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        apply_overrides(Config(), [text])


def test_unknown_section() -> None:
    with pytest.raises(ConfigError, match=r"unknown config section 'optimizer'.*sections: model"):
        apply_overrides(Config(), ["optimizer.lr=0.1"])


@pytest.mark.parametrize(
    ("text", "known"),
    [
        ("optim.learning_rate=0.1", "name, lr, weight_decay, momentum, betas"),
        ("data.batchsize=3", "dataset, data_dir, val_size, limit_train, batch_size"),
        ("train.epoch=3", "epochs, seed, device"),
    ],
)
def test_unknown_key_lists_the_known_ones(text: str, known: str) -> None:
    with pytest.raises(ConfigError, match=f"unknown key .* known keys: {known}"):
        apply_overrides(Config(), [text])


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("train.epochs=0", r"train.epochs must be an integer >= 1"),
        ("train.epochs=ten", r"train.epochs must be an integer >= 1"),
        ("train.epochs=2.5", r"train.epochs must be an integer >= 1"),
        ("train.epochs=true", r"train.epochs must be an integer >= 1"),
        ("data.batch_size=0", r"data.batch_size must be an integer >= 1"),
        ("data.eval_batch_size=-1", r"data.eval_batch_size must be an integer >= 1"),
        ("data.limit_train=0", r"data.limit_train must be an integer >= 1 \(or null\)"),
        ("data.val_size=-1", r"data.val_size must be an integer >= 0 \(or null\)"),
        ("data.image_size=0", r"data.image_size must be an integer >= 1 \(or null\)"),
        ("data.preprocess=3", r"data.preprocess must be a non-empty string"),
        ("data.download=maybe", r"data.download must be true or false"),
        ("data.dataset=null", r"data.dataset must be a non-empty string"),
        ("optim.lr=0", r"optim.lr must be > 0"),
        ("optim.lr=-1e-3", r"optim.lr must be > 0"),
        ("optim.lr=fast", r"optim.lr must be a number"),
        ("optim.lr=.nan", r"optim.lr must be a finite number"),
        ("optim.weight_decay=-0.1", r"optim.weight_decay must be >= 0"),
        ("optim.name=lamb", r"optim.name must be one of adam, adamw, sgd, rmsprop"),
        ("optim.alpha=1", r"optim.alpha must be below 1.0"),
        ("schedule.name=linear", r"schedule.name must be one of constant, step, cosine, poly"),
        ("schedule.per=batch", r"schedule.per must be one of epoch, step"),
        ("schedule.warmup=-1", r"schedule.warmup must be an integer >= 0"),
        ("schedule.min_lr=1", r"schedule.min_lr=1.0 is above optim.lr=0.0002"),
        ("train.patience=0", r"train.patience must be an integer >= 1 \(or null\)"),
        ("optim.betas=[0.9]", r"optim.betas must be a list of two numbers"),
        ("optim.betas=[0.9, 1.0]", r"optim.betas must be a list of two numbers"),
        ("train.device=gpu", r"train.device must be auto, cpu, cuda or cuda:N"),
        ("train.seed=-1", r"train.seed must be an integer >= 0"),
        ("train.seed=4294967296", r"train.seed must be below 2\*\*32"),
        ("train.threads=0", r"train.threads must be an integer >= 1 \(or null\)"),
        ("train.deterministic=1", r"train.deterministic must be true or false"),
        ("model.name=null", r"model.name must be a non-empty string"),
        ("rule.name=", r"rule.name must be a non-empty string"),
    ],
)
def test_bad_values(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        apply_overrides(Config(), [text])


def test_section_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="section 'train' must be a mapping"):
        Config.from_dict({"train": [1, 2]})
    with pytest.raises(ConfigError, match="section 'model' must be a mapping"):
        Config(model="mlp").validate()  # type: ignore[arg-type]


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file .*nope.yaml not found"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "3\n"])
def test_file_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="must be a mapping of sections"):
        load_config(write(tmp_path / "c.yaml", text))


def test_invalid_yaml_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"c.yaml: invalid YAML"):
        load_config(write(tmp_path / "c.yaml", "train: [1,\n"))


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"c.yaml: unknown key 'epoch' in section 'train'"):
        load_config(write(tmp_path / "c.yaml", "train: {epoch: 3}\n"))


def test_yaml_is_loaded_safely() -> None:
    with pytest.raises(ConfigError, match="invalid YAML"):
        parse_yaml("!!python/object/apply:os.system ['true']")
