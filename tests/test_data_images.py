"""Tests of reclra.data for image datasets: CIFAR-10 python batches and ImageNet-style folders."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reclra import data
from reclra.data import (
    ChannelNormalization,
    DataError,
    DatasetNotFound,
    GcnZca,
    GlobalContrastNormalization,
    ZCAWhitening,
    load_dataset,
    read_cifar_batch,
    read_image,
)

pytestmark = pytest.mark.usefixtures("no_machine_data")  # see conftest.py


# --------------------------------------------------------------------------------------------
# CIFAR-10 batches in the official format
# --------------------------------------------------------------------------------------------


def _py2_str(value: bytes) -> bytes:
    """A Python 2 ``str`` as cPickle protocol 2 writes it (SHORT_BINSTRING / BINSTRING)."""
    if len(value) < 256:
        return b"U" + bytes([len(value)]) + value
    return b"T" + struct.pack("<i", len(value)) + value


def _py2_int(value: int) -> bytes:
    """An int as cPickle protocol 2 writes it (BININT1 / BININT2 / BININT)."""
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if 0 <= value < 65536:
        return b"M" + struct.pack("<H", value)
    return b"J" + struct.pack("<i", value)


def py2_batch(images: np.ndarray, labels: list[int], label: bytes = b"training batch") -> bytes:
    """A CIFAR-10 batch pickled exactly as the official files (Python 2, protocol 2).

    The dict has the byte keys ``data`` (N×3072 uint8 array, rebuilt by
    ``numpy.core.multiarray._reconstruct``), ``labels``, ``batch_label`` and ``filenames``.
    """
    n, width = images.shape
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
        + _py2_int(0)
        + b"\x85"  # TUPLE1: shape (0,)
        + _py2_str(b"b")
        + b"\x87R"  # TUPLE3, REDUCE
        + b"("
        + _py2_int(1)
        + _py2_int(n)
        + _py2_int(width)
        + b"\x86"  # TUPLE2: shape
        + b"cnumpy\ndtype\n"
        + _py2_str(b"u1")
        + _py2_int(0)
        + _py2_int(1)
        + b"\x87R("
        + _py2_int(3)
        + _py2_str(b"|")
        + b"NNN"
        + b"J\xff\xff\xff\xffJ\xff\xff\xff\xff"
        + _py2_int(0)
        + b"tb"  # dtype state, BUILD
        + b"\x89"  # NEWFALSE: not Fortran order
        + _py2_str(np.ascontiguousarray(images).tobytes())
        + b"tb"  # array state, BUILD
    )

    def py2_list(items: list[bytes]) -> bytes:
        return b"](" + b"".join(items) + b"e"

    names = [_py2_str(f"image_{i}.png".encode()) for i in range(n)]
    return (
        b"\x80\x02}("
        + _py2_str(b"data")
        + array
        + _py2_str(b"labels")
        + py2_list([_py2_int(int(v)) for v in labels])
        + _py2_str(b"batch_label")
        + _py2_str(label)
        + _py2_str(b"filenames")
        + py2_list(names)
        + b"u."
    )


def cifar_images(n: int, rng: np.random.Generator, first: int = 0) -> tuple[np.ndarray, list[int]]:
    """``n`` class-dependent images (N×3072) and their labels.

    The red plane of an image of class c holds values in [20c, 20c + 9]; the green plane is
    noise; pixels 0 and 1 of the blue plane encode the running index ``first + i``.
    """
    labels = [int(v) for v in rng.integers(0, 10, size=n)]
    images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i, 0] = 20 * label + rng.integers(0, 10, size=(32, 32))
        index = first + i
        images[i, 2, 0, 0], images[i, 2, 0, 1] = index % 256, index // 256
    return images.reshape(n, -1), labels


def decode_index(x: torch.Tensor) -> list[int]:
    """The running index of :func:`cifar_images` from flattened [0, 1] images."""
    blue = torch.round(x.view(-1, 3, 32, 32)[:, 2, 0, :2] * 255).to(torch.int64)
    return (blue[:, 0] + 256 * blue[:, 1]).tolist()


def decode_label(x: torch.Tensor) -> list[int]:
    """The class of :func:`cifar_images` from flattened [0, 1] images (red plane mean)."""
    red = x.view(-1, 3, 32, 32)[:, 0].mean(dim=(1, 2)) * 255
    return torch.div(red, 20, rounding_mode="floor").to(torch.int64).tolist()


N_BATCH, N_TEST = 24, 40
N_TRAIN = 5 * N_BATCH


def write_cifar(folder: Path, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Write a complete ``cifar-10-batches-py``-style folder: 5 batches of 24, a test of 40."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for b in range(5):
        x, y = cifar_images(N_BATCH, rng, first=b * N_BATCH)
        (folder / f"data_batch_{b + 1}").write_bytes(py2_batch(x, y))
        xs.append(x)
        ys += y
    test_x, test_y = cifar_images(N_TEST, rng, first=1000)
    (folder / "test_batch").write_bytes(py2_batch(test_x, test_y, b"testing batch 1 of 1"))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"num_cases_per_batch": N_BATCH}, 2))
    return {
        "train_x": np.concatenate(xs),
        "train_y": np.array(ys),
        "test_x": test_x,
        "test_y": np.array(test_y),
    }


def make_archive(path: Path, folder: Path, extra: dict[str, bytes] | None = None) -> Path:
    """A ``cifar-10-python.tar.gz`` holding ``folder`` as ``cifar-10-batches-py/``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
        for name, payload in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


@pytest.fixture
def cifar_root(tmp_path: Path) -> Path:
    """A data root holding ``cifar10/cifar-10-batches-py/``."""
    write_cifar(tmp_path / "data" / "cifar10" / "cifar-10-batches-py")
    return tmp_path / "data"


def load_raw_cifar(root: Path, **kwargs: object) -> data.Dataset:
    return load_dataset(
        "cifar10", data_dir=root, download=False, **{"val_size": 20, "preprocess": "none", **kwargs}
    )


def test_read_official_batch_format(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images, labels = cifar_images(5, rng)
    path = tmp_path / "data_batch_1"
    path.write_bytes(py2_batch(images, labels))
    x, y = read_cifar_batch(path)
    assert x.dtype == np.uint8 and x.shape == (5, 3072) and x.flags.writeable
    np.testing.assert_array_equal(x, images)
    assert y.dtype == np.int64 and y.tolist() == labels
    # A batch re-saved by Python 3 / numpy 2 (protocol 4) reads the same.
    path.write_bytes(pickle.dumps({b"data": images, b"labels": labels}, protocol=4))
    np.testing.assert_array_equal(read_cifar_batch(path)[0], images)


def test_cifar10_raw_pixels(tmp_path: Path) -> None:
    written = write_cifar(tmp_path / "cifar10" / "cifar-10-batches-py")
    ds = load_raw_cifar(tmp_path)
    assert ds.name == "cifar10" and ds.input_shape == (3, 32, 32) and ds.num_classes == 10
    assert (len(ds.train), len(ds.val), len(ds.test)) == (N_TRAIN - 20, 20, N_TEST)
    assert ds.preprocessing is None
    assert ds.source == str(tmp_path / "cifar10" / "cifar-10-batches-py")
    for split in (ds.train, ds.val, ds.test):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.shape[1] == 3072 and split.x.min() >= 0 and split.x.max() <= 1
        assert split.y.tolist() == decode_label(split.x)  # labels follow their images
    # Channel-major rows: x.view(-1, 3, 32, 32) is the image, exactly the stored pixels / 255.
    expected = torch.from_numpy(written["test_x"]).view(-1, 3, 32, 32).float() / 255
    assert torch.equal(ds.test.x.view(-1, 3, 32, 32), expected)
    indices = decode_index(ds.train.x) + decode_index(ds.val.x)
    assert sorted(indices) == list(range(N_TRAIN))
    assert decode_index(ds.train.x) == sorted(decode_index(ds.train.x))  # file order kept


@pytest.mark.parametrize(
    ("origin", "folder"),
    [
        ("data_dir", "d/cifar-10-batches-py"),
        ("data_dir", "d/cifar10/cifar-10-batches-py"),
        ("data_dir", "d/cifar-10/cifar-10-batches-py"),
        ("data_dir", "d/cifar10"),
        ("data_dir", "d"),
        ("env", "e/cifar10/cifar-10-batches-py"),
        ("env", "e/cifar-10-batches-py"),
        ("system", "system/cifar10/cifar-10-batches-py"),
        ("system", "system/cifar10"),
        ("cache", "xdg-cache/reclra/cifar10/cifar-10-batches-py"),
    ],
)
def test_cifar10_locations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, origin: str, folder: str
) -> None:
    write_cifar(tmp_path / folder)
    (tmp_path / "d").mkdir(exist_ok=True)  # an existing data_dir without the files: env next
    monkeypatch.setenv("RECLRA_DATA", str(tmp_path / "e"))
    ds = load_dataset(
        "CIFAR-10", data_dir=tmp_path / "d", val_size=5, preprocess="none", download=False
    )
    assert ds.source == str(tmp_path / folder)


def test_cifar10_archive_is_extracted_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written = write_cifar(tmp_path / "src" / "cifar-10-batches-py")
    make_archive(
        tmp_path / "d" / "cifar10" / "cifar-10-python.tar.gz",
        tmp_path / "src" / "cifar-10-batches-py",
    )
    ds = load_raw_cifar(tmp_path / "d")
    cache = tmp_path / "xdg-cache" / "reclra" / "cifar10" / "cifar-10-batches-py"
    assert ds.source == str(cache)
    assert sorted(p.name for p in cache.iterdir()) == sorted([*data.CIFAR10_FILES, "batches.meta"])
    assert [p.name for p in cache.parent.iterdir()] == ["cifar-10-batches-py"]  # no temp folder
    expected = torch.from_numpy(written["test_x"]).float() / 255
    assert torch.equal(ds.test.x, expected)

    def no_extract(archive: object, dest: object) -> Path:
        raise AssertionError("extracted twice")

    monkeypatch.setattr(data.locate, "extract_cifar10_archive", no_extract)
    assert load_raw_cifar(tmp_path / "d").source == str(cache)


@pytest.mark.parametrize(
    ("member", "words"),
    [
        ("/tmp/evil-abs", "absolute path"),
        ("../evil", "'..'"),
        ("cifar-10-batches-py/../../evil", "'..'"),
    ],
)
def test_cifar10_archive_unsafe_member(tmp_path: Path, member: str, words: str) -> None:
    write_cifar(tmp_path / "src" / "cifar-10-batches-py")
    archive = make_archive(
        tmp_path / "d" / "cifar-10-python.tar.gz",
        tmp_path / "src" / "cifar-10-batches-py",
        {member: b"owned"},
    )
    with pytest.raises(DataError, match=f"refusing to extract .*{words}") as excinfo:
        load_raw_cifar(tmp_path / "d")
    assert str(archive) in str(excinfo.value) and member in str(excinfo.value)
    cache = tmp_path / "xdg-cache" / "reclra" / "cifar10"
    assert list(cache.iterdir()) == []  # nothing extracted, no temp folder left
    assert not (tmp_path / "evil").exists() and not (tmp_path / "xdg-cache" / "evil").exists()


def test_cifar10_archive_corrupt_or_incomplete(tmp_path: Path) -> None:
    write_cifar(tmp_path / "src" / "cifar-10-batches-py")
    archive = make_archive(
        tmp_path / "d" / "cifar-10-python.tar.gz", tmp_path / "src" / "cifar-10-batches-py"
    )
    archive.write_bytes(archive.read_bytes()[:2000])
    with pytest.raises(DataError) as excinfo:
        load_raw_cifar(tmp_path / "d")
    assert str(archive) in str(excinfo.value)
    (tmp_path / "src" / "cifar-10-batches-py" / "test_batch").unlink()
    make_archive(archive, tmp_path / "src" / "cifar-10-batches-py")
    with pytest.raises(DataError, match="test_batch") as excinfo:
        load_raw_cifar(tmp_path / "d")
    assert str(archive) in str(excinfo.value)


def _malicious(kind: str, marker: Path) -> bytes:
    command = f"touch {marker}"
    if kind == "os.system":  # what a hand-written exploit looks like
        return b"\x80\x02cos\nsystem\n" + _py2_str(command.encode()) + b"\x85R."
    if kind == "reduce":  # an object whose __reduce__ calls os.system (pickled as posix.system)

        class Exploit:
            def __reduce__(self) -> tuple:
                return (os.system, (command,))

        return pickle.dumps({b"data": Exploit(), b"labels": [0]}, protocol=4)
    if kind == "builtins.eval":
        return pickle.dumps({b"data": _Eval(command)}, protocol=4)
    if kind == "numpy.other":  # an allowed module, a forbidden name
        return b"\x80\x02cnumpy.testing._private.utils\nrunstring\n" + _py2_str(b"1") + b"}\x86R."
    raise AssertionError(kind)


class _Eval:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return (eval, (f"__import__('os').system({self.command!r})",))


@pytest.mark.parametrize(
    ("kind", "reference"),
    [
        ("os.system", "os.system"),
        ("reduce", f"{os.system.__module__}.system"),
        ("builtins.eval", "builtins.eval"),
        ("numpy.other", "numpy.testing._private.utils.runstring"),
    ],
)
def test_malicious_pickle_is_refused(cifar_root: Path, kind: str, reference: str) -> None:
    marker = cifar_root.parent / "pwned"
    path = cifar_root / "cifar10" / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(_malicious(kind, marker))
    with pytest.raises(DataError, match="refusing to load") as excinfo:
        load_raw_cifar(cifar_root)
    message = str(excinfo.value)
    assert str(path) in message and f"it references {reference}" in message
    assert not marker.exists()
    with pytest.raises(DataError, match="refusing to load"):
        read_cifar_batch(path)
    assert not marker.exists()


def _bad_batch(kind: str) -> bytes:
    rng = np.random.default_rng(2)
    images, labels = cifar_images(6, rng)
    if kind == "truncated":
        return py2_batch(images, labels)[:-500]
    if kind == "garbage":
        return b"this is not a pickle at all"
    if kind == "not a dict":
        return pickle.dumps([images, labels], protocol=4)
    if kind == "no data":
        return pickle.dumps({b"labels": labels}, protocol=4)
    if kind == "wrong width":
        return py2_batch(images[:, :3071], labels)
    if kind == "float pixels":
        return pickle.dumps({b"data": images.astype(np.float32), b"labels": labels}, protocol=4)
    if kind == "label 10":
        return py2_batch(images, [*labels[:-1], 10])
    if kind == "label -1":
        return py2_batch(images, [-1, *labels[1:]])
    if kind == "count":
        return py2_batch(images, labels[:-1])
    if kind == "empty":
        return py2_batch(images[:0], [])
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("truncated", "truncated pickle"),
        ("garbage", "corrupt"),
        ("not a dict", "not a dict"),
        ("no data", "no 'data' entry"),
        ("wrong width", "N×3072"),
        ("float pixels", "uint8"),
        ("label 10", "label 10 out of range"),
        ("label -1", "label -1 out of range"),
        ("count", "6 images but 5 labels"),
        ("empty", "no images"),
    ],
)
def test_bad_batches(cifar_root: Path, kind: str, words: str) -> None:
    path = cifar_root / "cifar10" / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(_bad_batch(kind))
    with pytest.raises(DataError, match=words) as excinfo:
        load_raw_cifar(cifar_root)
    assert str(path) in str(excinfo.value)


def test_cifar10_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    partial = tmp_path / "d" / "cifar10" / "cifar-10-batches-py"
    write_cifar(partial)
    (partial / "data_batch_5").unlink()
    with pytest.raises(DatasetNotFound) as excinfo:
        load_dataset("cifar10", data_dir=tmp_path / "d", download=False)
    message = str(excinfo.value)
    assert "cifar-10-batches-py/" in message and "cifar-10-python.tar.gz" in message
    assert "cifar-10-batches-py/ missing data_batch_5" in message
    for folder in [tmp_path / "d" / "cifar10", tmp_path / "system" / "cifar10"]:
        assert str(folder) in message
    assert "--data-dir" in message and "download=False" in message

    def failing_fetch(url: str, dest: Path, *, timeout: float = 0.0) -> None:
        Path(dest).write_bytes(b"partial")
        raise OSError("Network is unreachable")

    monkeypatch.setattr(data.locate, "fetch_url", failing_fetch)
    with pytest.raises(DatasetNotFound, match="Network is unreachable") as excinfo:
        load_dataset("cifar10")
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in str(excinfo.value)
    assert list((tmp_path / "xdg-cache" / "reclra" / "cifar10").iterdir()) == []
    monkeypatch.setenv("RECLRA_NO_DOWNLOAD", "1")
    with pytest.raises(DatasetNotFound, match="RECLRA_NO_DOWNLOAD"):
        load_dataset("cifar10")


def test_cifar10_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cifar(tmp_path / "src" / "cifar-10-batches-py")
    blob = make_archive(
        tmp_path / "upstream.tar.gz", tmp_path / "src" / "cifar-10-batches-py"
    ).read_bytes()
    fetched: list[str] = []

    def fake_fetch(url: str, dest: Path, *, timeout: float = 0.0) -> None:
        fetched.append(url)
        Path(dest).write_bytes(blob)

    monkeypatch.setattr(data.locate, "fetch_url", fake_fetch)
    with pytest.raises(DataError, match="checksum") as excinfo:  # the real md5 cannot match
        load_dataset("cifar10", val_size=5, preprocess="none")
    assert not isinstance(excinfo.value, DatasetNotFound)
    cache = tmp_path / "xdg-cache" / "reclra" / "cifar10"
    assert list(cache.iterdir()) == []
    upstream = data.locate._MD5["cifar10"]["cifar-10-python.tar.gz"]
    assert upstream == "c58f30108f718f92721af3b95e74349a"
    monkeypatch.setitem(data.locate._MD5, "cifar10", {"cifar-10-python.tar.gz": _md5(blob)})
    ds = load_dataset("cifar10", val_size=5, preprocess="none")
    assert ds.source == str(cache / "cifar-10-batches-py")
    assert fetched == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"] * 2
    load_dataset("cifar10", val_size=5, preprocess="none")
    assert len(fetched) == 2


def _md5(blob: bytes) -> str:
    return hashlib.md5(blob, usedforsecurity=False).hexdigest()


def test_val_size_none_is_dataset_default(
    cifar_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert data.DEFAULT_VAL_SIZE == 2000 and data.CIFAR10_VAL_SIZE == 5000
    with pytest.raises(ValueError, match="val_size=5000"):  # 5000 > the 120 fake images
        load_dataset("cifar10", data_dir=cifar_root, preprocess="none")
    monkeypatch.setattr(data.loaders, "CIFAR10_VAL_SIZE", 30)
    ds = load_dataset("cifar10", data_dir=cifar_root, preprocess="none", val_size=None)
    assert len(ds.val) == 30 and len(ds.train) == N_TRAIN - 30
    explicit = load_raw_cifar(cifar_root, val_size=30)
    assert torch.equal(explicit.val.x, ds.val.x)
    digits = load_dataset("digits", val_size=None)
    assert len(digits.val) == (len(digits.train) + len(digits.val)) // 5  # 2000, capped


def test_dataset_options_are_checked(cifar_root: Path) -> None:
    with pytest.raises(ValueError, match="'digits' does not take the option preprocess="):
        load_dataset("digits", preprocess="none")
    with pytest.raises(ValueError, match="its options: preprocess="):
        load_dataset("cifar10", data_dir=cifar_root, image_size=8)
    with pytest.raises(ValueError, match="preprocess must be one of 'gcn_zca', 'none'"):
        load_dataset("cifar10", data_dir=cifar_root, preprocess="zca")
    assert {"cifar10", "imagefolder"} <= set(data.dataset_names())
    assert data.names._canonical_name("CIFAR_10") == "cifar10"
    assert data.names._canonical_name("image-folder") == "imagefolder"


# --------------------------------------------------------------------------------------------
# GCN and ZCA
# --------------------------------------------------------------------------------------------


def test_global_contrast_normalization() -> None:
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.random((6, 300), dtype=np.float32))
    x[1] *= 0.1  # low contrast
    x[2] = 0.5  # flat image
    before = x.clone()
    out = GlobalContrastNormalization()(x)
    assert torch.equal(x, before)  # input untouched
    assert out.dtype == torch.float32 and out.shape == x.shape
    torch.testing.assert_close(out.mean(dim=1), torch.zeros(6), atol=1e-5, rtol=0)
    var = (255 * x).var(dim=1, unbiased=False)
    expected_std = (var / (10 + var)).sqrt()  # s (v - mean) / sqrt(10 + var(v))
    torch.testing.assert_close(out.std(dim=1, unbiased=False), expected_std, atol=1e-5, rtol=1e-4)
    assert torch.all(out[2] == 0)
    assert out[0].std(unbiased=False) > 0.99 and out[1].std(unbiased=False) < 0.99


def _reference_zca(x: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """(mean, W) from the D×D covariance, in float64."""
    mean = x.mean(axis=0)
    centred = x - mean
    values, vectors = np.linalg.eigh(centred.T @ centred / x.shape[0])
    values = np.clip(values, 0, None)
    return mean, (vectors / np.sqrt(values + eps)) @ vectors.T


@pytest.mark.parametrize(("n", "d"), [(400, 12), (8, 30)])  # covariance path, Gram path
def test_zca_whitening(n: int, d: int) -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) + 3.0
    zca = ZCAWhitening.fit(torch.from_numpy(x).float(), epsilon=0.1)
    mean, matrix = _reference_zca(x.astype(np.float32).astype(np.float64), 0.1)
    np.testing.assert_allclose(zca.mean.numpy(), mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(zca.matrix.numpy(), matrix, rtol=1e-4, atol=1e-4)
    assert torch.equal(zca.matrix, zca.matrix.T) and zca.epsilon == 0.1
    white = zca(torch.from_numpy(x).float()).double().numpy()
    cov = np.cov(x, rowvar=False, bias=True)
    # Whitened covariance = C (C + εI)^-1: the identity shrunk by ε.
    np.testing.assert_allclose(
        white.T @ white / n, cov @ np.linalg.inv(cov + 0.1 * np.eye(d)), atol=2e-4
    )


def test_cifar10_gcn_zca(cifar_root: Path) -> None:
    ds = load_dataset("cifar10", data_dir=cifar_root, val_size=20, download=False)
    raw = load_raw_cifar(cifar_root)
    assert isinstance(ds.preprocessing, GcnZca) and ds.preprocessing.zca.epsilon == 0.1
    assert ds.train.y.tolist() == raw.train.y.tolist()
    # GCN: every image has mean 0.
    gcn = ds.preprocessing.gcn(raw.train.x)
    torch.testing.assert_close(gcn.mean(dim=1), torch.zeros(len(raw.train)), atol=1e-5, rtol=0)
    # The stored preprocessing reproduces every split from the [0, 1] pixels.
    for split, raw_split in ((ds.train, raw.train), (ds.val, raw.val), (ds.test, raw.test)):
        torch.testing.assert_close(split.x, ds.preprocessing(raw_split.x))
    # ZCA fitted on the training split: its whitened covariance has the eigenvalues
    # S / (S + ε) of the GCN'd training covariance (nonzero part; the rest is 0).
    n = len(ds.train)
    centred = gcn.double() - gcn.double().mean(dim=0)
    s = torch.linalg.eigvalsh(centred @ centred.T / n)
    white = ds.train.x.double()
    torch.testing.assert_close(
        white.mean(dim=0), torch.zeros(3072, dtype=torch.float64), atol=1e-4, rtol=0
    )
    w = torch.linalg.eigvalsh(white @ white.T / n)
    torch.testing.assert_close(w, s / (s + 0.1), atol=1e-3, rtol=1e-3)
    assert w.max() < 1


def test_zca_is_fitted_on_training_split_only(tmp_path: Path) -> None:
    written = write_cifar(tmp_path / "a" / "cifar-10-batches-py")
    val_rows = torch.randperm(N_TRAIN, generator=torch.Generator().manual_seed(7))[:20].tolist()
    rng = np.random.default_rng(99)
    changed = {key: value.copy() for key, value in written.items()}
    changed["train_x"][val_rows] = rng.integers(0, 256, size=(20, 3072), dtype=np.uint8)
    changed["test_x"][:] = rng.integers(0, 256, size=changed["test_x"].shape, dtype=np.uint8)
    folder = tmp_path / "b" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for b in range(5):
        rows = slice(b * N_BATCH, (b + 1) * N_BATCH)
        batch = py2_batch(changed["train_x"][rows], changed["train_y"][rows].tolist())
        (folder / f"data_batch_{b + 1}").write_bytes(batch)
    test = py2_batch(changed["test_x"], changed["test_y"].tolist())
    (folder / "test_batch").write_bytes(test)

    def load(root: Path, **kwargs: object) -> data.Dataset:
        return load_dataset("cifar10", data_dir=root, val_size=20, seed=7, **kwargs)

    a, b = load(tmp_path / "a"), load(tmp_path / "b")
    assert torch.equal(a.train.x, b.train.x)  # other val/test images: same training inputs
    assert not torch.allclose(a.test.x, b.test.x) and not torch.allclose(a.val.x, b.val.x)
    assert torch.equal(a.preprocessing.zca.matrix, b.preprocessing.zca.matrix)
    # limit_train keeps the fit on every training example: a prefix of the full training split.
    limited = load(tmp_path / "a", limit_train=10)
    # (the same fit; not bit-exact, since the matrix products are blocked differently)
    torch.testing.assert_close(limited.train.x, a.train.x[:10], atol=1e-4, rtol=1e-4)
    assert torch.equal(limited.val.x, a.val.x)
    # Changing one training image does change the fit.
    train_row = next(i for i in range(N_BATCH) if i not in val_rows)
    first = written["train_x"][:N_BATCH].copy()
    first[train_row] = 255 - first[train_row]
    batch = py2_batch(first, written["train_y"][:N_BATCH].tolist())
    (tmp_path / "a" / "cifar-10-batches-py" / "data_batch_1").write_bytes(batch)
    refit = load(tmp_path / "a").preprocessing.zca.matrix
    assert not torch.allclose(refit, a.preprocessing.zca.matrix)


# --------------------------------------------------------------------------------------------
# Image folders
# --------------------------------------------------------------------------------------------

COLOURS = {"ant": (255, 0, 0), "cat": (0, 255, 0), "dog": (0, 0, 255)}


def save_image(path: Path, size: tuple[int, int], colour: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def make_image_folder(root: Path) -> Path:
    """train/{dog,ant,cat} with 4 solid-colour images each (PNG, JPEG, BMP, sizes vary)."""
    sizes = [(20, 12), (9, 30), (16, 16), (40, 25)]
    for name in ("dog", "ant", "cat"):  # created unsorted
        for i, size in enumerate(sizes):
            ext = [".png", ".JPG", ".bmp", ".jpeg"][i]
            save_image(root / "train" / name / f"{name}{i}{ext}", size, COLOURS[name])
    for name in ("cat", "ant"):
        save_image(root / "val" / name / f"v_{name}.png", (13, 17), COLOURS[name])
    (root / "train" / "ant" / "notes.txt").write_text("not an image")
    (root / "train" / "ant" / ".hidden.png").write_bytes(b"ignored")
    return root


def test_imagefolder(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "imgs")
    ds = load_dataset("imagefolder", data_dir=root, image_size=6, val_size=0)
    assert ds.name == "imagefolder" and ds.source == str(root)
    assert ds.num_classes == 3 and ds.input_shape == (3, 6, 6)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (12, 0, 2)
    assert ds.train.x.shape == (12, 108) and ds.train.x.dtype == torch.float32
    assert ds.train.y.tolist() == [0] * 4 + [1] * 4 + [2] * 4  # ant, cat, dog: sorted
    assert ds.test.y.tolist() == [0, 1]
    assert isinstance(ds.preprocessing, ChannelNormalization)
    mean = torch.tensor(data.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(data.IMAGENET_STD).view(1, 3, 1, 1)
    pixels = ds.train.x.view(-1, 3, 6, 6) * std + mean  # undo the normalisation
    for images, label in zip(pixels, ds.train.y.tolist(), strict=True):
        colour = torch.tensor(list(COLOURS.values())[label], dtype=torch.float32) / 255
        atol = 0.02 if label else 0.05  # lossy JPEG
        torch.testing.assert_close(images.mean(dim=(1, 2)), colour, atol=atol, rtol=0)
    # PNGs are lossless: exact ImageNet normalisation of pure red.
    red = torch.tensor([(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0 - 0.406) / 0.225])
    torch.testing.assert_close(ds.test.x.view(-1, 3, 36)[0], red[:, None].expand(3, 36))


def test_imagefolder_val_cap_and_default_size(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "imgs")
    ds = load_dataset("imagefolder", data_dir=root, image_size=4)
    assert len(ds.val) == 2 and len(ds.train) == 10  # default 2000, capped at 20% of 12
    assert len(load_dataset("imagefolder", data_dir=root, image_size=4, val_size=100).val) == 2
    default = load_dataset("imagefolder", data_dir=root, val_size=0, resize=None, image_size=7)
    assert default.input_shape == (3, 7, 7)
    large = load_dataset("imagefolder", data_dir=root, val_size=0)
    assert large.input_shape == (3, 224, 224) and large.train.x.shape == (12, 3 * 224 * 224)


def test_resize_and_centre_crop_geometry(tmp_path: Path) -> None:
    # A wide image, left half red, right half blue: the shorter side (32) becomes 16, the
    # width 32; the central 8 columns straddle the boundary symmetrically.
    wide = Image.new("RGB", (64, 32), (255, 0, 0))
    wide.paste((0, 0, 255), (32, 0, 64, 32))
    wide.save(tmp_path / "wide.png")
    crop = read_image(tmp_path / "wide.png", image_size=8, resize=16).astype(int)
    assert crop.shape == (3, 8, 8) and crop.dtype == np.dtype(int)
    assert (crop[0, :, :3] == 255).all() and (crop[2, :, :3] == 0).all()  # left: pure red
    assert (crop[0, :, 5:] == 0).all() and (crop[2, :, 5:] == 255).all()  # right: pure blue
    np.testing.assert_array_equal(crop[0], crop[2, :, ::-1])  # centred: mirror symmetric
    assert (crop[1] == 0).all() and (crop == crop[:, :1, :]).all()  # rows all alike
    # A tall image, thirds green / white / black: the crop is the middle third.
    tall = Image.new("RGB", (32, 96), (0, 255, 0))
    tall.paste((255, 255, 255), (0, 32, 32, 64))
    tall.paste((0, 0, 0), (0, 64, 32, 96))
    tall.save(tmp_path / "tall.bmp")
    crop = read_image(tmp_path / "tall.bmp", image_size=16, resize=16)
    assert crop.shape == (3, 16, 16)
    assert (crop[:, 2:14, :] == 255).all()  # resized to 16×48, rows 16..31 kept
    assert crop[0, 0].max() < 255 and crop[0, 15].max() < 255  # edges blend the neighbours


@pytest.mark.parametrize("kind", ["garbage", "truncated jpeg"])
def test_imagefolder_corrupt_image(tmp_path: Path, kind: str) -> None:
    root = make_image_folder(tmp_path / "imgs")
    bad = root / "train" / "cat" / "bad.jpg"
    if kind == "garbage":
        bad.write_bytes(b"definitely not an image")
    else:
        Image.new("RGB", (64, 64), (10, 200, 30)).save(bad, quality=95)
        bad.write_bytes(bad.read_bytes()[:300])
    with pytest.raises(DataError, match="cannot read image") as excinfo:
        load_dataset("imagefolder", data_dir=root, image_size=4, val_size=0)
    assert str(bad) in str(excinfo.value)


def test_imagefolder_errors(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "imgs")
    with pytest.raises(DatasetNotFound, match=r"needs a data folder.*--data-dir"):
        load_dataset("imagefolder")
    with pytest.raises(DatasetNotFound, match="val"):
        load_dataset("imagefolder", data_dir=tmp_path / "imgs" / "train")
    with pytest.raises(ValueError, match="resize must be >= image_size"):
        load_dataset("imagefolder", data_dir=root, image_size=8, resize=7)
    with pytest.raises(ValueError, match="image_size"):
        load_dataset("imagefolder", data_dir=root, image_size=0)
    with pytest.raises(ValueError, match="does not take the option image_size="):
        load_dataset("digits", image_size=8)
    save_image(root / "val" / "zebra" / "z.png", (8, 8), (1, 2, 3))
    with pytest.raises(DataError, match="class 'zebra' is not a class of") as excinfo:
        load_dataset("imagefolder", data_dir=root, image_size=4)
    assert str(root / "val" / "zebra") in str(excinfo.value)
    (root / "val" / "zebra" / "z.png").unlink()
    (root / "val" / "zebra").rmdir()
    (root / "train" / "emu").mkdir()
    with pytest.raises(DataError, match="holds no images") as excinfo:
        load_dataset("imagefolder", data_dir=root, image_size=4)
    assert str(root / "train" / "emu") in str(excinfo.value)


def test_dataset_to_keeps_preprocessing(cifar_root: Path) -> None:
    ds = load_dataset("cifar10", data_dir=cifar_root, val_size=20)
    moved = ds.to("cpu")
    assert isinstance(moved.preprocessing, GcnZca)
    assert torch.equal(moved.preprocessing.zca.matrix, ds.preprocessing.zca.matrix)
