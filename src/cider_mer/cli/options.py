"""Parsers and checks of command-line values shared by several commands.

A bad value is an :class:`OptionError` naming the option: the CLI prints it as one ``error:`` line
with exit code 2, before any work starts.
"""

from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import Any, Optional

from cider_mer.errors import CiderError

MAX_POINTS = 1001  # missing rates per evaluation (0:1:0.001 is the finest grid that makes sense)
SEED_LIMIT = 2 ** 32  # seeds valid for numpy and torch generators alike


class OptionError(CiderError):
    """A command-line value is malformed or out of range."""


def parse_rates(text: str, option: str = "--rates",
                per_modality: bool = False) -> list[float] | list[tuple[float, float, float]]:
    """``"0:1:0.1"`` (start:stop:step, inclusive) or ``"0,0.3,0.5"``: distinct finite rates in [0, 1],
    at most :data:`MAX_POINTS`. With ``per_modality``, also ``"0.1/0.5/0.7,0.2/0.6/0.8"``: one
    (text, audio, vision) triple per evaluation point."""
    import numpy as np

    if "/" in text:
        if not per_modality:
            raise OptionError(f"{option}: per-modality rates (text/audio/vision) are not accepted here, got '{text}'")
        points = [_modality_rates(part, text, option) for part in text.split(",") if part.strip()]
        if not points or len(points) > MAX_POINTS:
            raise OptionError(f"{option}: expected 1 to {MAX_POINTS} text/audio/vision triples, got '{text}'")
        _refuse_repeats(option, points)
        return points
    form = f"{option} must look like 0:1:0.1 (start:stop:step) or 0,0.3,0.5"
    try:
        numbers = [float(x) for x in text.split(":" if ":" in text else ",") if x.strip()]
    except ValueError:
        raise OptionError(f"{form}, got '{text}'") from None
    if ":" in text:
        if len(numbers) != 3 or not all(math.isfinite(v) for v in numbers) or numbers[2] <= 0:
            raise OptionError(f"{form} (finite numbers, a positive step), got '{text}'")
        start, stop, step = numbers
        count = math.floor((stop - start) / step + 0.5) + 1
        if count > MAX_POINTS:
            raise OptionError(f"{option} '{text}' gives {count:,} rates; at most {MAX_POINTS} are allowed")
        numbers = [round(float(x), 4) for x in np.arange(start, stop + step / 2, step)]
    if not numbers:
        raise OptionError(f"{form}, got no rate in '{text}'")
    if len(numbers) > MAX_POINTS:
        raise OptionError(f"{option} lists {len(numbers):,} rates; at most {MAX_POINTS} are allowed")
    for r in numbers:
        if not 0.0 <= r <= 1.0:  # also refuses NaN
            raise OptionError(f"{option}: every rate must be in [0, 1], got {r}")
    _refuse_repeats(option, numbers)
    return numbers


def _modality_rates(part: str, text: str, option: str) -> tuple[float, float, float]:
    """One ``t/a/v`` point: three finite rates, each in [0, 1]."""
    pieces = part.strip().split("/")
    try:
        rates = tuple(float(x) for x in pieces)
    except ValueError:
        rates = ()
    if len(pieces) != 3 or len(rates) != 3:
        raise OptionError(f"{option}: per-modality rates must be text/audio/vision triples such as 0.1/0.5/0.7, "
                          f"one per point and every point a triple; got '{part.strip()}' in '{text}'")
    bad = [r for r in rates if not 0.0 <= r <= 1.0]  # also refuses NaN
    if bad:
        raise OptionError(f"{option}: missing rates must be in [0, 1], got {bad[0]} in '{part.strip()}'")
    return rates  # type: ignore[return-value]


def parse_seeds(text: str, option: str = "--seeds") -> list[int]:
    """``"0,1,2"``: distinct integer seeds in [0, 2**32)."""
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise OptionError(f"{option} must be comma-separated integers, got '{text}'") from None
    if not seeds:
        raise OptionError(f"{option} must list at least one seed, got '{text}'")
    for s in seeds:
        if not 0 <= s < SEED_LIMIT:
            raise OptionError(f"{option}: every seed must be in [0, 2**32), got {s}")
    _refuse_repeats(option, seeds)
    return seeds


def _refuse_repeats(option: str, values: list) -> None:
    seen = set()
    for v in values:
        if v in seen:
            raise OptionError(f"{option}: {v} is given twice; each value may appear once")
        seen.add(v)


def at_least(value: Any, minimum: float, option: str) -> Any:
    """``value`` (None passes: not given) when it is a finite number >= ``minimum``."""
    if value is not None and not (math.isfinite(value) and value >= minimum):
        raise OptionError(f"{option} must be >= {minimum}, got {value}")
    return value


def above(value: Any, bound: float, option: str) -> Any:
    """``value`` (None passes: not given) when it is a finite number > ``bound``."""
    if value is not None and not (math.isfinite(value) and value > bound):
        raise OptionError(f"{option} must be > {bound}, got {value}")
    return value


def settings_from_options(config_file: Optional[Path], default: Any = None, **overrides: Any):
    """:func:`~cider_mer.config.compose_config` for a command: a setting given as an option that
    fails its check is reported under the option's name (``model_config`` entries by their own
    name: ``--layers``)."""
    from cider_mer.config import compose_config
    from cider_mer.validation import SettingError, show_value

    try:
        return compose_config(config_file, default, **overrides)
    except SettingError as exc:
        nested = exc.name.split(".", 1)
        given = (overrides.get("model_config") or {}).get(nested[1]) if len(nested) == 2 else overrides.get(exc.name)
        if given is None or given != exc.value:
            raise
        raise OptionError(f"--{nested[-1].replace('_', '-')} must be {exc.expected}, got {show_value(exc.value)}") \
            from None


def command_line(words: str, opts: dict[str, object]) -> str:
    """The command as it takes effect, for reports: ``words`` (e.g. "cider ablate") and every option
    given, in a fixed order, shell-quoted. Flags: True adds the flag; for ``--freeze-text-encoder``
    False writes ``--finetune-text-encoder``."""
    parts = words.split()
    for flag, value in opts.items():
        if value is None:
            continue
        if isinstance(value, bool):
            if flag == "--freeze-text-encoder":
                parts.append("--freeze-text-encoder" if value else "--finetune-text-encoder")
            elif value:
                parts.append(flag)
            continue
        parts += [flag, shlex.quote(str(value))]
    return " ".join(parts)
