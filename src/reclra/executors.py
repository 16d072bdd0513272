"""Executors: how the independent work of one pathway level is run (see :mod:`reclra.walk`).

An executor takes the zero-argument callables of one level and returns their results **in the
order given**, whatever order it ran them in; the walk applies the directions in that order, so
every executor gives the same ``.grad`` (bit for bit where the maths kernels are deterministic).

- ``serial``: one after the other, in the caller's thread (the default).
- ``threads``: on a thread pool. PyTorch releases the GIL inside its kernels, so large per-layer
  work overlaps; each worker runs with the caller's grad mode.
- ``streams``: on CUDA, each task of a level on its own stream, joined before the walk goes on.

Choose one by name (``executor="threads"`` on any local rule, ``rule.executor`` in a config) or
pass an instance; a new executor is any class with this ``run`` method, registered in
:data:`EXECUTORS`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

import torch

from reclra.errors import ConfigError
from reclra.registry import Registry

__all__ = [
    "EXECUTORS",
    "Executor",
    "SerialExecutor",
    "StreamsExecutor",
    "ThreadsExecutor",
    "build_executor",
]

T = TypeVar("T")


class Executor(Protocol):
    """Runs the independent tasks of one level; results come back in the order of ``tasks``."""

    name: str

    def run(
        self, tasks: Sequence[Callable[[], T]], *, device: torch.device | None = None
    ) -> list[T]: ...


class SerialExecutor:
    """Runs the tasks one after the other in the calling thread."""

    name = "serial"

    def run(
        self, tasks: Sequence[Callable[[], T]], *, device: torch.device | None = None
    ) -> list[T]:
        return [task() for task in tasks]

    def __repr__(self) -> str:
        return "SerialExecutor()"


class ThreadsExecutor:
    """Runs the tasks of a level on a pool of threads.

    Args:
        max_workers: pool size (default: the number of CPU cores). A level with one task runs in
            the calling thread.
    """

    name = "threads"

    def __init__(self, max_workers: int | None = None) -> None:
        if max_workers is not None and max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        self.max_workers = max_workers or os.cpu_count() or 1
        self._pool: ThreadPoolExecutor | None = None

    def run(
        self, tasks: Sequence[Callable[[], T]], *, device: torch.device | None = None
    ) -> list[T]:
        if len(tasks) < 2 or self.max_workers == 1:
            return [task() for task in tasks]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="reclra")
        grad_mode = torch.is_grad_enabled()  # grad mode is per thread: carry the caller's
        futures = [self._pool.submit(_with_grad_mode, task, grad_mode) for task in tasks]
        return [f.result() for f in futures]

    def __getstate__(self) -> dict:  # a pool cannot be copied or pickled: a copy starts its own
        return {"max_workers": self.max_workers, "_pool": None}

    def __repr__(self) -> str:
        return f"ThreadsExecutor(max_workers={self.max_workers})"


def _with_grad_mode(task: Callable[[], T], grad_mode: bool) -> T:
    with torch.set_grad_enabled(grad_mode):
        return task()


class StreamsExecutor:
    """Runs each task of a level on its own CUDA stream of the step's device.

    Every stream first waits for the work already queued on the current stream (the forward
    pass, earlier levels); the current stream waits for every stream before the walk applies
    the level's directions. Needs the step's tensors on a CUDA device.
    """

    name = "streams"

    def __init__(self) -> None:
        self._streams: dict[torch.device, list[torch.cuda.Stream]] = {}

    def run(
        self, tasks: Sequence[Callable[[], T]], *, device: torch.device | None = None
    ) -> list[T]:
        if device is None or device.type != "cuda":
            where = "an unknown device" if device is None else str(device)
            raise ConfigError(
                f"the 'streams' executor runs on CUDA, but this step runs on {where}; "
                f"use executor='serial' or 'threads'"
            )
        if len(tasks) < 2:
            return [task() for task in tasks]
        current = torch.cuda.current_stream(device)
        pool = self._streams.setdefault(device, [])
        while len(pool) < len(tasks):
            pool.append(torch.cuda.Stream(device))
        results = []
        for task, stream in zip(tasks, pool, strict=False):
            stream.wait_stream(current)
            with torch.cuda.stream(stream):
                results.append(task())
        for stream in pool[: len(tasks)]:
            current.wait_stream(stream)
        return results

    def __getstate__(self) -> dict:
        return {"_streams": {}}

    def __repr__(self) -> str:
        return "StreamsExecutor()"


EXECUTORS: Registry[Executor] = Registry("executor")
EXECUTORS.register("serial")(SerialExecutor)
EXECUTORS.register("threads")(ThreadsExecutor)
EXECUTORS.register("streams")(StreamsExecutor)


def build_executor(executor: str | Executor) -> Executor:
    """An executor by registry name, or ``executor`` itself if it already is one."""
    if isinstance(executor, str):
        return EXECUTORS.build(executor)
    if not callable(getattr(executor, "run", None)):
        raise TypeError(
            f"executor must be a name ({', '.join(EXECUTORS.names())}) or an object with a "
            f"run(tasks, *, device) method, got {executor!r}"
        )
    return executor
