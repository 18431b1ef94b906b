"""Parsers of command-line values shared by several commands."""

from __future__ import annotations

import shlex

import typer


def parse_rates(text: str) -> list[float]:
    """``"0:1:0.1"`` (start:stop:step, inclusive) or ``"0,0.3,0.5"``."""
    import numpy as np

    try:
        if ":" in text:
            start, stop, step = (float(x) for x in text.split(":"))
            if step <= 0:
                raise ValueError
            return [round(float(x), 4) for x in np.arange(start, stop + step / 2, step)]
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"rates must look like 0:1:0.1 or 0,0.3,0.5, got '{text}'") from None


def parse_seeds(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"seeds must be comma-separated integers, got '{text}'") from None


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
