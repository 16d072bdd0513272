"""Mini-batches of a :class:`Split`, in stored or shuffled order."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from reclra.data.datasets import Split, _as_int

__all__ = ["iterate_minibatches"]


def iterate_minibatches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` mini-batches covering ``split`` once; the last batch may be smaller.

    Args:
        split: the data.
        batch_size: examples per batch (>= 1).
        shuffle: visit the examples in the order ``torch.randperm(len(split), generator=...)``
            instead of their stored order.
        generator: CPU random generator for the shuffle (None: torch's global generator).
        device: move each batch there (None: leave it where the split is).
    """
    batch_size = _as_int(batch_size, "batch_size")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(split)
    order = torch.randperm(n, generator=generator).to(split.x.device) if shuffle else None
    for start in range(0, n, batch_size):
        if order is None:
            xb = split.x[start : start + batch_size]
            yb = split.y[start : start + batch_size]
        else:
            idx = order[start : start + batch_size]
            xb, yb = split.x[idx], split.y[idx]
        if device is not None:
            xb, yb = xb.to(device), yb.to(device)
        yield xb, yb
