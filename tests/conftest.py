"""Shared fixtures: isolation from the machine's data folders, and a tiny learnable dataset."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.utils.cpp_extension

from reclra import data
from reclra.config import Config, merge_config

TINY_TRAIN, TINY_TEST = 300, 100

# rec-LRA's compiled step is built once, in the machine's cache, for every test and every process
# a test starts: the fixtures that empty XDG_CACHE_HOME must not move it (a 30 s build each)
os.environ.setdefault("TORCH_EXTENSIONS_DIR", torch.utils.cpp_extension.get_default_build_root())


def _write_idx_ubyte(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an uncompressed IDX file."""
    header = struct.pack(f">HBB{array.ndim}I", 0, 0x08, array.ndim, *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def _tiny_images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """28×28 noise images with a bright 7×7 block in the grid cell of their class (0–9)."""
    labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
    images = rng.integers(0, 100, size=(n, 28, 28), dtype=np.uint8)
    for i, c in enumerate(labels):
        r, col = divmod(int(c), 4)
        images[i, 7 * r : 7 * r + 7, 7 * col : 7 * col + 7] = rng.integers(120, 230, size=(7, 7))
    return images, labels


@pytest.fixture(scope="session")
def tiny_idx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding ``fashion-mnist/`` with 300 train / 100 test learnable fake images.

    Pass it as ``data_dir`` (``--data-dir``); the class of an image is the position of its bright
    block, so a small MLP gets well below chance within a few epochs.
    """
    root = tmp_path_factory.mktemp("tiny-data")
    folder = root / "fashion-mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for part, n in (("train", TINY_TRAIN), ("t10k", TINY_TEST)):
        images, labels = _tiny_images(n, rng)
        _write_idx_ubyte(folder / f"{part}-images-idx3-ubyte", images)
        _write_idx_ubyte(folder / f"{part}-labels-idx1-ubyte", labels)
    return root


@pytest.fixture
def no_machine_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No machine data folders, an empty cache, and any network access fails the test (downloads
    stay enabled, for tests that monkeypatch ``data.locate.fetch_url`` themselves)."""
    monkeypatch.delenv("RECLRA_DATA", raising=False)
    monkeypatch.delenv("RECLRA_NO_DOWNLOAD", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setattr(data.locate, "SYSTEM_DATASET_DIR", tmp_path / "system")

    def no_network(url: str, dest: object, *, timeout: float = 0.0) -> None:
        raise AssertionError(f"unexpected network access in tests: {url}")

    monkeypatch.setattr(data.locate, "fetch_url", no_network)


@pytest.fixture
def isolated_data(no_machine_data: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test provides is found, and downloading is switched off."""
    monkeypatch.setenv("RECLRA_NO_DOWNLOAD", "1")


@pytest.fixture
def float64() -> Iterator[None]:
    """Exact comparisons in double precision; the default dtype is restored afterwards."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run torch on one thread (tiny ops on a busy 2-core machine are much faster that way)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_config(tiny_idx_dir: Path) -> Config:
    """A fast config on the tiny set: 2×32 MLP, 3 epochs, batches of 10, one thread."""
    return merge_config(
        Config(),
        {
            "model": {"hidden": [32, 32]},
            "optim": {"lr": 0.01},
            "data": {
                "dataset": "fashion-mnist",
                "data_dir": str(tiny_idx_dir),
                "val_size": 50,
                "batch_size": 10,
                "eval_batch_size": 100,
            },
            "train": {"epochs": 3, "threads": 1, "eval_samples": 4, "device": "cpu"},
        },
    )
