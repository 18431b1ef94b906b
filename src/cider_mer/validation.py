"""Type and range checks of settings dataclasses (``TrainConfig``, each backbone's config, ``DataShapes``).

The classes stay plain stdlib dataclasses. Each one calls :func:`validate_fields` in its
``__post_init__``; that checks every field against

- its **annotation**, strictly (pydantic, strict mode): ``"no"`` is not a bool, ``1.5`` or ``true``
  not an int, ``null`` only where the annotation is ``Optional``; an int is accepted for a float
  field (and stored as a float); floats must be finite. A new field is checked from its annotation
  without further code;
- its class's **ranges**, declared in ONE place: a class attribute ``RANGES: ClassVar[dict[str,
  Range]]`` mapping field names to a :class:`Range` (bounds, allowed values or a pattern). A field
  that is ``None`` (where allowed) skips its range.

Checks that involve two fields (heads must divide a width, ...) stay in the class's ``__post_init__``.
A failure raises :class:`SettingError`, a :class:`~cider_mer.errors.ConfigError` naming the field,
the expectation and the value given. This module imports without torch.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Iterable, Optional

from cider_mer.errors import ConfigError


class SettingError(ConfigError):
    """One setting has the wrong type or is out of its range."""

    def __init__(self, name: str, expected: str, value: Any):
        self.name, self.expected, self.value = name, expected, value
        super().__init__(f"{name} must be {expected}, got {show_value(value)}")

    def within(self, prefix: str) -> "SettingError":
        """The same error for a setting nested under ``prefix`` (e.g. ``model_config.hidden``)."""
        return SettingError(f"{prefix}.{self.name}", self.expected, self.value)


def show_value(value: Any) -> str:
    """A value as the user wrote it: JSON spelling where possible (``"no"``, ``null``, ``1.5``)."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 2 ** 53 else str(x)


@dataclass(frozen=True)
class Range:
    """The allowed values of one setting: bounds (``ge``/``le`` inclusive, ``gt``/``lt`` exclusive),
    a tuple of ``choices``, or a regular expression the whole string must match."""

    ge: Optional[float] = None
    gt: Optional[float] = None
    le: Optional[float] = None
    lt: Optional[float] = None
    choices: Optional[tuple[Any, ...]] = None
    pattern: Optional[str] = None
    label: Optional[str] = None  # how to say the range in messages, when the above reads poorly

    def admits(self, value: Any) -> bool:
        if self.choices is not None and value not in self.choices:
            return False
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            return False
        bounds = ((self.ge, lambda b: value >= b), (self.gt, lambda b: value > b),
                  (self.le, lambda b: value <= b), (self.lt, lambda b: value < b))
        return all(b is None or test(b) for b, test in bounds)

    def describe(self) -> str:
        """E.g. ``>= 1``, ``in [0, 1)``, ``one of "fp32", "bf16"``."""
        if self.label is not None:
            return self.label
        if self.choices is not None:
            return "one of " + ", ".join(show_value(c) for c in self.choices)
        if self.pattern is not None:
            return f"a string matching {self.pattern}"
        low = (f"[{_number(self.ge)}" if self.ge is not None else f"({_number(self.gt)}" if self.gt is not None
               else None)
        high = (f"{_number(self.le)}]" if self.le is not None else f"{_number(self.lt)})" if self.lt is not None
                else None)
        if low and high:
            return f"in {low}, {high}"
        if low:
            return (">= " if low[0] == "[" else "> ") + low[1:]
        if high:
            return ("<= " if high[-1] == "]" else "< ") + high[:-1]
        return "any value of its type"


AT_LEAST_1 = Range(ge=1)
NON_NEGATIVE = Range(ge=0)
POSITIVE = Range(gt=0)
FRACTION = Range(ge=0, lt=1)  # dropout probabilities
SEED = Range(ge=0, lt=2 ** 32)  # valid for numpy and torch generators alike
ANY_NUMBER = Range()  # a number without bounds (still finite and of its type)


def one_of(*choices: Any) -> Range:
    return Range(choices=tuple(choices))


def each(names: Iterable[str], rng: Range) -> dict[str, Range]:
    """``{name: rng}`` for several fields: ``RANGES = {**each(_DROPOUTS, FRACTION), ...}``."""
    return dict.fromkeys(names, rng)


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def describe_type(hint: Any) -> str:
    """How a JSON user reads an annotation: ``an integer``, ``a string or null``..."""
    if hint in _TYPE_WORDS:
        return _TYPE_WORDS[hint]
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        words = [describe_type(a) for a in args if a is not type(None)]
        return " or ".join(words + (["null"] if type(None) in args else []))
    if typing.get_origin(hint) is list:
        return "a list of " + {str: "strings", int: "integers", float: "numbers"}.get(args[0], str(args[0]))
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(show_value(a) for a in args)
    return getattr(hint, "__name__", str(hint))


@functools.lru_cache(maxsize=None)
def _checkers(cls: type) -> dict[str, tuple[Any, Any]]:
    """{field name: (annotation, pydantic TypeAdapter)} of a dataclass, built once per class."""
    from pydantic import ConfigDict, TypeAdapter

    hints = typing.get_type_hints(cls)
    config = ConfigDict(strict=True, allow_inf_nan=False)
    out = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        out[f.name] = (hint, None if hint is Any else TypeAdapter(hint, config=config))
    return out


def declared_ranges(cls: type) -> dict[str, Range]:
    """A class's ``RANGES``; refuses names that are not fields (a typo would silently check nothing)."""
    ranges = getattr(cls, "RANGES", {})
    unknown = sorted(set(ranges) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise TypeError(f"{cls.__name__}.RANGES names unknown field(s) {unknown}")
    return ranges


def validate_fields(obj: Any) -> None:
    """Check every field of dataclass instance ``obj`` against its annotation and its class's
    ``RANGES``; numbers are stored as their annotated type (an int given for a float becomes a
    float). Raises :class:`SettingError` for the first field that fails."""
    from pydantic import ValidationError

    cls = type(obj)
    ranges = declared_ranges(cls)
    for name, (hint, adapter) in _checkers(cls).items():
        given = value = getattr(obj, name)
        if adapter is not None:
            try:
                value = adapter.validate_python(given)
            except ValidationError:
                raise SettingError(name, describe_type(hint), given) from None
            if type(value) is not type(given):
                object.__setattr__(obj, name, value)  # also for frozen dataclasses
        rng = ranges.get(name)
        if rng is not None and value is not None and not rng.admits(value):
            raise SettingError(name, rng.describe(), given)


def check_divides(obj: Any, heads: str, width: str) -> None:
    """``obj.<heads>`` must divide ``obj.<width>`` (attention heads split a width evenly)."""
    h, w = getattr(obj, heads), getattr(obj, width)
    if w % h:
        raise ConfigError(f"{heads} ({h}) must divide {width} ({w})")

