"""The per-dataset loaders, registered in :data:`DATASETS`: each reads a dataset's files into a
:class:`RawDataset` (full train and test sets, unsplit)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from reclra.data.cifar import _CIFAR10_SHAPE, CIFAR10_FILES, read_cifar_batch
from reclra.data.datasets import RawDataset, _as_int
from reclra.data.errors import DataError, DatasetNotFound
from reclra.data.idx import IDX_FILES, _check_image_label_pair, read_idx
from reclra.data.images import _class_folders, _read_image_folder
from reclra.data.locate import _dataset_files, locate_dataset
from reclra.data.names import DATASETS, _canonical_name
from reclra.data.preprocess import _imagenet_normalization, fit_gcn_zca

__all__ = [
    "CIFAR10_VAL_SIZE",
    "KNOWN_SHAPES",
    "dataset_shape",
    "load_cifar10_raw",
    "load_digits_raw",
    "load_fashion_mnist_raw",
    "load_imagefolder_raw",
    "load_mnist_raw",
]

#: CIFAR-10's default validation size (the papers set 5,000 training samples aside).
CIFAR10_VAL_SIZE = 5000

# Seed of the fixed train/test split of the scikit-learn digits (independent of ``seed``).
_DIGITS_TEST_SEED = 0
_DIGITS_TEST_FRACTION = 0.2
_DIGITS_MAX_VAL_FRACTION = 0.2

# The validation split of an image folder is capped at this fraction of its training images.
_IMAGEFOLDER_MAX_VAL_FRACTION = 0.2

# Preprocessing choices of the CIFAR-10 loader.
_CIFAR10_PREPROCESSING = ("gcn_zca", "none")

#: Input shape and number of classes of the datasets whose shape is fixed, known before their
#: files are read (an image folder's depend on its options and folders).
KNOWN_SHAPES: dict[str, tuple[tuple[int, ...], int]] = {
    "mnist": ((1, 28, 28), 10),
    "fashion-mnist": ((1, 28, 28), 10),
    "digits": ((1, 8, 8), 10),
    "cifar10": (_CIFAR10_SHAPE, 10),
}


def dataset_shape(name: str) -> tuple[tuple[int, ...], int] | None:
    """``(input_shape, num_classes)`` of dataset ``name`` before loading it (None: not known
    until its files are read, as for ``imagefolder``)."""
    return KNOWN_SHAPES.get(_canonical_name(name))


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
        num_classes=KNOWN_SHAPES[name][1],
        input_shape=KNOWN_SHAPES[name][0],
        source=str(folder),
        scale=255.0,
    )


@DATASETS.register("mnist")
def load_mnist_raw(
    *, data_dir: str | os.PathLike[str] | None = None, download: bool = True
) -> RawDataset:
    """Loader of MNIST (see :func:`locate_dataset` for where the files are looked for)."""
    return _load_idx_dataset("mnist", data_dir=data_dir, download=download)


@DATASETS.register("fashion-mnist")
def load_fashion_mnist_raw(
    *, data_dir: str | os.PathLike[str] | None = None, download: bool = True
) -> RawDataset:
    """Loader of Fashion-MNIST (see :func:`locate_dataset` for where the files are looked for)."""
    return _load_idx_dataset("fashion-mnist", data_dir=data_dir, download=download)


@DATASETS.register("digits")
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
        num_classes=KNOWN_SHAPES["digits"][1],
        input_shape=KNOWN_SHAPES["digits"][0],
        source="sklearn digits",
        scale=16.0,
        max_val_fraction=_DIGITS_MAX_VAL_FRACTION,
    )


@DATASETS.register("cifar10")
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
        raise DataError(f"cifar10: preprocess must be one of {choices}, got {preprocess!r}")
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
        num_classes=KNOWN_SHAPES["cifar10"][1],
        input_shape=KNOWN_SHAPES["cifar10"][0],
        source=str(folder),
        scale=255.0,
        default_val_size=CIFAR10_VAL_SIZE,
        fit_preprocessing=fit_gcn_zca if preprocess == "gcn_zca" else None,
    )


@DATASETS.register("imagefolder")
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
        raise DataError(f"image_size must be >= 1, got {image_size}")
    resize = round(image_size * 256 / 224) if resize is None else _as_int(resize, "resize")
    if resize < image_size:
        raise DataError(f"resize must be >= image_size ({image_size}), got {resize}")
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
