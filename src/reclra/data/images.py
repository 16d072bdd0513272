"""Image files: one image read, resized and centre-cropped; the class folders of an
ImageNet-style layout read into arrays."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from reclra.data.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "read_image"]

#: Image file name extensions read by the ``imagefolder`` dataset (case-insensitive).
IMAGE_EXTENSIONS: tuple[str, ...] = (".bmp", ".jpeg", ".jpg", ".png")


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
