"""The project's error base: every error a user can fix (a bad file or value, an unknown name, a
run that does not fit the request) is a :class:`CiderError`. The CLI prints exactly these as one
``error:`` line with exit code 2; anything else is a bug and keeps its traceback."""

from __future__ import annotations


class CiderError(ValueError):
    """A condition the user can fix; the message names the file, field and expectation."""


class ConfigError(CiderError):
    """A setting has an unknown name, a wrong type or a value out of range."""
