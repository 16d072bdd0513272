"""CIFAR-10's python format: the pickled batches (read without running code) and the official
archive (extracted safely)."""

from __future__ import annotations

import io
import logging
import math
import os
import pickle
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from reclra.data.errors import DataError

__all__ = [
    "CIFAR10_ARCHIVE",
    "CIFAR10_FILES",
    "CIFAR10_FOLDER",
    "extract_cifar10_archive",
    "read_cifar_batch",
]

logger = logging.getLogger(__name__)

#: Folder of the CIFAR-10 python batches, as the official archive names it.
CIFAR10_FOLDER = "cifar-10-batches-py"

#: The official CIFAR-10 python archive (holds :data:`CIFAR10_FOLDER`).
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"

#: The CIFAR-10 batch files needed: five training batches, then the test batch.
CIFAR10_FILES: tuple[str, ...] = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")

# Pixels per CIFAR-10 image (3 channel planes of 32×32, red then green then blue).
_CIFAR10_SHAPE = (3, 32, 32)

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
