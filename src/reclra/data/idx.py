"""The IDX format of MNIST-style datasets: reading one file, validating an images/labels pair."""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from reclra.data.errors import DataError

__all__ = ["IDX_FILES", "read_idx"]

#: The four IDX files of an MNIST-style dataset, keyed by role, as upstream names them (gzip).
IDX_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

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
