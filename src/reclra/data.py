"""Datasets: IDX reading, locating/downloading MNIST-style data, splits and mini-batches.

The image datasets (``mnist``, ``fashion-mnist``) are read from the four standard IDX files
(``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``,
``t10k-labels-idx1-ubyte.gz``; the same names without ``.gz`` are accepted too). A dataset folder
is searched for in this order, and the first folder holding all four files wins:

1. the explicit ``data_dir`` argument: ``data_dir/<name>/`` (and the alias folder names, e.g.
   ``fashion_mnist`` or ``FashionMNIST``), then ``data_dir/`` itself;
2. the environment variable ``RECLRA_DATA`` (same layout; several folders may be given,
   separated by :data:`os.pathsep`);
3. the system folder ``/usr/share/datasets/<name>/`` (:data:`SYSTEM_DATASET_DIR`; Debian's
   ``dataset-fashion-mnist`` package installs ``/usr/share/datasets/fashion-mnist/``);
4. the user cache ``$XDG_CACHE_HOME/reclra/<name>/`` (default ``~/.cache/reclra/<name>/``).

If no folder is complete, the missing files are downloaded into the user cache from the official
mirror and checked against the upstream MD5 checksums, unless downloading is disabled
(``download=False`` or ``RECLRA_NO_DOWNLOAD=1``). Files found locally are not checked against the
upstream checksums (Debian, for instance, re-compresses them); their contents are validated
instead (shapes, dtypes, label range, matching counts).

The small scikit-learn ``digits`` dataset (8×8 images, bundled with scikit-learn) needs no files.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import math
import operator
import os
import shutil
import struct
import tempfile
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "DATASETS",
    "DOWNLOAD_TIMEOUT",
    "IDX_FILES",
    "SYSTEM_DATASET_DIR",
    "DataError",
    "Dataset",
    "DatasetNotFound",
    "RawDataset",
    "Split",
    "cache_dir",
    "candidate_dirs",
    "dataset_names",
    "download_dataset",
    "fetch_url",
    "find_dataset_dir",
    "iterate_minibatches",
    "load_dataset",
    "load_digits_raw",
    "load_fashion_mnist_raw",
    "load_mnist_raw",
    "locate_dataset",
    "read_idx",
]

logger = logging.getLogger(__name__)

#: Root of the system-wide dataset folders (Debian's ``dataset-*`` packages install here).
SYSTEM_DATASET_DIR = Path("/usr/share/datasets")

#: Environment variable naming extra data folders (searched after ``data_dir``).
ENV_DATA = "RECLRA_DATA"

#: Environment variable that disables downloading when set to ``1``/``true``/``yes``/``on``.
ENV_NO_DOWNLOAD = "RECLRA_NO_DOWNLOAD"

#: Network timeout in seconds for each download request.
DOWNLOAD_TIMEOUT = 20.0

#: The four IDX files of an MNIST-style dataset, keyed by role, as upstream names them (gzip).
IDX_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

# Folder names under which a dataset may be stored (the first is the canonical one).
_FOLDER_ALIASES: dict[str, tuple[str, ...]] = {
    "mnist": ("mnist", "MNIST"),
    "fashion-mnist": ("fashion-mnist", "fashion_mnist", "FashionMNIST"),
}

# Upstream mirrors (tried in order) and MD5 checksums of the upstream gzip files.
_MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/",),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}
_MD5: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}

# Accepted spellings of dataset names, mapped to the canonical name.
_NAME_ALIASES: dict[str, str] = {
    "fmnist": "fashion-mnist",
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
}

# Seed of the fixed train/test split of the scikit-learn digits (independent of ``seed``).
_DIGITS_TEST_SEED = 0
_DIGITS_TEST_FRACTION = 0.2
_DIGITS_MAX_VAL_FRACTION = 0.2


class DataError(ValueError):
    """A data file is missing, corrupt or inconsistent, or a dataset name is unknown."""


class DatasetNotFound(DataError):
    """No folder holds the files of a dataset and they could not be downloaded."""


# --------------------------------------------------------------------------------------------
# IDX files
# --------------------------------------------------------------------------------------------

# IDX element type codes → big-endian numpy dtypes.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into a numpy array.

    The IDX layout is: two zero bytes, one byte element-type code (0x08 ubyte, 0x09 int8,
    0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), one byte number of dimensions, one
    big-endian uint32 per dimension, then the elements in C order, big-endian.

    A file whose name ends in ``.gz`` must be gzip-compressed; other files are read raw unless
    they start with the gzip magic bytes.

    Args:
        path: the file to read.

    Returns:
        A writable array of the file's shape, in native byte order.

    Raises:
        DataError: the file is not valid gzip, has a bad header, or its payload size does not
            match its dimensions. The message names the file.
        OSError: the file cannot be opened.
    """
    path = Path(path)
    raw = path.read_bytes()
    if path.suffix == ".gz" or raw[:2] == _GZIP_MAGIC:
        if raw[:2] != _GZIP_MAGIC:
            raise DataError(f"{path}: not a gzip file (name ends in .gz but the data does not)")
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt gzip data ({exc})") from exc
    if len(raw) < 4:
        raise DataError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(
            f"{path}: bad IDX magic (expected two zero bytes, got 0x{raw[0]:02x} 0x{raw[1]:02x})"
        )
    code, ndim = raw[2], raw[3]
    dtype = _IDX_DTYPES.get(code)
    if dtype is None:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise DataError(f"{path}: unknown IDX element type code 0x{code:02X} (known: {known})")
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions")
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DataError(
            f"{path}: truncated IDX header ({len(raw)} bytes, {ndim} dimensions need {header_size})"
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header_size])
    count = math.prod(dims)
    expected = count * dtype.itemsize
    payload = len(raw) - header_size
    if payload != expected:
        what = "truncated" if payload < expected else "oversized"
        raise DataError(
            f"{path}: {what} IDX payload: dimensions {dims} of {dtype.name} need {expected} "
            f"bytes, found {payload}"
        )
    array = np.frombuffer(raw, dtype=dtype, count=count, offset=header_size).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=True)


def _check_image_label_pair(
    images: np.ndarray,
    labels: np.ndarray,
    image_path: Path,
    label_path: Path,
    *,
    image_shape: tuple[int, int] = (28, 28),
    num_classes: int = 10,
) -> None:
    """Validate MNIST-style images (N×H×W uint8) and labels (N in [0, num_classes))."""
    if images.ndim != 3 or images.shape[1:] != image_shape:
        raise DataError(
            f"{image_path}: expected images of shape N×{image_shape[0]}×{image_shape[1]}, "
            f"found shape {images.shape}"
        )
    if images.dtype != np.uint8:
        raise DataError(f"{image_path}: expected uint8 pixels, found {images.dtype}")
    if images.shape[0] == 0:
        raise DataError(f"{image_path}: holds no images")
    if labels.ndim != 1:
        raise DataError(f"{label_path}: expected a 1-d label array, found shape {labels.shape}")
    if labels.dtype != np.uint8:
        raise DataError(f"{label_path}: expected uint8 labels, found {labels.dtype}")
    if labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{image_path} holds {images.shape[0]} images but {label_path} holds "
            f"{labels.shape[0]} labels"
        )
    top = int(labels.max())
    if top >= num_classes:
        raise DataError(f"{label_path}: label {top} out of range (expected 0..{num_classes - 1})")


# --------------------------------------------------------------------------------------------
# Locating and downloading
# --------------------------------------------------------------------------------------------


def _env_flag(name: str) -> bool:
    """True when the environment variable is set to a truthy value (1/true/yes/on)."""
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def cache_dir(name: str | None = None) -> Path:
    """The user cache folder of the library, or of dataset ``name`` inside it.

    ``$XDG_CACHE_HOME/reclra`` when ``XDG_CACHE_HOME`` is set (and non-empty), else
    ``~/.cache/reclra``.
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    root = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    base = root / "reclra"
    return base / _canonical_idx_name(name) if name is not None else base


def _canonical_idx_name(name: str) -> str:
    """Canonical name of an IDX dataset (``mnist`` or ``fashion-mnist``)."""
    canonical = _canonical_name(name)
    if canonical not in _FOLDER_ALIASES:
        known = ", ".join(sorted(_FOLDER_ALIASES))
        raise DataError(f"{name!r} is not a dataset stored as IDX files (those are: {known})")
    return canonical


def candidate_dirs(
    name: str, *, data_dir: str | os.PathLike[str] | None = None
) -> list[tuple[Path, str]]:
    """The folders searched for dataset ``name``, in search order, with where each comes from.

    Returns:
        A list of ``(folder, origin)`` pairs; ``origin`` is one of ``"data_dir"``,
        ``"RECLRA_DATA"``, ``"system"``, ``"cache"``. Folders need not exist.
    """
    canonical = _canonical_idx_name(name)
    aliases = _FOLDER_ALIASES[canonical]
    found: list[tuple[Path, str]] = []

    def add_root(root: Path, origin: str) -> None:
        found.extend((root / alias, origin) for alias in aliases)
        found.append((root, origin))

    if data_dir is not None:
        add_root(Path(data_dir).expanduser(), "data_dir")
    for entry in os.environ.get(ENV_DATA, "").split(os.pathsep):
        if entry.strip():
            add_root(Path(entry.strip()).expanduser(), ENV_DATA)
    found.append((SYSTEM_DATASET_DIR / canonical, "system"))
    found.append((cache_dir(canonical), "cache"))

    unique: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for folder, origin in found:
        if folder not in seen:
            seen.add(folder)
            unique.append((folder, origin))
    return unique


def _find_file(folder: Path, gz_name: str) -> Path | None:
    """The file ``gz_name`` in ``folder``, or its uncompressed variant, or None."""
    for candidate in (folder / gz_name, folder / gz_name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _dataset_files(folder: Path) -> dict[str, Path | None]:
    """Map each IDX role to the file found for it in ``folder`` (None when missing)."""
    return {role: _find_file(folder, gz_name) for role, gz_name in IDX_FILES.items()}


def _describe_folder(folder: Path) -> str:
    """A short status of a searched folder, for error messages."""
    if not folder.is_dir():
        return "no such folder"
    files = _dataset_files(folder)
    missing = [IDX_FILES[role] for role, path in files.items() if path is None]
    if len(missing) == len(files):
        return "none of the files"
    return f"missing {', '.join(missing)}"


def find_dataset_dir(name: str, *, data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The first folder in :func:`candidate_dirs` holding all four IDX files, or None."""
    for folder, origin in candidate_dirs(name, data_dir=data_dir):
        if folder.is_dir() and all(path is not None for path in _dataset_files(folder).values()):
            logger.debug("found %s in %s (%s)", name, folder, origin)
            return folder
    return None


def fetch_url(url: str, dest: str | os.PathLike[str], *, timeout: float = DOWNLOAD_TIMEOUT) -> None:
    """Download ``url`` (http or https) into the file ``dest``, overwriting it.

    Raises:
        ValueError: the URL is not http(s).
        OSError, http.client.HTTPException: the download failed.
    """
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"refusing to fetch {url!r}: only http(s) URLs are supported")
    request = urllib.request.Request(url, headers={"User-Agent": "reclra"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as out:
        shutil.copyfileobj(response, out, length=1 << 20)


def _md5(path: Path) -> str:
    """Hex MD5 digest of a file."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download_file(urls: Sequence[str], dest: Path, md5: str, *, timeout: float) -> None:
    """Download one file atomically: temp file, MD5 check, rename. Tries each URL in turn.

    Raises:
        DataError: the downloaded data has the wrong checksum (the temp file is removed).
        OSError: every URL failed (the message names the last URL and its error).
    """
    last_error: BaseException | None = None
    last_url = ""
    for url in urls:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            logger.info("downloading %s", url)
            fetch_url(url, tmp, timeout=timeout)
            actual = _md5(tmp)
            if actual != md5:
                raise DataError(
                    f"{url}: checksum mismatch for {dest.name} (md5 {actual}, expected {md5}); "
                    "the download was discarded"
                )
            os.replace(tmp, dest)
            return
        except (OSError, http.client.HTTPException) as exc:
            logger.info("download of %s failed: %s", url, exc)
            last_error, last_url = exc, url
        finally:
            tmp.unlink(missing_ok=True)
    if last_error is None:
        raise ValueError(f"no URL to download {dest.name} from")
    raise OSError(f"{last_url}: {last_error}") from last_error


def download_dataset(name: str, *, timeout: float = DOWNLOAD_TIMEOUT) -> Path:
    """Download the missing IDX files of ``name`` into the user cache and return that folder.

    Each file is written to a temporary file next to its destination, checked against the
    upstream MD5 checksum, and only then renamed into place. Files already in the cache are kept.

    Raises:
        DataError: a downloaded file has the wrong checksum.
        OSError, http.client.HTTPException: a download failed or the cache is not writable.
    """
    canonical = _canonical_idx_name(name)
    folder = cache_dir(canonical)
    folder.mkdir(parents=True, exist_ok=True)
    for gz_name in IDX_FILES.values():
        if _find_file(folder, gz_name) is not None:
            continue
        urls = [mirror + gz_name for mirror in _MIRRORS[canonical]]
        _download_file(urls, folder / gz_name, _MD5[canonical][gz_name], timeout=timeout)
    return folder


def _not_found_message(name: str, searched: list[tuple[Path, str]], reason: str) -> str:
    """The message of :class:`DatasetNotFound`: folders searched and how to provide the files."""
    files = ", ".join(f"{gz}[.gz]" for gz in (n.removesuffix(".gz") for n in IDX_FILES.values()))
    lines = [f"dataset {name!r} not found. Looked for {files} in:"]
    lines += [f"  {folder}  ({origin}: {_describe_folder(folder)})" for folder, origin in searched]
    lines.append(reason)
    how = (
        f"To provide the files, put them in DIR/{name}/ (or DIR/) and pass --data-dir DIR "
        f"(data_dir=DIR), or set {ENV_DATA}=DIR"
    )
    if name == "fashion-mnist":
        how += (
            ", or install the Debian package: apt-get install dataset-fashion-mnist "
            f"(installs {SYSTEM_DATASET_DIR / 'fashion-mnist'})"
        )
    else:
        how += f", or put them in {SYSTEM_DATASET_DIR / name}"
    lines.append(how + ".")
    return "\n".join(lines)


def locate_dataset(
    name: str, *, data_dir: str | os.PathLike[str] | None = None, download: bool = True
) -> Path:
    """The folder holding the four IDX files of ``name``, downloading them if needed.

    See the module docstring for the search order. Downloading happens only when no folder is
    complete, ``download`` is true and ``RECLRA_NO_DOWNLOAD`` is not set.

    Raises:
        DatasetNotFound: no folder is complete and downloading is disabled or failed. The
            message lists every folder searched.
        DataError: a download had a wrong checksum.
    """
    canonical = _canonical_idx_name(name)
    folder = find_dataset_dir(canonical, data_dir=data_dir)
    if folder is not None:
        return folder
    searched = candidate_dirs(canonical, data_dir=data_dir)
    if not download:
        reason = "Downloading is disabled (download=False)."
    elif _env_flag(ENV_NO_DOWNLOAD):
        reason = f"Downloading is disabled ({ENV_NO_DOWNLOAD}={os.environ[ENV_NO_DOWNLOAD]})."
    else:
        try:
            return download_dataset(canonical)
        except (OSError, http.client.HTTPException) as exc:
            mirrors = ", ".join(_MIRRORS[canonical])
            reason = f"Downloading from {mirrors} into {cache_dir(canonical)} failed: {exc}"
    raise DatasetNotFound(_not_found_message(canonical, searched, reason))


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------


@dataclass
class Split:
    """One split of a dataset, in memory.

    Attributes:
        x: float32 inputs of shape N×D (images flattened, values scaled to [0, 1]).
        y: int64 class labels of shape N.
    """

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(
                f"Split: x has {self.x.shape[0]} rows but y has {self.y.shape[0]} labels"
            )

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str | None) -> Split:
        """A copy of this split on ``device`` (no copy when already there)."""
        return Split(self.x.to(device), self.y.to(device))


@dataclass
class Dataset:
    """A classification dataset with train, validation and test splits.

    Attributes:
        name: canonical dataset name (``mnist``, ``fashion-mnist``, ``digits``).
        train, val, test: the splits; ``x`` is N×D with D = prod(input_shape).
        num_classes: number of classes (labels are 0..num_classes-1).
        input_shape: shape of one example as C×H×W, e.g. ``(1, 28, 28)``; conv models can use
            ``split.x.view(-1, *input_shape)``.
        source: the folder the data was read from, or ``'sklearn digits'``.
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, ...]
    source: str

    @property
    def input_dim(self) -> int:
        """Number of features D of a flattened example."""
        return math.prod(self.input_shape)

    def to(self, device: torch.device | str | None) -> Dataset:
        """A copy of this dataset with every split on ``device``."""
        return Dataset(
            name=self.name,
            train=self.train.to(device),
            val=self.val.to(device),
            test=self.test.to(device),
            num_classes=self.num_classes,
            input_shape=self.input_shape,
            source=self.source,
        )


@dataclass
class RawDataset:
    """What a loader in :data:`DATASETS` returns: the full train and test sets, unsplit.

    Attributes:
        train_x, test_x: N×D arrays of raw values (e.g. uint8 pixels), divided by ``scale``
            when converted to float32.
        train_y, test_y: integer label arrays of length N.
        num_classes, input_shape, source: as in :class:`Dataset`.
        scale: the value mapped to 1.0.
        max_val_fraction: when set, the validation split is capped at this fraction of the
            training set.
    """

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]
    source: str
    scale: float
    max_val_fraction: float | None = None


def _load_idx_dataset(
    name: str, *, data_dir: str | os.PathLike[str] | None, download: bool
) -> RawDataset:
    """Load an MNIST-style dataset from its four IDX files."""
    folder = locate_dataset(name, data_dir=data_dir, download=download)
    files: dict[str, Path] = {}
    arrays: dict[str, np.ndarray] = {}
    for role, path in _dataset_files(folder).items():
        if path is None:  # the folder changed since it was located
            raise DatasetNotFound(f"{folder}: {IDX_FILES[role]} disappeared while loading {name}")
        files[role] = path
        arrays[role] = read_idx(path)
    for part in ("train", "test"):
        image_path, label_path = files[f"{part}_images"], files[f"{part}_labels"]
        _check_image_label_pair(
            arrays[f"{part}_images"], arrays[f"{part}_labels"], image_path, label_path
        )
    return RawDataset(
        train_x=arrays["train_images"].reshape(arrays["train_images"].shape[0], -1),
        train_y=arrays["train_labels"],
        test_x=arrays["test_images"].reshape(arrays["test_images"].shape[0], -1),
        test_y=arrays["test_labels"],
        num_classes=10,
        input_shape=(1, 28, 28),
        source=str(folder),
        scale=255.0,
    )


def load_mnist_raw(
    *, data_dir: str | os.PathLike[str] | None = None, download: bool = True
) -> RawDataset:
    """Loader of MNIST (see :func:`locate_dataset` for where the files are looked for)."""
    return _load_idx_dataset("mnist", data_dir=data_dir, download=download)


def load_fashion_mnist_raw(
    *, data_dir: str | os.PathLike[str] | None = None, download: bool = True
) -> RawDataset:
    """Loader of Fashion-MNIST (see :func:`locate_dataset` for where the files are looked for)."""
    return _load_idx_dataset("fashion-mnist", data_dir=data_dir, download=download)


def load_digits_raw(
    *, data_dir: str | os.PathLike[str] | None = None, download: bool = True
) -> RawDataset:
    """Loader of scikit-learn's bundled 8×8 digits (1797 images, values 0..16).

    The test set is a fixed 20% drawn with a fixed seed (the same whatever ``seed`` is passed to
    :func:`load_dataset`); train and test keep the original order. ``data_dir`` and ``download``
    are ignored (the data ships with scikit-learn).
    """
    del data_dir, download
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.asarray(bunch.data, dtype=np.float32)
    y = np.asarray(bunch.target, dtype=np.int64)
    n = x.shape[0]
    n_test = int(n * _DIGITS_TEST_FRACTION)
    generator = torch.Generator().manual_seed(_DIGITS_TEST_SEED)
    is_test = np.zeros(n, dtype=bool)
    is_test[torch.randperm(n, generator=generator)[:n_test].numpy()] = True
    return RawDataset(
        train_x=x[~is_test],
        train_y=y[~is_test],
        test_x=x[is_test],
        test_y=y[is_test],
        num_classes=10,
        input_shape=(1, 8, 8),
        source="sklearn digits",
        scale=16.0,
        max_val_fraction=_DIGITS_MAX_VAL_FRACTION,
    )


#: Dataset loaders by canonical name; each takes ``data_dir`` and ``download`` keywords.
DATASETS: dict[str, Callable[..., RawDataset]] = {
    "mnist": load_mnist_raw,
    "fashion-mnist": load_fashion_mnist_raw,
    "digits": load_digits_raw,
}


def dataset_names() -> list[str]:
    """Canonical names of the known datasets, sorted."""
    return sorted(DATASETS)


def _canonical_name(name: str) -> str:
    """Map a dataset name or alias (case-insensitive) to its canonical name."""
    key = name.strip().lower()
    key = _NAME_ALIASES.get(key, key)
    if key not in DATASETS:
        known = ", ".join(dataset_names())
        aliases = ", ".join(f"{a} → {c}" for a, c in sorted(_NAME_ALIASES.items()))
        raise DataError(f"unknown dataset {name!r}; known datasets: {known} (aliases: {aliases})")
    return key


def _as_int(value: object, what: str) -> int:
    """``value`` as an int (bools and non-integers rejected with a ValueError)."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{what} must be an integer, got {value!r}") from None


def _to_split(x: np.ndarray, y: np.ndarray, scale: float) -> Split:
    """Convert raw arrays to a float32/int64 :class:`Split`, scaling x by 1/scale."""
    xt = torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32)
    xt.div_(scale)
    yt = torch.from_numpy(np.ascontiguousarray(y)).to(torch.int64)
    return Split(xt, yt)


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    val_size: int = 2000,
    limit_train: int | None = None,
    seed: int = 0,
    download: bool = True,
) -> Dataset:
    """Load a dataset with train/validation/test splits.

    The split order is exact and reproducible:

    1. ``val_size`` examples are drawn from the full training file with
       ``torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))[:val_size]``
       (the validation split keeps file order);
    2. the remaining examples, in file order, form the training split;
    3. with ``limit_train=N``, only the first N of those are kept (all of them when fewer).

    The test split is the dataset's test file (for ``digits``: a fixed 20% drawn with a fixed
    seed, independent of ``seed``). For ``digits`` the validation split is capped at 20% of the
    training set.

    Args:
        name: ``mnist``, ``fashion-mnist`` (alias ``fmnist``) or ``digits``.
        data_dir: folder searched first for the data files (see :func:`locate_dataset`).
        val_size: number of validation examples (0 for an empty validation split).
        limit_train: keep at most this many training examples (None: all).
        seed: seed of the validation draw.
        download: allow downloading missing files into the user cache.

    Raises:
        DataError: unknown name or invalid data; :class:`DatasetNotFound` when the files
            cannot be found or downloaded.
        ValueError: invalid ``val_size``, ``limit_train`` or ``seed``.
    """
    canonical = _canonical_name(name)
    val_size = _as_int(val_size, "val_size")
    if val_size < 0:
        raise ValueError(f"val_size must be >= 0, got {val_size}")
    if limit_train is not None:
        limit_train = _as_int(limit_train, "limit_train")
        if limit_train < 1:
            raise ValueError(f"limit_train must be >= 1 (or None for no limit), got {limit_train}")
    seed = _as_int(seed, "seed")

    raw = DATASETS[canonical](data_dir=data_dir, download=download)
    n_train = int(raw.train_x.shape[0])
    if raw.max_val_fraction is not None:
        val_size = min(val_size, int(n_train * raw.max_val_fraction))
    if val_size >= n_train:
        raise ValueError(
            f"val_size={val_size} must be smaller than the {n_train} training examples "
            f"of {canonical}"
        )

    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n_train, generator=generator)
    is_val = np.zeros(n_train, dtype=bool)
    is_val[perm[:val_size].numpy()] = True
    val_idx = np.flatnonzero(is_val)
    train_idx = np.flatnonzero(~is_val)
    if limit_train is not None:
        train_idx = train_idx[:limit_train]

    return Dataset(
        name=canonical,
        train=_to_split(raw.train_x[train_idx], raw.train_y[train_idx], raw.scale),
        val=_to_split(raw.train_x[val_idx], raw.train_y[val_idx], raw.scale),
        test=_to_split(raw.test_x, raw.test_y, raw.scale),
        num_classes=raw.num_classes,
        input_shape=tuple(raw.input_shape),
        source=raw.source,
    )


# --------------------------------------------------------------------------------------------
# Mini-batches
# --------------------------------------------------------------------------------------------


def iterate_minibatches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` mini-batches covering ``split`` once; the last batch may be smaller.

    Args:
        split: the data.
        batch_size: examples per batch (>= 1).
        shuffle: visit the examples in the order ``torch.randperm(len(split), generator=...)``
            instead of their stored order.
        generator: CPU random generator for the shuffle (None: torch's global generator).
        device: move each batch there (None: leave it where the split is).
    """
    batch_size = _as_int(batch_size, "batch_size")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(split)
    order = torch.randperm(n, generator=generator).to(split.x.device) if shuffle else None
    for start in range(0, n, batch_size):
        if order is None:
            xb = split.x[start : start + batch_size]
            yb = split.y[start : start + batch_size]
        else:
            idx = order[start : start + batch_size]
            xb, yb = split.x[idx], split.y[idx]
        if device is not None:
            xb, yb = xb.to(device), yb.to(device)
        yield xb, yb
