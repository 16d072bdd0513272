"""Dataset names: the :data:`DATASETS` registry the loaders are registered in, and aliases."""

from __future__ import annotations

from typing import TYPE_CHECKING

from reclra.data.errors import DataError
from reclra.registry import Registry

if TYPE_CHECKING:
    from reclra.data.datasets import RawDataset

__all__ = ["DATASETS", "dataset_names"]

#: Dataset loaders by canonical name (filled by :mod:`reclra.data.loaders`); each takes
#: ``data_dir`` and ``download`` keywords, and possibly dataset-specific options (``preprocess``
#: for ``cifar10``; ``image_size`` and ``resize`` for ``imagefolder``) that :func:`load_dataset`
#: passes on when given.
DATASETS: Registry[RawDataset] = Registry("dataset")

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


def dataset_names() -> list[str]:
    """Canonical names of the known datasets, sorted."""
    return sorted(DATASETS.names())


def _canonical_name(name: str) -> str:
    """Map a dataset name or alias (case-insensitive) to its canonical name."""
    key = name.strip().lower()
    key = _NAME_ALIASES.get(key, key)
    if key not in DATASETS:
        known = ", ".join(dataset_names())
        aliases = ", ".join(f"{a} → {c}" for a, c in sorted(_NAME_ALIASES.items()))
        raise DataError(f"unknown dataset {name!r}; known datasets: {known} (aliases: {aliases})")
    return key
