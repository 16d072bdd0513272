"""Name → builder registries (models, rules) with option checking that names what is wrong."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """A registry of builders filled by decorator (``@MODELS.register("mlp")``).

    :meth:`build` checks the option names against the builder's keyword arguments, so a typo in a
    config reaches the user as one clear ``ValueError`` instead of a ``TypeError`` deep inside.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, Callable[..., T]] = {}
        self._fixed: dict[str, dict[str, Any]] = {}

    def register(self, *names: str, **fixed: Any) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Register a builder under ``names``; ``fixed`` options are set by the name itself
        (``RULES.register("lra-diff", mode="diff")(LRA)``) and refused if given again."""

        def deco(builder: Callable[..., T]) -> Callable[..., T]:
            known = self._signature(builder)
            for option in fixed:
                if option not in known:
                    raise ValueError(f"{builder.__name__} has no option {option!r} to fix")
            for name in names:
                if name in self._builders:
                    raise ValueError(f"{self.kind} {name!r} is already registered")
                self._builders[name] = builder
                self._fixed[name] = dict(fixed)
            return builder

        return deco

    def names(self) -> list[str]:
        return list(self._builders)

    def __contains__(self, name: object) -> bool:
        return name in self._builders

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._builders[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.kind} {name!r}; choose from {', '.join(self.names())}"
            ) from None

    @staticmethod
    def _signature(builder: Callable[..., Any]) -> dict[str, Any]:
        return {
            p.name: p.default
            for p in inspect.signature(builder).parameters.values()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        }

    def options(self, name: str) -> dict[str, Any]:
        """Keyword options of a builder and their defaults (``Parameter.empty`` if none); the
        options the name fixes are not among them."""
        fixed = self._fixed.get(name, {})
        return {k: v for k, v in self._signature(self.get(name)).items() if k not in fixed}

    def build(self, name: str, *args: Any, **options: Any) -> T:
        builder = self.get(name)
        known = self.options(name)
        fixed = self._fixed[name]
        clash = sorted(set(options) & set(fixed))
        if clash:
            raise ValueError(
                f"{self.kind} {name!r} fixes "
                + ", ".join(f"{k}={fixed[k]!r}" for k in clash)
                + "; do not pass it"
            )
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(
                f"unknown option(s) {', '.join(unknown)} for {self.kind} {name!r}; "
                f"it takes {', '.join(k for k in known if k not in ('net', 'self'))}"
            )
        return builder(*args, **fixed, **options)
