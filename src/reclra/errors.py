"""The library's own error types: what a user can fix (bad input), apart from library bugs.

Every error of bad input — a config, an option, a data file, a checkpoint, a run folder, a
diverging run — is a :class:`ReclraError`; the CLI reports it as one line with exit code 2
(``--debug``: with its traceback). Anything else that escapes is a bug in reclra and is reported
as one, with its traceback. They subclass ``ValueError``, so code that caught ``ValueError``
still does.
"""

from __future__ import annotations

__all__ = ["ConfigError", "ReclraError"]


class ReclraError(ValueError):
    """Bad input or a failed run that the user can fix; the message says what to do."""


class ConfigError(ReclraError):
    """A configuration is malformed: unknown section, key or name, bad value, unreadable file."""
