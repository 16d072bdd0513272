"""Run analysis as pure functions: per-class precision/recall/F1 and learning-curve figures.

The figures are drawn on a :class:`matplotlib.figure.Figure` with the Agg canvas, without pyplot,
so nothing here touches matplotlib's global backend or keeps figures alive.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "ERROR_CURVES",
    "classification_report",
    "plot_bands",
    "plot_comparison",
    "plot_learning_curves",
]

#: The per-epoch metrics drawn by :func:`plot_learning_curves`, with their legend labels.
ERROR_CURVES = {"train_error": "train", "val_error": "validation", "test_error": "test"}


def classification_report(y_true: Any, y_pred: Any, num_classes: int) -> dict[str, Any]:
    """Confusion matrix and per-class and macro precision, recall and F1 (scikit-learn).

    Args:
        y_true, y_pred: class indices (arrays, lists or CPU tensors) of the same length.
        num_classes: classes are ``0 … num_classes − 1``; absent classes get zero support and
            zero scores (no warning).

    Returns:
        ``{"accuracy", "confusion_matrix" (rows: true class, columns: predicted),
        "per_class": [{"class", "precision", "recall", "f1", "support"}, …],
        "macro": {"precision", "recall", "f1"}}``, plain Python numbers only.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    y_true = np.asarray(y_true).reshape(-1)
    y_pred = np.asarray(y_pred).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} labels but y_pred has {y_pred.size}")
    labels = list(range(num_classes))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    per_class = [
        {
            "class": c,
            "precision": float(precision[c]),
            "recall": float(recall[c]),
            "f1": float(f1[c]),
            "support": int(support[c]),
        }
        for c in labels
    ]
    return {
        "accuracy": float((y_true == y_pred).mean()) if y_true.size else None,
        "confusion_matrix": matrix.tolist(),
        "per_class": per_class,
        "macro": {
            "precision": float(np.mean(precision)),
            "recall": float(np.mean(recall)),
            "f1": float(np.mean(f1)),
        },
    }


def _new_axes(title: str | None):
    """A fresh Agg-backed figure and its axes (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (%)")
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    return fig, ax


def _curve(metrics: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """Epochs and values of ``key``, skipping epochs where it is missing or null."""
    points = [(m["epoch"], m[key]) for m in metrics if m.get(key) is not None]
    return [e for e, _ in points], [v for _, v in points]


def plot_learning_curves(
    metrics: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], title: str | None = None
) -> None:
    """Draw train/validation/test error (%) against epoch into the PNG ``path``.

    ``metrics`` are the per-epoch records of a run (as in ``metrics.jsonl``).
    """
    _draw([(label, metrics, key) for key, label in ERROR_CURVES.items()], path, title)


def plot_comparison(
    runs: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | os.PathLike[str],
    *,
    key: str = "test_error",
    title: str | None = None,
) -> None:
    """Draw ``key`` (default test error, %) against epoch for several runs on one figure.

    Args:
        runs: per-epoch metrics of each run, by run name (e.g. the rule).
        path: the PNG to write.
        key: the per-epoch metric to draw.
        title: figure title (default: the metric name).
    """
    curves = [(name, metrics, key) for name, metrics in runs.items()]
    _draw(curves, path, title or key.replace("_", " "))


def _draw(
    curves: Sequence[tuple[str, Sequence[Mapping[str, Any]], str]],
    path: str | os.PathLike[str],
    title: str | None,
) -> None:
    """One labelled line per ``(label, metrics, key)`` (metric ``key`` against epoch), as PNG."""
    fig, ax = _new_axes(title)
    for label, metrics, key in curves:
        epochs, values = _curve(metrics, key)
        if epochs:
            ax.plot(epochs, values, marker="o", markersize=3, label=label)
    ax.legend()
    fig.savefig(path, format="png", dpi=120)


def plot_bands(
    runs: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]],
    path: str | os.PathLike[str],
    *,
    key: str = "test_error",
    title: str | None = None,
) -> None:
    """Draw, per group of runs (e.g. a variant over seeds), the mean of ``key`` against epoch
    and a band from its min to its max over the runs, into the PNG ``path``.

    Args:
        runs: by group name, the per-epoch metrics of each run of the group. At an epoch, the
            band covers the runs that reached it (runs stopped early end sooner).
    """
    fig, ax = _new_axes(title or key.replace("_", " "))
    for label, group in runs.items():
        by_epoch: dict[int, list[float]] = {}
        for metrics in group:
            for epoch, value in zip(*_curve(metrics, key), strict=True):
                by_epoch.setdefault(epoch, []).append(value)
        epochs = sorted(by_epoch)
        if not epochs:
            continue
        values = [np.asarray(by_epoch[e]) for e in epochs]
        (line,) = ax.plot(epochs, [v.mean() for v in values], marker="o", markersize=3, label=label)
        ax.fill_between(
            epochs, [v.min() for v in values], [v.max() for v in values],
            color=line.get_color(), alpha=0.2, linewidth=0,
        )  # fmt: skip
    ax.legend()
    fig.savefig(path, format="png", dpi=120)
