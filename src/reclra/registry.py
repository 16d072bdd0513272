"""Name → builder registries (models, rules) with option checking that names what is wrong."""

from __future__ import annotations

import collections.abc
import inspect
import math
import types
import typing
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from reclra.errors import ConfigError

__all__ = ["Registry", "describe_type", "matches_type"]

T = TypeVar("T")

_SEQUENCES = (list, tuple, collections.abc.Sequence)


def matches_type(value: Any, hint: Any) -> bool:
    """Whether ``value`` (plain data, as read from YAML) fits the annotation ``hint``.

    Understood: ``bool``, ``int`` (not bool), ``float`` (finite; ints too), ``str``, ``None``,
    ``Literal``, unions, ``Sequence[X]``/``list[X]``/``tuple[X, ...]``/``tuple[X, Y]``,
    ``Mapping``; any other class by ``isinstance``; anything else (``Any``, ``Callable``…) fits.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is None or hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(matches_type(value, a) for a in args)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return number and math.isfinite(value)
    if origin in _SEQUENCES or hint in _SEQUENCES:
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(matches_type, value, args))
        return not args or all(matches_type(v, args[0]) for v in value)
    if origin in (dict, collections.abc.Mapping) or hint in (dict, collections.abc.Mapping):
        return isinstance(value, collections.abc.Mapping)
    if isinstance(hint, type) and origin is None:
        try:
            return isinstance(value, hint)
        except TypeError:  # a Protocol that is not runtime-checkable
            return True
    return True


def describe_type(hint: Any) -> str:
    """``hint`` in words, for a message (``a finite number``, ``a list of integers`` …)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is None or hint is type(None):
        return "null"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(describe_type(a) for a in args))
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    words = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}
    if hint in words:
        return words[hint]
    if origin in _SEQUENCES or hint in _SEQUENCES:
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} values"
        if not args:
            return "a list"
        item = describe_type(args[0])
        return "a list of " + item.removeprefix("an ").removeprefix("a ").replace(
            "integer", "integers"
        ).replace("number", "numbers").replace("string", "strings")
    if origin in (dict, collections.abc.Mapping) or hint in (dict, collections.abc.Mapping):
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


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
            raise ConfigError(
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

    @staticmethod
    def _hints(builder: Callable[..., Any]) -> dict[str, Any]:
        """The builder's resolved annotations (none where they cannot be resolved)."""
        target = builder.__init__ if isinstance(builder, type) else builder  # type: ignore[misc]
        try:
            return typing.get_type_hints(target)
        except (NameError, TypeError):  # an annotation only importable under TYPE_CHECKING
            return {}

    def check(self, name: str, options: dict[str, Any]) -> None:
        """Refuse unknown option names and values that do not fit the builder's annotations
        (a string for a number, a non-finite float, a list for a name …), before anything is
        built.

        Raises:
            ConfigError: naming ``kind.option``, what it must be, and the value given.
        """
        builder = self.get(name)
        known = self.options(name)
        fixed = self._fixed[name]
        clash = sorted(set(options) & set(fixed))
        if clash:
            raise ConfigError(
                f"{self.kind} {name!r} fixes "
                + ", ".join(f"{k}={fixed[k]!r}" for k in clash)
                + "; do not pass it"
            )
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ConfigError(
                f"unknown option(s) {', '.join(unknown)} for {self.kind} {name!r}; "
                f"it takes {', '.join(k for k in known if k not in ('net', 'self'))}"
            )
        hints = self._hints(builder)
        for key, value in options.items():
            if key in hints and not matches_type(value, hints[key]):
                raise ConfigError(
                    f"{self.kind}.{key} must be {describe_type(hints[key])}, got {value!r} "
                    f"({self.kind} {name!r})"
                )

    def build(self, name: str, *args: Any, **options: Any) -> T:
        """Build ``name`` with ``options`` (checked first, see :meth:`check`)."""
        self.check(name, options)
        return self.get(name)(*args, **self._fixed[name], **options)
