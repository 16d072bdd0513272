"""Tests of reclra.data: IDX reading, locating/downloading, splits and mini-batches."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from reclra import data
from reclra.data import (
    DataError,
    Dataset,
    DatasetNotFound,
    Split,
    iterate_minibatches,
    load_dataset,
    read_idx,
)

# Captured before the autouse fixture clears it: CI points it at real data.
_REAL_DATA = os.environ.get("RECLRA_DATA")

_CODES = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of ``array`` (big-endian header and payload)."""
    array = np.asarray(array)
    code = _CODES[f"{array.dtype.kind}{array.dtype.itemsize}"]
    header = struct.pack(f">HBB{array.ndim}I", 0, code, array.ndim, *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file, gzip-compressed when the name ends in ``.gz``."""
    payload = idx_bytes(array)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


def fake_arrays(n: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` distinct 28×28 uint8 images (index i encoded in pixels 0 and 1) and labels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    index = np.arange(n)
    images[:, 0, 0] = index % 256
    images[:, 0, 1] = index // 256
    labels = (index % 10).astype(np.uint8)
    return images, labels


def make_dataset_dir(folder: Path, *, n_train: int = 50, n_test: int = 20, gz: bool = True) -> Path:
    """Write a complete MNIST-style dataset folder with small fake data."""
    suffix = ".gz" if gz else ""
    train_x, train_y = fake_arrays(n_train, seed=1)
    test_x, test_y = fake_arrays(n_test, seed=2)
    write_idx(folder / f"train-images-idx3-ubyte{suffix}", train_x)
    write_idx(folder / f"train-labels-idx1-ubyte{suffix}", train_y)
    write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", test_x)
    write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", test_y)
    return folder


def decode_index(x: torch.Tensor) -> list[int]:
    """Recover the file index written by :func:`fake_arrays` from flattened scaled images."""
    pixels = torch.round(x[:, :2] * 255).to(torch.int64)
    return (pixels[:, 0] + 256 * pixels[:, 1]).tolist()


pytestmark = pytest.mark.usefixtures("no_machine_data")  # see conftest.py


# --------------------------------------------------------------------------------------------
# read_idx
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
def test_read_idx_roundtrip(tmp_path: Path, suffix: str, dtype: str) -> None:
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    path = write_idx(tmp_path / f"a-idx3{suffix}", array)
    result = read_idx(path)
    assert result.shape == (3, 4, 5)
    assert result.dtype == np.dtype(dtype).newbyteorder("=")
    assert result.dtype.isnative
    np.testing.assert_array_equal(result, array)
    assert result.flags.writeable
    torch.from_numpy(result)  # native byte order, usable by torch


def test_read_idx_1d_labels(tmp_path: Path) -> None:
    labels = np.arange(10, dtype=np.uint8)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "l.gz", labels)), labels)


def test_read_idx_gzip_without_gz_name(tmp_path: Path) -> None:
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(gzip.compress(idx_bytes(np.arange(5, dtype=np.uint8))))
    np.testing.assert_array_equal(read_idx(path), np.arange(5))


def _corrupt(kind: str, tmp_path: Path) -> Path:
    good = idx_bytes(np.zeros((4, 3), dtype=np.uint8))
    if kind == "bad magic":
        return _write(tmp_path / "f.idx", b"\x01\x00" + good[2:])
    if kind == "unknown dtype":
        return _write(tmp_path / "f.idx", good[:2] + b"\x0a" + good[3:])
    if kind == "truncated":
        return _write(tmp_path / "f.idx", good[:-1])
    if kind == "oversized":
        return _write(tmp_path / "f.idx", good + b"\x00")
    if kind == "wrong count":  # header says 5 rows, payload has 4
        return _write(tmp_path / "f.idx", struct.pack(">HBBII", 0, 8, 2, 5, 3) + good[12:])
    if kind == "truncated header":
        return _write(tmp_path / "f.idx", good[:6])
    if kind == "not gzip":
        return _write(tmp_path / "f-idx2-ubyte.gz", good)
    if kind == "corrupt gzip":
        return _write(tmp_path / "f-idx2-ubyte.gz", gzip.compress(good)[:-6])
    raise AssertionError(kind)


def _write(path: Path, payload: bytes) -> Path:
    path.write_bytes(payload)
    return path


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("bad magic", "magic"),
        ("unknown dtype", "type code"),
        ("truncated", "truncated"),
        ("oversized", "oversized"),
        ("wrong count", "truncated"),
        ("truncated header", "header"),
        ("not gzip", "gzip"),
        ("corrupt gzip", "gzip"),
    ],
)
def test_read_idx_corruption(tmp_path: Path, kind: str, words: str) -> None:
    path = _corrupt(kind, tmp_path)
    with pytest.raises(DataError, match=words) as excinfo:
        read_idx(path)
    assert str(path) in str(excinfo.value)
    assert isinstance(excinfo.value, ValueError)


def test_corrupt_file_in_dataset_folder_is_reported(tmp_path: Path) -> None:
    folder = make_dataset_dir(tmp_path / "d" / "mnist")
    bad = folder / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="gzip") as excinfo:
        load_dataset("mnist", data_dir=tmp_path / "d", val_size=5, download=False)
    assert str(bad) in str(excinfo.value)


def test_mismatched_image_label_counts(tmp_path: Path) -> None:
    folder = make_dataset_dir(tmp_path / "mnist")
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(49, dtype=np.uint8))
    with pytest.raises(DataError, match="49 labels") as excinfo:
        load_dataset("mnist", data_dir=tmp_path, val_size=5, download=False)
    assert "train-labels-idx1-ubyte.gz" in str(excinfo.value)
    assert "train-images-idx3-ubyte.gz" in str(excinfo.value)


def test_labels_out_of_range(tmp_path: Path) -> None:
    folder = make_dataset_dir(tmp_path / "mnist")
    labels = np.zeros(20, dtype=np.uint8)
    labels[3] = 10
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", labels)
    with pytest.raises(DataError, match="out of range") as excinfo:
        load_dataset("mnist", data_dir=tmp_path, val_size=5, download=False)
    assert str(folder / "t10k-labels-idx1-ubyte.gz") in str(excinfo.value)


def test_wrong_image_shape(tmp_path: Path) -> None:
    folder = make_dataset_dir(tmp_path / "mnist")
    write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((50, 32, 32), dtype=np.uint8))
    with pytest.raises(DataError, match="28") as excinfo:
        load_dataset("mnist", data_dir=tmp_path, val_size=5, download=False)
    assert "train-images-idx3-ubyte.gz" in str(excinfo.value)


# --------------------------------------------------------------------------------------------
# Locating
# --------------------------------------------------------------------------------------------


def test_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = make_dataset_dir(tmp_path / "explicit" / "fashion-mnist")
    env = make_dataset_dir(tmp_path / "env" / "fashion-mnist")
    system = make_dataset_dir(tmp_path / "system" / "fashion-mnist")
    cache = make_dataset_dir(tmp_path / "xdg-cache" / "reclra" / "fashion-mnist")
    monkeypatch.setenv("RECLRA_DATA", str(tmp_path / "env"))

    def source(**kwargs: object) -> str:
        return load_dataset("fashion-mnist", val_size=5, download=False, **kwargs).source

    assert source(data_dir=tmp_path / "explicit") == str(explicit)
    assert source() == str(env)
    monkeypatch.delenv("RECLRA_DATA")
    assert source() == str(system)
    monkeypatch.setattr(data.locate, "SYSTEM_DATASET_DIR", tmp_path / "elsewhere")
    assert source() == str(cache)


def test_home_cache_without_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.cache_dir("fmnist") == tmp_path / "home" / ".cache" / "reclra" / "fashion-mnist"


@pytest.mark.parametrize("folder_name", ["fashion-mnist", "fashion_mnist", "FashionMNIST", ""])
def test_alias_folders_and_flat_data_dir(tmp_path: Path, folder_name: str) -> None:
    folder = make_dataset_dir(tmp_path / "root" / folder_name if folder_name else tmp_path / "root")
    ds = load_dataset("fmnist", data_dir=tmp_path / "root", val_size=5, download=False)
    assert ds.source == str(folder)
    assert ds.name == "fashion-mnist"


def test_uncompressed_files(tmp_path: Path) -> None:
    make_dataset_dir(tmp_path / "mnist", gz=False)
    ds = load_dataset("mnist", data_dir=tmp_path, val_size=5, download=False)
    assert len(ds.train) == 45 and len(ds.test) == 20


def test_incomplete_folder_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    partial = make_dataset_dir(tmp_path / "explicit" / "mnist")
    (partial / "t10k-labels-idx1-ubyte.gz").unlink()
    system = make_dataset_dir(tmp_path / "system" / "mnist")
    ds = load_dataset("mnist", data_dir=tmp_path / "explicit", val_size=5, download=False)
    assert ds.source == str(system)


@pytest.mark.parametrize("how", ["argument", "env"])
def test_not_found_lists_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    monkeypatch.setenv("RECLRA_DATA", str(tmp_path / "env"))
    partial = tmp_path / "explicit" / "fashion-mnist"
    write_idx(partial / "train-labels-idx1-ubyte.gz", np.zeros(3, dtype=np.uint8))
    if how == "env":
        monkeypatch.setenv("RECLRA_NO_DOWNLOAD", "1")
    with pytest.raises(DatasetNotFound) as excinfo:
        load_dataset("fashion-mnist", data_dir=tmp_path / "explicit", download=how == "env")
    message = str(excinfo.value)
    for folder in [
        partial,
        tmp_path / "explicit" / "fashion_mnist",
        tmp_path / "explicit" / "FashionMNIST",
        tmp_path / "explicit",
        tmp_path / "env" / "fashion-mnist",
        tmp_path / "env",
        tmp_path / "system" / "fashion-mnist",
        tmp_path / "xdg-cache" / "reclra" / "fashion-mnist",
    ]:
        assert str(folder) in message
    assert "missing train-images-idx3-ubyte.gz" in message  # the partial folder
    assert "--data-dir" in message
    assert "RECLRA_DATA" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert ("RECLRA_NO_DOWNLOAD" in message) == (how == "env")
    assert isinstance(excinfo.value, DataError)


# --------------------------------------------------------------------------------------------
# Downloading (fetch_url is monkeypatched: no network)
# --------------------------------------------------------------------------------------------


def _upstream_files() -> dict[str, bytes]:
    train_x, train_y = fake_arrays(30, seed=3)
    test_x, test_y = fake_arrays(10, seed=4)
    arrays = {
        "train-images-idx3-ubyte.gz": train_x,
        "train-labels-idx1-ubyte.gz": train_y,
        "t10k-images-idx3-ubyte.gz": test_x,
        "t10k-labels-idx1-ubyte.gz": test_y,
    }
    return {name: gzip.compress(idx_bytes(array), mtime=0) for name, array in arrays.items()}


def _serve(monkeypatch: pytest.MonkeyPatch, files: dict[str, bytes]) -> list[str]:
    fetched: list[str] = []

    def fake_fetch(url: str, dest: Path, *, timeout: float = 0.0) -> None:
        fetched.append(url)
        Path(dest).write_bytes(files[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(data.locate, "fetch_url", fake_fetch)
    return fetched


def test_download_checksum_match(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = _upstream_files()
    checksums = {name: hashlib.md5(blob).hexdigest() for name, blob in files.items()}
    monkeypatch.setitem(data.locate._MD5, "mnist", checksums)
    fetched = _serve(monkeypatch, files)
    ds = load_dataset("mnist", val_size=5)
    cache = tmp_path / "xdg-cache" / "reclra" / "mnist"
    assert ds.source == str(cache)
    assert len(ds.train) == 25 and len(ds.val) == 5 and len(ds.test) == 10
    assert sorted(p.name for p in cache.iterdir()) == sorted(files)
    assert all(url.startswith("https://ossci-datasets.s3.amazonaws.com/mnist/") for url in fetched)
    assert len(fetched) == 4
    # A second load uses the cache without fetching again.
    load_dataset("mnist", val_size=5)
    assert len(fetched) == 4


def test_download_checksum_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = _upstream_files()
    _serve(monkeypatch, files)  # the real upstream checksums cannot match the fake files
    with pytest.raises(DataError, match="checksum") as excinfo:
        load_dataset("fashion-mnist", val_size=5)
    assert not isinstance(excinfo.value, DatasetNotFound)
    cache = tmp_path / "xdg-cache" / "reclra" / "fashion-mnist"
    assert list(cache.iterdir()) == []  # no temp file, no kept file


def test_download_failure_is_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_fetch(url: str, dest: Path, *, timeout: float = 0.0) -> None:
        Path(dest).write_bytes(b"partial")
        raise TimeoutError("timed out")

    monkeypatch.setattr(data.locate, "fetch_url", failing_fetch)
    with pytest.raises(DatasetNotFound, match="timed out") as excinfo:
        load_dataset("fashion-mnist")
    assert "fashion-mnist.s3-website" in str(excinfo.value)
    assert list((tmp_path / "xdg-cache" / "reclra" / "fashion-mnist").iterdir()) == []


def test_no_download_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECLRA_NO_DOWNLOAD", "1")
    with pytest.raises(DatasetNotFound, match="RECLRA_NO_DOWNLOAD"):
        load_dataset("mnist")  # fetch_url would fail the test with AssertionError


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------


@pytest.fixture
def mnist_dir(tmp_path: Path) -> Path:
    make_dataset_dir(tmp_path / "data" / "mnist", n_train=60, n_test=15)
    return tmp_path / "data"


def test_split_types_and_shapes(mnist_dir: Path) -> None:
    ds = load_dataset("mnist", data_dir=mnist_dir, val_size=10, download=False)
    assert isinstance(ds, Dataset)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (50, 10, 15)
    for split in (ds.train, ds.val, ds.test):
        assert isinstance(split, Split)
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.shape[1] == 784 == ds.input_dim
        assert split.x.min().item() >= 0.0 and split.x.max().item() <= 1.0
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    assert ds.train.x.view(-1, *ds.input_shape).shape == (50, 1, 28, 28)
    assert decode_index(ds.test.x) == list(range(15))
    # Labels follow the examples (label = index % 10 in the fake data).
    assert ds.train.y.tolist() == [i % 10 for i in decode_index(ds.train.x)]


def test_val_split_deterministic_disjoint(mnist_dir: Path) -> None:
    def indices(seed: int) -> tuple[list[int], list[int]]:
        ds = load_dataset("mnist", data_dir=mnist_dir, val_size=12, seed=seed, download=False)
        return decode_index(ds.train.x), decode_index(ds.val.x)

    train_a, val_a = indices(0)
    assert indices(0) == (train_a, val_a)
    assert indices(1)[1] != val_a
    assert len(val_a) == 12 and len(train_a) == 48
    assert not set(train_a) & set(val_a)
    assert sorted(train_a + val_a) == list(range(60))
    assert train_a == sorted(train_a) and val_a == sorted(val_a)
    generator = torch.Generator().manual_seed(0)
    assert val_a == sorted(torch.randperm(60, generator=generator)[:12].tolist())


def test_limit_train(mnist_dir: Path) -> None:
    full = load_dataset("mnist", data_dir=mnist_dir, val_size=12, seed=3, download=False)
    limited = load_dataset(
        "mnist", data_dir=mnist_dir, val_size=12, seed=3, limit_train=7, download=False
    )
    assert decode_index(limited.train.x) == decode_index(full.train.x)[:7]
    assert decode_index(limited.val.x) == decode_index(full.val.x)
    more = load_dataset("mnist", data_dir=mnist_dir, val_size=12, limit_train=1000, download=False)
    assert len(more.train) == 48


def test_val_size_zero(mnist_dir: Path) -> None:
    ds = load_dataset("mnist", data_dir=mnist_dir, val_size=0, download=False)
    assert len(ds.val) == 0 and ds.val.x.shape == (0, 784) and len(ds.train) == 60


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"val_size": -1}, "val_size"),
        ({"val_size": 60}, "val_size"),
        ({"val_size": 1.5}, "val_size"),
        ({"limit_train": 0}, "limit_train"),
        ({"limit_train": True}, "limit_train"),
    ],
)
def test_argument_validation(mnist_dir: Path, kwargs: dict, match: str) -> None:
    kwargs = {"val_size": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        load_dataset("mnist", data_dir=mnist_dir, download=False, **kwargs)


def test_unknown_name_and_registry() -> None:
    with pytest.raises(DataError, match="cifar10, digits, fashion-mnist, imagefolder, mnist"):
        load_dataset("cifar-100")
    assert data.dataset_names() == ["cifar10", "digits", "fashion-mnist", "imagefolder", "mnist"]
    assert set(data.DATASETS.names()) == set(data.dataset_names())


def test_digits() -> None:
    ds = load_dataset("digits")
    assert ds.source == "sklearn digits" and ds.input_shape == (1, 8, 8)
    assert ds.train.x.shape[1] == 64
    n_train_full = len(ds.train) + len(ds.val)
    assert len(ds.test) == 1797 // 5 and n_train_full + len(ds.test) == 1797
    assert len(ds.val) == n_train_full // 5  # default 2000 capped at 20% of train
    assert ds.train.x.min().item() >= 0.0 and ds.train.x.max().item() == 1.0
    other = load_dataset("digits", seed=5, val_size=100, limit_train=300)
    assert torch.equal(other.test.x, ds.test.x)  # the test split does not depend on seed
    assert len(other.val) == 100 and len(other.train) == 300
    assert set(ds.train.y.tolist()) == set(range(10))


def test_split_length_mismatch() -> None:
    with pytest.raises(ValueError, match="rows"):
        Split(torch.zeros(3, 2), torch.zeros(2, dtype=torch.int64))


# --------------------------------------------------------------------------------------------
# Mini-batches
# --------------------------------------------------------------------------------------------


def _index_split(n: int) -> Split:
    return Split(torch.arange(n, dtype=torch.float32)[:, None], torch.arange(n))


def test_minibatches_shuffle_covers_each_once() -> None:
    split = _index_split(23)
    generator = torch.Generator().manual_seed(0)
    epochs = []
    for _ in range(2):
        batches = list(iterate_minibatches(split, 5, shuffle=True, generator=generator))
        assert [len(y) for _, y in batches] == [5, 5, 5, 5, 3]
        order = torch.cat([y for _, y in batches]).tolist()
        assert sorted(order) == list(range(23))
        assert all(torch.equal(x[:, 0].long(), y) for x, y in batches)
        epochs.append(order)
    assert epochs[0] != epochs[1] and epochs[0] != list(range(23))
    again = iterate_minibatches(split, 5, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert torch.cat([y for _, y in again]).tolist() == epochs[0]


def test_minibatches_in_order_and_device() -> None:
    batches = list(iterate_minibatches(_index_split(10), 4, shuffle=False, device="cpu"))
    assert [y.tolist() for _, y in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert list(iterate_minibatches(_index_split(0), 4, shuffle=True)) == []
    with pytest.raises(ValueError, match="batch_size"):
        next(iterate_minibatches(_index_split(3), 0, shuffle=False))


# --------------------------------------------------------------------------------------------
# Real data (CI sets RECLRA_DATA)
# --------------------------------------------------------------------------------------------


def test_real_fashion_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    folder = Path(_REAL_DATA) / "fashion-mnist" if _REAL_DATA else None
    if folder is None or data.find_dataset_dir("fashion-mnist", data_dir=folder.parent) is None:
        pytest.skip(
            "real Fashion-MNIST not available: set RECLRA_DATA to a folder holding "
            "fashion-mnist/ with the 4 IDX files"
        )
    monkeypatch.setenv("RECLRA_DATA", _REAL_DATA)
    ds = load_dataset("fashion-mnist", download=False)
    assert ds.source == str(folder)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (58000, 2000, 10000)
    assert ds.train.x.shape == (58000, 784)
    for split in (ds.train, ds.val, ds.test):
        assert split.x.min().item() >= 0.0 and split.x.max().item() <= 1.0
        assert set(split.y.unique().tolist()) == set(range(10))
