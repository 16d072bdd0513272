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

The package, one module per concern: :mod:`~reclra.data.errors`; the file formats
:mod:`~reclra.data.idx`, :mod:`~reclra.data.cifar` and :mod:`~reclra.data.images`;
:mod:`~reclra.data.locate` (search order, cache, downloads); :mod:`~reclra.data.preprocess`;
:mod:`~reclra.data.names` (the :data:`DATASETS` registry, aliases); :mod:`~reclra.data.loaders`
(one registered loader per dataset); :mod:`~reclra.data.datasets` (splits and
:func:`load_dataset`); :mod:`~reclra.data.batches`. Every public name is importable from
``reclra.data``.
"""

from __future__ import annotations

from reclra.data.batches import iterate_minibatches
from reclra.data.cifar import (
    CIFAR10_ARCHIVE,
    CIFAR10_FILES,
    CIFAR10_FOLDER,
    extract_cifar10_archive,
    read_cifar_batch,
)
from reclra.data.datasets import DEFAULT_VAL_SIZE, Dataset, RawDataset, Split, load_dataset
from reclra.data.errors import DataError, DatasetNotFound
from reclra.data.idx import IDX_FILES, read_idx
from reclra.data.images import IMAGE_EXTENSIONS, read_image
from reclra.data.loaders import (
    CIFAR10_VAL_SIZE,
    KNOWN_SHAPES,
    dataset_shape,
    load_cifar10_raw,
    load_digits_raw,
    load_fashion_mnist_raw,
    load_imagefolder_raw,
    load_mnist_raw,
)
from reclra.data.locate import (
    DOWNLOAD_TIMEOUT,
    SYSTEM_DATASET_DIR,
    cache_dir,
    candidate_dirs,
    download_dataset,
    fetch_url,
    find_dataset_dir,
    locate_dataset,
)
from reclra.data.names import DATASETS, dataset_names
from reclra.data.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ZCA_EPSILON,
    ChannelNormalization,
    GcnZca,
    GlobalContrastNormalization,
    Preprocessing,
    ZCAWhitening,
    fit_gcn_zca,
)

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
    "KNOWN_SHAPES",
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
    "dataset_shape",
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
