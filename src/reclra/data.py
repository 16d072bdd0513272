"""Datasets: locating/downloading/reading the data files, preprocessing, splits and mini-batches.

Datasets (see :data:`DATASETS`; :func:`load_dataset` loads any of them):

``mnist``, ``fashion-mnist``
    Read from the four standard IDX files (``train-images-idx3-ubyte.gz``,
    ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``;
    the same names without ``.gz`` are accepted too).
``cifar10`` (alias ``cifar-10``)
    Read from the official *python* batches: a folder ``cifar-10-batches-py/`` holding
    ``data_batch_1`` … ``data_batch_5`` and ``test_batch`` (``batches.meta`` is not needed), or
    the official archive ``cifar-10-python.tar.gz``, which is extracted into the user cache. The
    batches are pickle files; they are read with a restricted unpickler that only allows the
    numpy array reconstruction a genuine batch needs (see :func:`read_cifar_batch`), so a
    malicious file cannot run code. By default the images are preprocessed with global contrast
    normalisation and ZCA whitening fitted on the training split (see :func:`fit_gcn_zca`).
``imagefolder``
    ImageNet-style folders ``data_dir/train/<class>/*.jpg`` and ``data_dir/val/<class>/*.jpg``
    (see :func:`load_imagefolder_raw`); ``data_dir`` is required.
``digits``
    The small scikit-learn digits (8×8 images, bundled with scikit-learn); needs no files.

The folder of a file-backed dataset (``mnist``, ``fashion-mnist``, ``cifar10``) is searched for
in this order, and the first complete one wins:

1. the explicit ``data_dir`` argument: ``data_dir/<name>/`` (and the alias folder names, e.g.
   ``fashion_mnist`` or ``FashionMNIST``), then ``data_dir/`` itself;
2. the environment variable ``RECLRA_DATA`` (same layout; several folders may be given,
   separated by :data:`os.pathsep`);
3. the system folder ``/usr/share/datasets/<name>/`` (:data:`SYSTEM_DATASET_DIR`; Debian's
   ``dataset-fashion-mnist`` package installs ``/usr/share/datasets/fashion-mnist/``);
4. the user cache ``$XDG_CACHE_HOME/reclra/<name>/`` (default ``~/.cache/reclra/<name>/``).

An IDX folder is complete when it holds the four files. For CIFAR-10 each of these folders is
checked for ``cifar-10-batches-py/`` (then for the batch files directly in the folder), then for
``cifar-10-python.tar.gz``; an archive is extracted (safely: see
:func:`extract_cifar10_archive`) into ``<user cache>/cifar10/cifar-10-batches-py/``, which is
reused by later loads (delete it to extract again).

If no folder is complete, the missing files are downloaded into the user cache from the official
mirror (for CIFAR-10, the archive, then extracted) and checked against the upstream MD5
checksums, unless downloading is disabled (``download=False`` or ``RECLRA_NO_DOWNLOAD=1``). Files
found locally, archives included, are not checked against the upstream checksums (Debian, for
instance, re-compresses them); their contents are validated instead (shapes, dtypes, label
range, matching counts).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import inspect
import io
import logging
import math
import operator
import os
import pickle
import shutil
import struct
import tarfile
import tempfile
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import torch

__all__ = [
    "CIFAR10_ARCHIVE",
    "CIFAR10_FILES",
    "CIFAR10_FOLDER",
    "CIFAR10_VAL_SIZE",
    "DATASETS",
    "DEFAULT_VAL_SIZE",
    "DOWNLOAD_TIMEOUT",
    "IDX_FILES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "SYSTEM_DATASET_DIR",
    "ZCA_EPSILON",
    "ChannelNormalization",
    "DataError",
    "Dataset",
    "DatasetNotFound",
    "GcnZca",
    "GlobalContrastNormalization",
    "Preprocessing",
    "RawDataset",
    "Split",
    "ZCAWhitening",
    "cache_dir",
    "candidate_dirs",
    "dataset_names",
    "download_dataset",
    "extract_cifar10_archive",
    "fetch_url",
    "find_dataset_dir",
    "fit_gcn_zca",
    "iterate_minibatches",
    "load_cifar10_raw",
    "load_dataset",
    "load_digits_raw",
    "load_fashion_mnist_raw",
    "load_imagefolder_raw",
    "load_mnist_raw",
    "locate_dataset",
    "read_cifar_batch",
    "read_idx",
    "read_image",
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

#: Validation examples drawn from the training set when ``val_size`` is not given.
DEFAULT_VAL_SIZE = 2000

#: CIFAR-10's default validation size (the papers set 5,000 training samples aside).
CIFAR10_VAL_SIZE = 5000

#: The four IDX files of an MNIST-style dataset, keyed by role, as upstream names them (gzip).
IDX_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

#: Folder of the CIFAR-10 python batches, as the official archive names it.
CIFAR10_FOLDER = "cifar-10-batches-py"

#: The official CIFAR-10 python archive (holds :data:`CIFAR10_FOLDER`).
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"

#: The CIFAR-10 batch files needed: five training batches, then the test batch.
CIFAR10_FILES: tuple[str, ...] = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")

# Pixels per CIFAR-10 image (3 channel planes of 32×32, red then green then blue).
_CIFAR10_SHAPE = (3, 32, 32)

#: Image file name extensions read by the ``imagefolder`` dataset (case-insensitive).
IMAGE_EXTENSIONS: tuple[str, ...] = (".bmp", ".jpeg", ".jpg", ".png")

#: Per-channel (RGB) mean and standard deviation of ImageNet, for [0, 1] pixel values.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: Regulariser ε of ZCA whitening, added to the covariance eigenvalues.
ZCA_EPSILON = 0.1

# Folder names under which a dataset may be stored (the first is the canonical one).
_FOLDER_ALIASES: dict[str, tuple[str, ...]] = {
    "mnist": ("mnist", "MNIST"),
    "fashion-mnist": ("fashion-mnist", "fashion_mnist", "FashionMNIST"),
    "cifar10": ("cifar10", "cifar-10", "CIFAR10", "CIFAR-10"),
}

# Upstream mirrors (tried in order) and MD5 checksums of the upstream files.
_MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/",),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/",),
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
    "cifar10": {CIFAR10_ARCHIVE: "c58f30108f718f92721af3b95e74349a"},
}

# Accepted spellings of dataset names, mapped to the canonical name.
_NAME_ALIASES: dict[str, str] = {
    "fmnist": "fashion-mnist",
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "cifar_10": "cifar10",
    "image-folder": "imagefolder",
    "image_folder": "imagefolder",
}

# Seed of the fixed train/test split of the scikit-learn digits (independent of ``seed``).
_DIGITS_TEST_SEED = 0
_DIGITS_TEST_FRACTION = 0.2
_DIGITS_MAX_VAL_FRACTION = 0.2

# The validation split of an image folder is capped at this fraction of its training images.
_IMAGEFOLDER_MAX_VAL_FRACTION = 0.2

# Preprocessing choices of the CIFAR-10 loader.
_CIFAR10_PREPROCESSING = ("gcn_zca", "none")


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
# CIFAR-10 python batches
# --------------------------------------------------------------------------------------------

# numpy's array-unpickling helper, taken from numpy's own reduction of an array rather than
# imported by name: numpy 1.x calls its module ``numpy.core.multiarray``, numpy 2
# ``numpy._core.multiarray`` (importing the old name warns).
_NUMPY_RECONSTRUCT = np.empty(0, dtype=np.uint8).__reduce__()[0]

# The only globals a CIFAR-10 batch references: the dict holds a numpy uint8 array (pickled as
# ``_reconstruct(ndarray, (0,), b'b')`` plus its ``dtype``), lists of ints and strings. The
# official batches were written by Python 2 (``numpy.core``); re-saved ones may use numpy 2's
# module name.
_CIFAR_PICKLE_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy.core.multiarray", "_reconstruct"): _NUMPY_RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _NUMPY_RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in :data:`_CIFAR_PICKLE_GLOBALS`.

    Everything that could run code (``os.system``, ``builtins.eval``, any other callable) is
    refused before it is imported, with a :class:`DataError` naming the file and the global.
    """

    def __init__(self, file: io.BufferedIOBase, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str) -> object:
        found = _CIFAR_PICKLE_GLOBALS.get((module, name))
        if found is None:
            raise DataError(
                f"refusing to load {self._path}: it references {module}.{name}, which a CIFAR-10 "
                "batch does not need (only numpy array reconstruction is allowed)"
            )
        return found


def _batch_entry(batch: dict, key: str, path: Path) -> object:
    """``batch[b'key']`` (or ``batch['key']`` in a batch re-saved with text keys)."""
    for candidate in (key.encode("ascii"), key):
        if candidate in batch:
            return batch[candidate]
    keys = ", ".join(repr(k) for k in batch)
    raise DataError(f"{path}: not a CIFAR-10 batch: no {key!r} entry (entries: {keys})")


def read_cifar_batch(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch (``data_batch_N`` or ``test_batch``).

    A batch is a pickled dict with the entries ``b'data'`` (an N×3072 uint8 array: the red, then
    green, then blue 32×32 planes of each image, rows in C order) and ``b'labels'`` (a list of N
    ints in 0..9). It is read with a restricted unpickler that resolves only numpy's array
    reconstruction (``numpy.core.multiarray._reconstruct`` or its numpy 2 name,
    ``numpy.ndarray``, ``numpy.dtype``): any other global is refused before it is imported or
    called, so a malicious file cannot run code.

    Args:
        path: the batch file.

    Returns:
        ``(images, labels)``: an N×3072 uint8 array and an int64 array of length N (N >= 1).

    Raises:
        DataError: the file references another global, is not a valid pickle, or does not hold
            a well-formed batch (wrong shape or dtype, labels out of range, counts that differ).
            The message names the file.
        OSError: the file cannot be opened.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        try:
            batch = _CifarUnpickler(handle, path).load()
        except DataError:
            raise
        except Exception as exc:  # a corrupt pickle raises about anything
            raise DataError(
                f"{path}: not a valid CIFAR-10 batch (corrupt or truncated pickle: "
                f"{type(exc).__name__}: {exc})"
            ) from exc
    if not isinstance(batch, dict):
        raise DataError(f"{path}: not a CIFAR-10 batch: holds a {type(batch).__name__}, not a dict")
    images = _batch_entry(batch, "data", path)
    labels = _batch_entry(batch, "labels", path)
    width = math.prod(_CIFAR10_SHAPE)
    if not isinstance(images, np.ndarray):
        raise DataError(f"{path}: 'data' is a {type(images).__name__}, not a numpy array")
    if images.ndim != 2 or images.shape[1] != width:
        raise DataError(
            f"{path}: expected 'data' of shape N×{width} (3 planes of 32×32), "
            f"found shape {images.shape}"
        )
    if images.dtype != np.uint8:
        raise DataError(f"{path}: expected uint8 pixels in 'data', found {images.dtype}")
    if images.shape[0] == 0:
        raise DataError(f"{path}: holds no images")
    try:
        label_array = np.asarray(labels)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: 'labels' is not a list of integers ({exc})") from exc
    if label_array.ndim != 1 or label_array.dtype.kind not in "iu":
        raise DataError(
            f"{path}: 'labels' must be a list of integers, found {type(labels).__name__} "
            f"of shape {label_array.shape} and dtype {label_array.dtype}"
        )
    if label_array.shape[0] != images.shape[0]:
        raise DataError(f"{path}: holds {images.shape[0]} images but {label_array.shape[0]} labels")
    low, high = int(label_array.min()), int(label_array.max())
    if low < 0 or high > 9:
        bad = low if low < 0 else high
        raise DataError(f"{path}: label {bad} out of range (expected 0..9)")
    return np.ascontiguousarray(images), label_array.astype(np.int64)


def _unsafe_member_reason(name: str) -> str | None:
    """Why an archive member name would escape the extraction folder, or None when it is safe."""
    if (
        PurePosixPath(name).is_absolute()
        or PureWindowsPath(name).is_absolute()
        or name.startswith(("/", "\\"))
        or PureWindowsPath(name).drive
    ):
        return "has an absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "contains '..'"
    return None


def extract_cifar10_archive(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Extract the CIFAR-10 batches of ``cifar-10-python.tar.gz`` into ``dest/cifar-10-batches-py``.

    Every member name is checked first: an archive holding a member with an absolute path or a
    ``..`` component is refused as a whole. Only the batch files (and ``batches.meta``, when
    present) are extracted, as plain files written by this function: no links, devices or
    permissions are taken from the archive. The files go to a temporary folder inside ``dest``
    that is renamed into place once complete, replacing an older ``cifar-10-batches-py``.

    Returns:
        The folder ``dest/cifar-10-batches-py``.

    Raises:
        DataError: the archive is unreadable or corrupt, holds an unsafe member, or lacks a
            batch file, or ``dest`` is not writable.
    """
    archive, dest = Path(archive), Path(dest)
    wanted = {f"{CIFAR10_FOLDER}/{name}": name for name in (*CIFAR10_FILES, "batches.meta")}
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{CIFAR10_FOLDER}.", suffix=".part", dir=dest))
    try:
        found: set[str] = set()
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for member in tar:
                    reason = _unsafe_member_reason(member.name)
                    if reason is not None:
                        raise DataError(
                            f"refusing to extract {archive}: member {member.name!r} {reason}"
                        )
                    name = wanted.get(member.name.removeprefix("./"))
                    if name is None or not member.isfile():
                        continue
                    source = tar.extractfile(member)
                    if source is None:
                        continue
                    with source, open(tmp / name, "wb") as out:
                        shutil.copyfileobj(source, out, length=1 << 20)
                    found.add(name)
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise DataError(f"{archive}: corrupt archive ({exc})") from exc
        except OSError as exc:  # unreadable or corrupt gzip data, or dest not writable
            raise DataError(f"cannot extract {archive} into {dest}: {exc}") from exc
        missing = [name for name in CIFAR10_FILES if name not in found]
        if missing:
            raise DataError(
                f"{archive}: not a CIFAR-10 python archive: no {CIFAR10_FOLDER}/"
                f"{{{', '.join(missing)}}}"
            )
        final = dest / CIFAR10_FOLDER
        try:
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except OSError as exc:
            raise DataError(f"cannot extract {archive} into {dest}: {exc}") from exc
        logger.info("extracted %s into %s", archive, final)
        return final
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def read_image(path: str | os.PathLike[str], *, image_size: int, resize: int) -> np.ndarray:
    """Read an image file, resize its shorter side to ``resize`` and centre-crop it square.

    The image is converted to RGB; the shorter side is scaled to ``resize`` pixels and the longer
    one to ``int(resize * long / short)`` (bilinear, with Pillow's antialiasing), then the
    central ``image_size`` × ``image_size`` square is kept (its top-left corner at
    ``round((height - image_size) / 2)``, ``round((width - image_size) / 2)``): the same
    geometry as torchvision's ``Resize(resize)`` + ``CenterCrop(image_size)``.

    Args:
        path: the image (any format Pillow reads).
        image_size: side of the square crop (>= 1).
        resize: length of the shorter side after resizing (>= ``image_size``).

    Returns:
        A uint8 array of shape 3 × ``image_size`` × ``image_size`` (channels R, G, B).

    Raises:
        DataError: the file is not a readable image (the message names it).
    """
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        width, height = image.size
        if width <= height:
            size = (resize, int(resize * height / width))
        else:
            size = (int(resize * width / height), resize)
        if size != image.size:
            image = image.resize(size, Image.Resampling.BILINEAR)
        left = round((size[0] - image_size) / 2.0)
        top = round((size[1] - image_size) / 2.0)
        image = image.crop((left, top, left + image_size, top + image_size))
        pixels = np.asarray(image, dtype=np.uint8)
    except Exception as exc:  # Pillow raises many kinds of errors on corrupt data
        raise DataError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from exc
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


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
    return base / _canonical_file_name(name) if name is not None else base


def _canonical_file_name(name: str) -> str:
    """Canonical name of a dataset read from files found by name (IDX datasets, CIFAR-10)."""
    canonical = _canonical_name(name)
    if canonical not in _FOLDER_ALIASES:
        known = ", ".join(sorted(_FOLDER_ALIASES))
        raise DataError(
            f"{name!r} is not a dataset whose files are searched for (those are: {known})"
        )
    return canonical


def candidate_dirs(
    name: str, *, data_dir: str | os.PathLike[str] | None = None
) -> list[tuple[Path, str]]:
    """The folders searched for dataset ``name``, in search order, with where each comes from.

    For ``cifar10`` each folder is searched for ``cifar-10-batches-py/``, the batch files
    themselves and ``cifar-10-python.tar.gz``.

    Returns:
        A list of ``(folder, origin)`` pairs; ``origin`` is one of ``"data_dir"``,
        ``"RECLRA_DATA"``, ``"system"``, ``"cache"``. Folders need not exist.
    """
    canonical = _canonical_file_name(name)
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


def _has_cifar10_batches(folder: Path) -> bool:
    """True when ``folder`` holds every CIFAR-10 batch file."""
    return all((folder / name).is_file() for name in CIFAR10_FILES)


def _cifar10_batch_folder(folder: Path) -> Path | None:
    """``folder/cifar-10-batches-py`` or ``folder`` when it holds every CIFAR-10 batch, or None."""
    for candidate in (folder / CIFAR10_FOLDER, folder):
        if _has_cifar10_batches(candidate):
            return candidate
    return None


def _complete_folder(canonical: str, folder: Path) -> Path | None:
    """The folder holding every data file of ``canonical`` in or under ``folder``, or None."""
    if canonical == "cifar10":
        return _cifar10_batch_folder(folder)
    if folder.is_dir() and all(path is not None for path in _dataset_files(folder).values()):
        return folder
    return None


def _describe_folder(folder: Path) -> str:
    """A short status of a folder searched for IDX files, for error messages."""
    if not folder.is_dir():
        return "no such folder"
    files = _dataset_files(folder)
    missing = [IDX_FILES[role] for role, path in files.items() if path is None]
    if len(missing) == len(files):
        return "none of the files"
    return f"missing {', '.join(missing)}"


def _describe_cifar10_folder(folder: Path) -> str:
    """A short status of a folder searched for CIFAR-10, for error messages."""
    if not folder.is_dir():
        return "no such folder"
    for candidate, label in ((folder / CIFAR10_FOLDER, f"{CIFAR10_FOLDER}/ "), (folder, "")):
        present = [name for name in CIFAR10_FILES if (candidate / name).is_file()]
        if present:
            missing = [name for name in CIFAR10_FILES if name not in present]
            return f"{label}missing {', '.join(missing)}"
    return f"no {CIFAR10_FOLDER}/ and no {CIFAR10_ARCHIVE}"


def find_dataset_dir(name: str, *, data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The first complete data folder in :func:`candidate_dirs`, or None.

    For the IDX datasets, the first folder holding the four IDX files; for ``cifar10``, the
    first ``cifar-10-batches-py`` folder (or folder) holding every batch file. Archives are not
    looked at (:func:`locate_dataset` extracts them).
    """
    canonical = _canonical_file_name(name)
    for folder, origin in candidate_dirs(canonical, data_dir=data_dir):
        complete = _complete_folder(canonical, folder)
        if complete is not None:
            logger.debug("found %s in %s (%s)", canonical, complete, origin)
            return complete
    return None


def _find_cifar10(data_dir: str | os.PathLike[str] | None) -> Path | None:
    """The first CIFAR-10 batch folder, or extracted archive, in search order; or None.

    An archive is extracted into the user cache, unless the cache already holds every batch
    (delete ``cache_dir('cifar10')`` to extract it again).
    """
    for folder, origin in candidate_dirs("cifar10", data_dir=data_dir):
        complete = _cifar10_batch_folder(folder)
        if complete is not None:
            logger.debug("found cifar10 in %s (%s)", complete, origin)
            return complete
        archive = folder / CIFAR10_ARCHIVE
        if archive.is_file():
            cache = cache_dir("cifar10")
            if _has_cifar10_batches(cache / CIFAR10_FOLDER):
                logger.debug("using %s, extracted from %s earlier", cache / CIFAR10_FOLDER, archive)
                return cache / CIFAR10_FOLDER
            return extract_cifar10_archive(archive, cache)
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
    """Download the missing files of ``name`` into the user cache and return the data folder.

    Each file is written to a temporary file next to its destination, checked against the
    upstream MD5 checksum, and only then renamed into place. Files already in the cache are kept.
    For ``cifar10`` the archive ``cifar-10-python.tar.gz`` is downloaded (unless already in the
    cache) and extracted; the folder returned is ``cache_dir('cifar10')/cifar-10-batches-py``.

    Raises:
        DataError: a downloaded file has the wrong checksum, or an archive cannot be extracted.
        OSError, http.client.HTTPException: a download failed or the cache is not writable.
    """
    canonical = _canonical_file_name(name)
    folder = cache_dir(canonical)
    folder.mkdir(parents=True, exist_ok=True)
    if canonical == "cifar10":
        archive = folder / CIFAR10_ARCHIVE
        if not archive.is_file():
            urls = [mirror + CIFAR10_ARCHIVE for mirror in _MIRRORS[canonical]]
            _download_file(urls, archive, _MD5[canonical][CIFAR10_ARCHIVE], timeout=timeout)
        return extract_cifar10_archive(archive, folder)
    for gz_name in IDX_FILES.values():
        if _find_file(folder, gz_name) is not None:
            continue
        urls = [mirror + gz_name for mirror in _MIRRORS[canonical]]
        _download_file(urls, folder / gz_name, _MD5[canonical][gz_name], timeout=timeout)
    return folder


def _not_found_message(name: str, searched: list[tuple[Path, str]], reason: str) -> str:
    """The message of :class:`DatasetNotFound`: folders searched and how to provide the files."""
    if name == "cifar10":
        files = f"{CIFAR10_FOLDER}/ ({', '.join(CIFAR10_FILES)}) or {CIFAR10_ARCHIVE}"
        describe = _describe_cifar10_folder
    else:
        files = ", ".join(
            f"{gz}[.gz]" for gz in (n.removesuffix(".gz") for n in IDX_FILES.values())
        )
        describe = _describe_folder
    lines = [f"dataset {name!r} not found. Looked for {files} in:"]
    lines += [f"  {folder}  ({origin}: {describe(folder)})" for folder, origin in searched]
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
    """The folder holding the data files of ``name``, downloading them if needed.

    For the IDX datasets, the folder holding the four IDX files; for ``cifar10``, the folder
    holding the batch files (an archive found on the way is extracted into the user cache). See
    the module docstring for the search order. Downloading happens only when no folder is
    complete, ``download`` is true and ``RECLRA_NO_DOWNLOAD`` is not set.

    Raises:
        DatasetNotFound: no folder is complete and downloading is disabled or failed. The
            message lists every folder searched.
        DataError: a download had a wrong checksum, or an archive cannot be extracted.
    """
    canonical = _canonical_file_name(name)
    if canonical == "cifar10":
        folder = _find_cifar10(data_dir)
    else:
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
# Preprocessing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GlobalContrastNormalization:
    """Global contrast normalisation (GCN) of each example on its own.

    For each row ``x`` (one flattened image, values in [0, 1]), with ``v = pixel_range * x``
    (the pixel values back on their [0, 255] scale)::

        v ← scale · (v − mean(v)) / max(epsilon, sqrt(sqrt_bias + var(v)))

    where the mean and the (population, ddof 0) variance run over all the pixels of the image,
    channels included. The defaults (``scale=1``, ``sqrt_bias=10``, ``epsilon=1e-8``) give every
    image mean 0 and standard deviation ``sqrt(var / (10 + var))`` ≈ 1. ``sqrt_bias`` = λ = 10
    is applied on the [0, 255] scale on purpose: on [0, 1] values, whose variance is at most
    0.25, it would swamp the variance and make GCN a near-constant scaling. It keeps flat,
    low-contrast images from being blown up (a constant image maps to zeros); ``epsilon`` only
    matters with ``sqrt_bias=0``.
    """

    scale: float = 1.0
    sqrt_bias: float = 10.0
    epsilon: float = 1e-8
    pixel_range: float = 255.0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """GCN of each row of the N×D tensor ``x``; returns a new float32 tensor."""
        v = x.to(torch.float32) * self.pixel_range
        v.sub_(v.mean(dim=1, keepdim=True))
        norm = v.square().mean(dim=1, keepdim=True).add_(self.sqrt_bias).sqrt_()
        return v.div_(norm.clamp_(min=self.epsilon)).mul_(self.scale)


@dataclass(frozen=True)
class ZCAWhitening:
    """ZCA whitening ``x ← (x − mean) @ matrix``, fitted with :meth:`fit`.

    Attributes:
        mean: float32 feature means of the fitting data (length D).
        matrix: the float32 D×D symmetric whitening matrix
            ``W = U diag(1 / sqrt(S + epsilon)) Uᵀ``, where ``U diag(S) Uᵀ`` is the covariance
            of the centred fitting data.
        epsilon: the regulariser added to the eigenvalues ``S``.
    """

    mean: torch.Tensor
    matrix: torch.Tensor
    epsilon: float

    @classmethod
    def fit(
        cls, x: torch.Tensor, *, epsilon: float = ZCA_EPSILON, chunk_size: int = 4096
    ) -> ZCAWhitening:
        """Fit ZCA whitening to the rows of ``x`` (N×D, N >= 1).

        The covariance is ``Xcᵀ Xc / N`` of the centred data ``Xc``; it and its
        eigendecomposition are computed in float64 (``numpy.linalg.eigh``; eigenvalues below 0
        from rounding are clipped to 0). With fewer examples than features (N < D) the same
        matrix is obtained from the N×N Gram matrix ``Xc Xcᵀ / N`` instead, which is much
        cheaper: its eigenvectors give those of the covariance with nonzero eigenvalue, and the
        directions with zero variance get the factor ``1 / sqrt(epsilon)``.

        Args:
            x: the fitting data, one example per row.
            epsilon: regulariser added to the eigenvalues (> 0).
            chunk_size: rows converted to float64 at a time when accumulating the covariance.
        """
        if x.ndim != 2 or x.shape[0] < 1:
            raise ValueError(f"ZCA needs an N×D matrix with N >= 1 rows, got shape {x.shape}")
        if not epsilon > 0:
            raise ValueError(f"ZCA epsilon must be > 0, got {epsilon}")
        x = x.detach().cpu()
        n, d = x.shape
        mean = torch.zeros(d, dtype=torch.float64)
        for start in range(0, n, chunk_size):
            mean += x[start : start + chunk_size].to(torch.float64).sum(dim=0)
        mean /= n
        if n >= d:
            cov = torch.zeros(d, d, dtype=torch.float64)
            for start in range(0, n, chunk_size):
                centred = x[start : start + chunk_size].to(torch.float64) - mean
                cov.addmm_(centred.T, centred)
            cov /= n
            values, vectors = np.linalg.eigh(cov.numpy())
            values = np.clip(values, 0.0, None)
            matrix = (vectors / np.sqrt(values + epsilon)) @ vectors.T
        else:
            centred = (x.to(torch.float64) - mean).numpy()
            values, vectors = np.linalg.eigh(centred @ centred.T / n)
            # Drop the null space (and rounding noise): directions with variance far below
            # epsilon get 1 / sqrt(epsilon) whether kept or not.
            keep = values > 1e-9 * max(float(values.max(initial=0.0)), epsilon)
            values = values[keep]
            # Unit eigenvectors of the covariance with eigenvalue values[i].
            u = centred.T @ (vectors[:, keep] / np.sqrt(n * values))
            matrix = (u * (1.0 / np.sqrt(values + epsilon) - 1.0 / math.sqrt(epsilon))) @ u.T
            matrix[np.diag_indices(d)] += 1.0 / math.sqrt(epsilon)
        matrix = (matrix + matrix.T) / 2.0
        return cls(
            mean=mean.to(torch.float32),
            matrix=torch.from_numpy(matrix).to(torch.float32),
            epsilon=float(epsilon),
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Whiten the rows of ``x`` (on ``x``'s device); returns a new float32 tensor."""
        x = x.to(torch.float32)
        mean = self.mean.to(x.device)
        matrix = self.matrix.to(x.device)
        return (x - mean) @ matrix

    def to(self, device: torch.device | str | None) -> ZCAWhitening:
        """A copy with ``mean`` and ``matrix`` on ``device``."""
        return ZCAWhitening(self.mean.to(device), self.matrix.to(device), self.epsilon)


@dataclass(frozen=True)
class GcnZca:
    """Global contrast normalisation then ZCA whitening: ``zca(gcn(x))``.

    The preprocessing of CIFAR-10 (see :func:`fit_gcn_zca`), applied to flattened images with
    values in [0, 1]; kept as :attr:`Dataset.preprocessing` so it can be applied to new images.
    """

    gcn: GlobalContrastNormalization
    zca: ZCAWhitening

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.zca(self.gcn(x))

    def to(self, device: torch.device | str | None) -> GcnZca:
        """A copy with the ZCA tensors on ``device``."""
        return GcnZca(self.gcn, self.zca.to(device))


def fit_gcn_zca(
    x: torch.Tensor,
    *,
    gcn: GlobalContrastNormalization | None = None,
    zca_epsilon: float = ZCA_EPSILON,
) -> GcnZca:
    """Fit the CIFAR-10 preprocessing to training images ``x`` (N×D, values in [0, 1]).

    Each image is contrast-normalised with ``gcn`` (default :class:`GlobalContrastNormalization`
    with its defaults), then ZCA whitening (:meth:`ZCAWhitening.fit`, ``epsilon=zca_epsilon``) is
    fitted to the normalised images. Fit it on the training split only and apply the result to
    every split.
    """
    gcn = gcn if gcn is not None else GlobalContrastNormalization()
    return GcnZca(gcn, ZCAWhitening.fit(gcn(x), epsilon=zca_epsilon))


@dataclass(frozen=True)
class ChannelNormalization:
    """Per-channel normalisation ``(x − mean[c]) / std[c]`` of flattened C×H×W images.

    ``x`` holds channel-major rows (all pixels of channel 0, then channel 1, …) with values in
    [0, 1]; ``mean`` and ``std`` have one entry per channel.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise the rows of the N×(C·H·W) tensor ``x``; returns a new float32 tensor."""
        channels = len(self.mean)
        v = x.to(torch.float32).reshape(x.shape[0], channels, x.shape[1] // channels)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(1, -1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(1, -1, 1)
        return ((v - mean) / std).reshape(x.shape)

    def to(self, device: torch.device | str | None) -> ChannelNormalization:
        """This object (it holds no tensors)."""
        del device
        return self


def _imagenet_normalization(x: torch.Tensor) -> ChannelNormalization:
    """The fixed ImageNet normalisation (``x``, the training data, is not used)."""
    del x
    return ChannelNormalization(IMAGENET_MEAN, IMAGENET_STD)


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------

#: A fitted preprocessing: maps N×D inputs scaled to [0, 1] to model inputs.
Preprocessing = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Split:
    """One split of a dataset, in memory.

    Attributes:
        x: float32 inputs of shape N×D (images flattened channel-major, values scaled to [0, 1],
            then preprocessed when the dataset has a :attr:`Dataset.preprocessing`).
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
        name: canonical dataset name (see :func:`dataset_names`).
        train, val, test: the splits; ``x`` is N×D with D = prod(input_shape).
        num_classes: number of classes (labels are 0..num_classes-1).
        input_shape: shape of one example as C×H×W, e.g. ``(1, 28, 28)``; conv models can use
            ``split.x.view(-1, *input_shape)``.
        source: the folder the data was read from, or ``'sklearn digits'``.
        preprocessing: the transform applied to every split after scaling to [0, 1] (fitted on
            the training examples for CIFAR-10's GCN + ZCA, see :class:`GcnZca`; the ImageNet
            :class:`ChannelNormalization` for ``imagefolder``), so that new images can be
            prepared the same way; None when the inputs are only scaled.
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, ...]
    source: str
    preprocessing: Preprocessing | None = None

    @property
    def input_dim(self) -> int:
        """Number of features D of a flattened example."""
        return math.prod(self.input_shape)

    def to(self, device: torch.device | str | None) -> Dataset:
        """A copy of this dataset with every split (and the preprocessing) on ``device``."""
        preprocessing = self.preprocessing
        move = getattr(preprocessing, "to", None)
        return Dataset(
            name=self.name,
            train=self.train.to(device),
            val=self.val.to(device),
            test=self.test.to(device),
            num_classes=self.num_classes,
            input_shape=self.input_shape,
            source=self.source,
            preprocessing=move(device) if move is not None else preprocessing,
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
        default_val_size: the validation size used when :func:`load_dataset` gets
            ``val_size=None``.
        fit_preprocessing: when set, called with the float32 training inputs (scaled, the
            validation examples removed); returns the transform applied to every split.
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
    default_val_size: int = DEFAULT_VAL_SIZE
    fit_preprocessing: Callable[[torch.Tensor], Preprocessing] | None = None


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


def load_cifar10_raw(
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    preprocess: str = "gcn_zca",
) -> RawDataset:
    """Loader of CIFAR-10 from its python batches (see :func:`locate_dataset` for where).

    The 50,000 training images are the five ``data_batch_N`` files in order, the 10,000 test
    images ``test_batch`` (any number of images per batch is accepted). Each image is a row of
    3072 values in channel-major order (``x.view(-1, 3, 32, 32)`` is the image). The default
    validation size is :data:`CIFAR10_VAL_SIZE` (5,000).

    Args:
        data_dir, download: as for :func:`locate_dataset`.
        preprocess: ``'gcn_zca'`` (default): global contrast normalisation of each image, then
            ZCA whitening fitted on the training split only and applied to every split (see
            :func:`fit_gcn_zca`; the fitted :class:`GcnZca` is kept as
            :attr:`Dataset.preprocessing`); ``'none'``: pixel values scaled to [0, 1].
    """
    if preprocess not in _CIFAR10_PREPROCESSING:
        choices = ", ".join(repr(choice) for choice in _CIFAR10_PREPROCESSING)
        raise ValueError(f"cifar10: preprocess must be one of {choices}, got {preprocess!r}")
    folder = locate_dataset("cifar10", data_dir=data_dir, download=download)
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    for name in CIFAR10_FILES:
        path = folder / name
        if not path.is_file():  # the folder changed since it was located
            raise DatasetNotFound(f"{folder}: {name} disappeared while loading cifar10")
        parts.append(read_cifar_batch(path))
    train, (test_x, test_y) = parts[:-1], parts[-1]
    return RawDataset(
        train_x=np.concatenate([x for x, _ in train]),
        train_y=np.concatenate([y for _, y in train]),
        test_x=test_x,
        test_y=test_y,
        num_classes=10,
        input_shape=_CIFAR10_SHAPE,
        source=str(folder),
        scale=255.0,
        default_val_size=CIFAR10_VAL_SIZE,
        fit_preprocessing=fit_gcn_zca if preprocess == "gcn_zca" else None,
    )


def _class_folders(folder: Path) -> list[str]:
    """Names of the class subfolders of ``folder``, sorted (hidden folders are skipped)."""
    return sorted(
        entry.name
        for entry in folder.iterdir()
        if entry.is_dir() and not entry.name.startswith(".")
    )


def _image_files(folder: Path) -> list[Path]:
    """The image files of a class folder (:data:`IMAGE_EXTENSIONS`), sorted by name."""
    return sorted(
        entry
        for entry in folder.iterdir()
        if entry.suffix.lower() in IMAGE_EXTENSIONS
        and not entry.name.startswith(".")
        and entry.is_file()
    )


def _read_image_folder(
    folder: Path, classes: Sequence[str], *, image_size: int, resize: int, require_all: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``folder/<class>/*`` for each class (label = its index in ``classes``).

    Returns N×(3·S·S) uint8 images and int64 labels. With ``require_all``, a class folder
    without images is an error.
    """
    files: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue
        found = _image_files(class_dir)
        if not found and require_all:
            extensions = ", ".join(IMAGE_EXTENSIONS)
            raise DataError(f"{class_dir}: class folder holds no images ({extensions})")
        files.extend((path, label) for path in found)
    if not files:
        raise DataError(f"{folder}: holds no images in its class folders")
    images = np.empty((len(files), 3 * image_size * image_size), dtype=np.uint8)
    for row, (path, _) in enumerate(files):
        images[row] = read_image(path, image_size=image_size, resize=resize).reshape(-1)
    labels = np.array([label for _, label in files], dtype=np.int64)
    return images, labels


def load_imagefolder_raw(
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    image_size: int = 224,
    resize: int | None = None,
) -> RawDataset:
    """Loader of an ImageNet-style image folder (materialised in memory: for small datasets).

    Layout: ``data_dir/train/<class>/*`` and ``data_dir/val/<class>/*`` with image files
    ending in ``.jpg``, ``.jpeg``, ``.png`` or ``.bmp`` (any case; other and hidden files are
    ignored). The classes are the subfolders of ``train/``, sorted by name; class ``i`` has
    label ``i``. ``val/`` is the test split; its class folders must be classes of ``train/``.
    The validation split is drawn from ``train/`` (default 2,000 images, capped at 20% of them).

    Every image (train and val alike) is converted to RGB, its shorter side resized to
    ``resize`` and the central ``image_size`` square kept (see :func:`read_image`); this is
    deterministic: no random-crop or flip augmentation is applied, since the dataset is held in
    memory as tensors. The pixels are then scaled to [0, 1] and normalised per channel with the
    ImageNet mean and std (:data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`; the
    :class:`ChannelNormalization` is kept as :attr:`Dataset.preprocessing`).

    Args:
        data_dir: the folder holding ``train/`` and ``val/`` (required).
        download: ignored (there is nothing to download).
        image_size: side of the square images (``input_shape`` is ``(3, image_size,
            image_size)``).
        resize: shorter side before cropping; None: ``round(image_size * 256 / 224)`` (256 for
            224, the usual ImageNet ratio). Must be at least ``image_size``.

    Raises:
        DatasetNotFound: ``data_dir`` is None or lacks ``train/`` or ``val/``.
        DataError: no class folders, a training class without images, a ``val/`` class that is
            not a training class, or an unreadable image (the message names the file).
        ValueError: invalid ``image_size`` or ``resize``.
    """
    del download
    image_size = _as_int(image_size, "image_size")
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    resize = round(image_size * 256 / 224) if resize is None else _as_int(resize, "resize")
    if resize < image_size:
        raise ValueError(f"resize must be >= image_size ({image_size}), got {resize}")
    layout = "DIR/train/<class>/*.jpg and DIR/val/<class>/*.jpg (or .jpeg, .png, .bmp)"
    if data_dir is None:
        raise DatasetNotFound(
            f"dataset 'imagefolder' needs a data folder: pass --data-dir DIR (data_dir=DIR) "
            f"with {layout}"
        )
    root = Path(data_dir).expanduser()
    train_dir, val_dir = root / "train", root / "val"
    for folder in (train_dir, val_dir):
        if not folder.is_dir():
            raise DatasetNotFound(
                f"dataset 'imagefolder' not found: {folder} is not a folder (expected {layout}, "
                f"with DIR = {root})"
            )
    classes = _class_folders(train_dir)
    if not classes:
        raise DataError(f"{train_dir}: no class folders (expected {train_dir}/<class>/*.jpg)")
    known = set(classes)
    for name in _class_folders(val_dir):
        if name not in known:
            raise DataError(
                f"{val_dir / name}: class {name!r} is not a class of {train_dir} "
                f"(classes: {', '.join(classes)})"
            )
    train_x, train_y = _read_image_folder(
        train_dir, classes, image_size=image_size, resize=resize, require_all=True
    )
    test_x, test_y = _read_image_folder(
        val_dir, classes, image_size=image_size, resize=resize, require_all=False
    )
    return RawDataset(
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=len(classes),
        input_shape=(3, image_size, image_size),
        source=str(root),
        scale=255.0,
        max_val_fraction=_IMAGEFOLDER_MAX_VAL_FRACTION,
        fit_preprocessing=_imagenet_normalization,
    )


#: Dataset loaders by canonical name; each takes ``data_dir`` and ``download`` keywords, and
#: possibly dataset-specific options (``preprocess`` for ``cifar10``; ``image_size`` and
#: ``resize`` for ``imagefolder``) that :func:`load_dataset` passes on when given.
DATASETS: dict[str, Callable[..., RawDataset]] = {
    "mnist": load_mnist_raw,
    "fashion-mnist": load_fashion_mnist_raw,
    "cifar10": load_cifar10_raw,
    "imagefolder": load_imagefolder_raw,
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


# Dataset-specific options of load_dataset, passed on to the loaders that take them.
_LOADER_OPTIONS = ("preprocess", "image_size", "resize")


def _loader_options(canonical: str, options: dict[str, object]) -> dict[str, object]:
    """The options given (not None), checked against the keywords the loader takes."""
    given = {key: value for key, value in options.items() if value is not None}
    parameters = inspect.signature(DATASETS[canonical]).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return given
    takes = [key for key in _LOADER_OPTIONS if key in parameters]
    for key in given:
        if key not in parameters:
            accepted = ", ".join(f"{k}=" for k in takes) or "none"
            raise ValueError(
                f"dataset {canonical!r} does not take the option {key}= (its options: {accepted})"
            )
    return given


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    val_size: int | None = None,
    limit_train: int | None = None,
    seed: int = 0,
    download: bool = True,
    preprocess: str | None = None,
    image_size: int | None = None,
    resize: int | None = None,
) -> Dataset:
    """Load a dataset with train/validation/test splits.

    The split order is exact and reproducible:

    1. ``val_size`` examples are drawn from the full training file with
       ``torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))[:val_size]``
       (the validation split keeps file order);
    2. the remaining examples, in file order, form the training split;
    3. with ``limit_train=N``, only the first N of those are kept (all of them when fewer).

    The test split is the dataset's test file (for ``digits``: a fixed 20% drawn with a fixed
    seed, independent of ``seed``; for ``imagefolder``: the ``val/`` folder). For ``digits`` and
    ``imagefolder`` the validation split is capped at 20% of the training set.

    Inputs are scaled to [0, 1]. A dataset with a preprocessing then has it fitted on the
    training examples of step 2 (all of them, before ``limit_train``; never on validation or
    test examples) and applied to every split; it is kept as :attr:`Dataset.preprocessing`.
    CIFAR-10 uses GCN + ZCA whitening by default (:func:`fit_gcn_zca`), ``imagefolder`` the
    ImageNet per-channel normalisation.

    Args:
        name: ``mnist``, ``fashion-mnist`` (alias ``fmnist``), ``cifar10`` (alias
            ``cifar-10``), ``imagefolder`` or ``digits``.
        data_dir: folder searched first for the data files (see :func:`locate_dataset`);
            required for ``imagefolder``.
        val_size: number of validation examples (0 for an empty validation split); None: the
            dataset's default, :data:`DEFAULT_VAL_SIZE` (2000; capped as above for ``digits``
            and ``imagefolder``), or :data:`CIFAR10_VAL_SIZE` (5000) for ``cifar10``.
        limit_train: keep at most this many training examples (None: all).
        seed: seed of the validation draw.
        download: allow downloading missing files into the user cache.
        preprocess: ``cifar10`` only: ``'gcn_zca'`` (None: the default) or ``'none'`` (see
            :func:`load_cifar10_raw`).
        image_size, resize: ``imagefolder`` only: see :func:`load_imagefolder_raw` (None: the
            defaults, 224 and ``round(image_size * 256 / 224)``).

    Raises:
        DataError: unknown name or invalid data; :class:`DatasetNotFound` when the files
            cannot be found or downloaded.
        ValueError: invalid ``val_size``, ``limit_train``, ``seed`` or option, or an option
            given for a dataset that does not take it.
    """
    canonical = _canonical_name(name)
    if val_size is not None:
        val_size = _as_int(val_size, "val_size")
        if val_size < 0:
            raise ValueError(f"val_size must be >= 0, got {val_size}")
    if limit_train is not None:
        limit_train = _as_int(limit_train, "limit_train")
        if limit_train < 1:
            raise ValueError(f"limit_train must be >= 1 (or None for no limit), got {limit_train}")
    seed = _as_int(seed, "seed")
    options = _loader_options(
        canonical, {"preprocess": preprocess, "image_size": image_size, "resize": resize}
    )

    raw = DATASETS[canonical](data_dir=data_dir, download=download, **options)
    if val_size is None:
        val_size = raw.default_val_size
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
    fit_idx = np.flatnonzero(~is_val)
    train_idx = fit_idx[:limit_train] if limit_train is not None else fit_idx

    train = _to_split(raw.train_x[train_idx], raw.train_y[train_idx], raw.scale)
    val = _to_split(raw.train_x[val_idx], raw.train_y[val_idx], raw.scale)
    test = _to_split(raw.test_x, raw.test_y, raw.scale)
    preprocessing: Preprocessing | None = None
    if raw.fit_preprocessing is not None:
        if len(train_idx) == len(fit_idx):
            fit_x = train.x
        else:
            fit_x = _to_split(raw.train_x[fit_idx], raw.train_y[fit_idx], raw.scale).x
        preprocessing = raw.fit_preprocessing(fit_x)
        del fit_x
        train, val, test = (Split(preprocessing(s.x), s.y) for s in (train, val, test))

    return Dataset(
        name=canonical,
        train=train,
        val=val,
        test=test,
        num_classes=raw.num_classes,
        input_shape=tuple(raw.input_shape),
        source=raw.source,
        preprocessing=preprocessing,
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
