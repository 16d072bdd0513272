"""Datasets in memory (:class:`Split`, :class:`Dataset`), what a loader returns
(:class:`RawDataset`), and :func:`load_dataset`: validation split, scaling, preprocessing."""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from reclra.data.errors import DataError
from reclra.data.names import DATASETS, _canonical_name
from reclra.data.preprocess import Preprocessing

__all__ = ["DEFAULT_VAL_SIZE", "Dataset", "RawDataset", "Split", "load_dataset"]

#: Validation examples drawn from the training set when ``val_size`` is not given.
DEFAULT_VAL_SIZE = 2000


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


def _as_int(value: object, what: str) -> int:
    """``value`` as an int (bools and non-integers rejected with a DataError)."""
    if isinstance(value, bool):
        raise DataError(f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise DataError(f"{what} must be an integer, got {value!r}") from None


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
    parameters = DATASETS.options(canonical)
    takes = [key for key in _LOADER_OPTIONS if key in parameters]
    for key in given:
        if key not in parameters:
            accepted = ", ".join(f"{k}=" for k in takes) or "none"
            raise DataError(
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
        DataError: unknown name, a ``data_dir`` that is not a folder, invalid data (NaN or
            infinite inputs included), an invalid ``val_size``, ``limit_train``, ``seed`` or
            option, or an option given for a dataset that does not take it;
            :class:`DatasetNotFound` when the files cannot be found or downloaded.
    """
    canonical = _canonical_name(name)
    if data_dir is not None and not os.path.isdir(os.path.expanduser(data_dir)):
        raise DataError(f"data folder {os.fspath(data_dir)} does not exist or is not a folder")
    if val_size is not None:
        val_size = _as_int(val_size, "val_size")
        if val_size < 0:
            raise DataError(f"val_size must be >= 0, got {val_size}")
    if limit_train is not None:
        limit_train = _as_int(limit_train, "limit_train")
        if limit_train < 1:
            raise DataError(f"limit_train must be >= 1 (or None for no limit), got {limit_train}")
    seed = _as_int(seed, "seed")
    options = _loader_options(
        canonical, {"preprocess": preprocess, "image_size": image_size, "resize": resize}
    )

    raw = DATASETS.build(canonical, data_dir=data_dir, download=download, **options)
    if val_size is None:
        val_size = raw.default_val_size
    n_train = int(raw.train_x.shape[0])
    if raw.max_val_fraction is not None:
        val_size = min(val_size, int(n_train * raw.max_val_fraction))
    if val_size >= n_train:
        raise DataError(
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
    for split_name, split in (("training", train), ("validation", val), ("test", test)):
        bad = int((~split.x.isfinite()).any(dim=1).sum()) if split.x.numel() else 0
        if bad:
            raise DataError(
                f"{canonical}: {bad} {split_name} examples of {raw.source} hold NaN or infinite "
                f"values{' after preprocessing' if preprocessing is not None else ''}"
            )

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
