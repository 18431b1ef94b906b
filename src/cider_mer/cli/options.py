"""Parsers of command-line values shared by several commands."""

from __future__ import annotations

import typer


def parse_rates(text: str, per_modality: bool = False) -> list[float] | list[tuple[float, float, float]]:
    """``"0:1:0.1"`` (start:stop:step, inclusive) or ``"0,0.3,0.5"``; with ``per_modality``, also
    ``"0.1/0.5/0.7,0.2/0.6/0.8"``: one (text, audio, vision) triple per evaluation point."""
    import numpy as np

    if "/" in text:
        if not per_modality:
            raise typer.BadParameter(f"per-modality rates (text/audio/vision) are not accepted here, got '{text}'")
        return [_modality_rates(part, text) for part in text.split(",") if part.strip()]
    try:
        if ":" in text:
            start, stop, step = (float(x) for x in text.split(":"))
            if step <= 0:
                raise ValueError
            return [round(float(x), 4) for x in np.arange(start, stop + step / 2, step)]
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"rates must look like 0:1:0.1 or 0,0.3,0.5, got '{text}'") from None


def _modality_rates(part: str, text: str) -> tuple[float, float, float]:
    """One ``t/a/v`` point: three rates, each in [0, 1]."""
    pieces = part.strip().split("/")
    try:
        rates = tuple(float(x) for x in pieces)
    except ValueError:
        rates = ()
    if len(pieces) != 3 or len(rates) != 3:
        raise typer.BadParameter(f"per-modality rates must be text/audio/vision triples such as 0.1/0.5/0.7, "
                                 f"one per point and every point a triple; got '{part.strip()}' in '{text}'")
    bad = [r for r in rates if not 0.0 <= r <= 1.0]
    if bad:
        raise typer.BadParameter(f"missing rates must be in [0, 1], got {bad[0]} in '{part.strip()}'")
    return rates  # type: ignore[return-value]


def parse_seeds(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"seeds must be comma-separated integers, got '{text}'") from None
