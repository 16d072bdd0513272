"""reclra — training neural networks without backpropagation.

Recursive local representation alignment (rec-LRA), LRA, and the standard baselines (backprop,
feedback alignment, direct feedback alignment) with one interface: a rule writes update
directions into ``.grad`` and a stock ``torch.optim`` optimizer applies them.

Submodules load on first use (``reclra.rules``, ``reclra.data``, …), so importing a core module
(``reclra.pathway``, ``reclra.walk``, …) loads no rule, model, trainer or CLI.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = (
    "activations",
    "analysis",
    "bench",
    "config",
    "convert",
    "data",
    "diagnostics",
    "errors",
    "executors",
    "functional",
    "layers",
    "models",
    "network",
    "ops",
    "pathway",
    "provenance",
    "registry",
    "rules",
    "schedules",
    "sweep",
    "synapses",
    "train",
    "walk",
)
#: public names re-exported at the top level, by the module that defines them
_NAMES = {"from_module": "convert", "fit": "train", "LayeredNet": "network"}

__all__ = [*_SUBMODULES, *_NAMES, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"reclra.{name}")
    if name in _NAMES:
        return getattr(importlib.import_module(f"reclra.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'reclra' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
