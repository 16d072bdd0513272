"""What a run folder records about where it came from: versions, git commit, device, data files.

Plain functions returning JSON-ready dicts; :class:`reclra.train.Trainer` writes them to
``run.json``. The data files are those of the folder a dataset was read from
(:attr:`reclra.data.Dataset.source`), each with its size and SHA-256; a sub-folder (the class
folders of ``imagefolder``) is recorded by its file count, total size and the SHA-256 of its
listing (relative paths and sizes), not of its contents.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

import reclra

__all__ = ["data_files", "environment", "git_commit", "sha256"]

_CHUNK = 1 << 20


def sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@cache
def git_commit() -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the git checkout reclra is imported from, or None (installed
    from a wheel, or git is missing)."""
    root = Path(reclra.__file__).resolve().parents[2]  # src/reclra/__init__.py → the checkout
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())}


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment(device: str) -> dict[str, Any]:
    """Library versions, git commit, Python, platform, the device and the CPU thread count."""
    return {
        "reclra": reclra.__version__,
        "git": git_commit(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "numpy": _version("numpy"),
        "scikit-learn": _version("scikit-learn"),  # the digits dataset ships with it
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "threads": torch.get_num_threads(),
    }


def _folder_listing(folder: Path) -> dict[str, Any]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    lines = "".join(f"{p.relative_to(folder).as_posix()}\t{p.stat().st_size}\n" for p in files)
    return {
        "name": f"{folder.name}/",
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
        "listing_sha256": hashlib.sha256(lines.encode()).hexdigest(),
    }


def data_files(source: str) -> list[dict[str, Any]]:
    """The files of the data folder ``source`` with sizes and SHA-256 (see the module docstring);
    empty when ``source`` is not a folder (e.g. ``'sklearn digits'``)."""
    folder = Path(source)
    if not folder.is_dir():
        return []
    out: list[dict[str, Any]] = []
    for path in sorted(folder.iterdir()):
        if path.is_dir():
            out.append(_folder_listing(path))
        elif path.is_file():
            out.append({"name": path.name, "bytes": path.stat().st_size, "sha256": sha256(path)})
    return out
