"""Locating the data files of a dataset (search order, user cache) and downloading them with
checksums; see :mod:`reclra.data` for the search order."""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from reclra.data.cifar import (
    CIFAR10_ARCHIVE,
    CIFAR10_FILES,
    CIFAR10_FOLDER,
    extract_cifar10_archive,
)
from reclra.data.errors import DataError, DatasetNotFound
from reclra.data.idx import IDX_FILES
from reclra.data.names import _canonical_name

__all__ = [
    "DOWNLOAD_TIMEOUT",
    "SYSTEM_DATASET_DIR",
    "cache_dir",
    "candidate_dirs",
    "download_dataset",
    "fetch_url",
    "find_dataset_dir",
    "locate_dataset",
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
