"""The errors of :mod:`reclra.data`: bad or missing data files, unknown datasets."""

from __future__ import annotations

from reclra.errors import ReclraError

__all__ = ["DataError", "DatasetNotFound"]


class DataError(ReclraError):
    """A data file is missing, corrupt or inconsistent, or a dataset name is unknown."""


class DatasetNotFound(DataError):
    """No folder holds the files of a dataset and they could not be downloaded."""
