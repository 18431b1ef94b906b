"""The search space of the paper's Table II (SPEC §8) and how a sampled point becomes a config."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from cider_mer.config import TrainConfig

MODEL, TRAIN = "model_config", "train"


@dataclass(frozen=True)
class Param:
    """One searched setting: where it goes (``model_config`` or a TrainConfig field) and its range.

    ``choices`` makes it categorical; otherwise it is an integer (``integer=True``) or a float on
    the grid ``low, low + step, ..., high``.
    """

    name: str
    target: str
    low: float = 0.0
    high: float = 0.0
    step: Optional[float] = None
    integer: bool = False
    choices: Optional[tuple[Any, ...]] = None

    def __post_init__(self) -> None:
        if self.target not in (MODEL, TRAIN):
            raise ValueError(f"parameter '{self.name}': target must be '{MODEL}' or '{TRAIN}'")
        if self.choices is None and self.high < self.low:
            raise ValueError(f"parameter '{self.name}': high < low")

    def suggest(self, trial: Any) -> Any:
        """Ask an Optuna trial for this parameter (fixed values of enqueued trials come back as is)."""
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1))
        return trial.suggest_float(self.name, self.low, self.high, step=self.step)

    def clean(self, value: Any) -> Any:
        """The value as it goes into a config: ints stay ints, grid floats lose float noise (0.30000000000000004)."""
        if self.choices is not None:
            return value
        if self.integer:
            return int(value)
        return round(float(value), 6)

    def size(self) -> float:
        """How many values it can take (inf for a continuous float)."""
        if self.choices is not None:
            return len(self.choices)
        if self.integer:
            return (int(self.high) - int(self.low)) // int(self.step or 1) + 1
        if not self.step:
            return math.inf
        return int(round((self.high - self.low) / self.step)) + 1

    def describe(self) -> dict[str, Any]:
        if self.choices is not None:
            return {"name": self.name, "target": self.target, "choices": list(self.choices)}
        return {"name": self.name, "target": self.target, "low": self.low, "high": self.high, "step": self.step,
                "integer": self.integer}


# Table II of the paper (the authors' main.py): 4 * 4 * 6**3 * 11**3 = 4,599,936 points.
TABLE_II: tuple[Param, ...] = (
    Param("layers", MODEL, 1, 4, integer=True),
    Param("heads", MODEL, choices=(1, 2, 4, 8)),
    Param("attn_dropout", MODEL, 0.0, 0.5, step=0.1),
    Param("embed_dropout", MODEL, 0.0, 0.5, step=0.1),
    Param("out_dropout", MODEL, 0.0, 0.5, step=0.1),
    Param("recon_weight", TRAIN, 0.0, 1.0, step=0.1),
    Param("attn_weight", TRAIN, 0.0, 1.0, step=0.1),
    Param("joint_weight", TRAIN, 0.0, 1.0, step=0.1),
)


def space_size(space: Sequence[Param]) -> float:
    """Number of distinct points (inf when some parameter is continuous)."""
    return math.prod(p.size() for p in space)


def clean_params(params: dict[str, Any], space: Sequence[Param] = TABLE_II) -> dict[str, Any]:
    """The searched values of ``params`` (an Optuna trial's), cleaned, in the space's order."""
    return {p.name: p.clean(params[p.name]) for p in space if p.name in params}


def params_key(params: dict[str, Any], space: Sequence[Param] = TABLE_II) -> Optional[tuple]:
    """A hashable identity of a full parameter set (None when some parameter is missing)."""
    if any(p.name not in params for p in space):
        return None
    cleaned = clean_params(params, space)
    return tuple((p.name, cleaned[p.name]) for p in space)


def apply_params(base: TrainConfig, params: dict[str, Any], space: Sequence[Param] = TABLE_II) -> TrainConfig:
    """``base`` with the sampled values set: model settings inside ``model_config``, the rest as fields."""
    cleaned = clean_params(params, space)
    model_values = {p.name: cleaned[p.name] for p in space if p.name in cleaned and p.target == MODEL}
    values = {p.name: cleaned[p.name] for p in space if p.name in cleaned and p.target != MODEL}
    return base.with_overrides(**values, model_config=model_values)
