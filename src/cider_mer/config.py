"""Every setting of a training run, in one dataclass stored in ``config.json`` of each run.

This module imports without torch; building a config resolves the backbone's config dataclass
through the model registry (which does import torch).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from cider_mer.data.labels import check_task
from cider_mer.errors import ConfigError

HEADS = ("mcm", "linear")
PRECISIONS = ("fp32", "bf16")
DATA_PLACEMENTS = ("auto", "always", "never")


@dataclass
class TrainConfig:
    """Settings of one run. Defaults are the paper's fixed settings (Table II, reference code).

    ``model_config`` is the backbone's own typed config (e.g. :class:`~cider_mer.models.cider.CiderConfig`);
    a dict or ``None`` given here is turned into it. ``mssd=None`` means the backbone's recipe:
    MSSD for CIDer, the model's own published objective (one step on incomplete inputs plus its
    auxiliary terms) for the baselines.
    """

    task: str = "binary"
    model: str = "cider"
    model_config: Any = None  # the backbone's config dataclass
    # MACI: the MCM head (else a plain linear head) and counterfactual text at evaluation.
    head: str = "mcm"
    counterfactual: bool = True
    cf_vocab_size: int = 100
    cf_cv_threshold: float = 0.1
    # Text encoder: None = the shipped all-MiniLM-L6-v2; a local directory or a hub id otherwise.
    text_encoder: Optional[str] = None
    freeze_text_encoder: bool = False
    encoder_precision: str = "fp32"  # "bf16": the text encoder under bf16 autocast (CPU or GPU)
    # Optimisation (Adam; encoder parameters get their own lr and weight decay).
    epochs: int = 200
    patience: int = 10
    batch_size: int = 128
    eval_batch_size: int = 256
    lr: float = 1e-3
    encoder_lr: float = 5e-5
    encoder_weight_decay: float = 1e-3
    # MSSD: the complete-data stage and the three distillation terms.
    mssd: Optional[bool] = None  # None: the backbone's recipe (BackboneSpec.mssd_default)
    recon_weight: float = 0.6
    attn_weight: float = 0.1
    joint_weight: float = 0.5
    train_missing: str = "per_sample"  # or "per_position" (the authors' code: p = 0.5)
    # Speed option: batches of similar text length (each batch is cut to its longest text on CPU).
    length_buckets: bool = False
    seed: int = 1111
    device: str = "auto"
    # Where the splits' frames live: "auto" (resident when they fit, see cider_mer.batches), "always"
    # (held whole on the device) or "never" (each batch gathered from host/memory-mapped arrays).
    data_on_device: str = "auto"
    precision: str = "fp32"
    compile: bool = False

    def __post_init__(self) -> None:
        try:
            check_task(self.task)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        from cider_mer.missing import TRAIN_SCHEMES
        from cider_mer.models.registry import get_spec, make_config

        self.model_config = make_config(self.model, self.model_config)
        if self.mssd is None:
            self.mssd = get_spec(self.model).mssd_default
        if self.task == "regression" and (self.head == "mcm" or self.counterfactual):
            raise ConfigError("MACI needs classes: with task 'regression' use head 'linear' and counterfactual "
                              "false (--no-maci)")
        if self.head not in HEADS:
            raise ConfigError(f"head must be one of {HEADS}, got '{self.head}'")
        if self.data_on_device not in DATA_PLACEMENTS:
            raise ConfigError(f"data_on_device must be one of {DATA_PLACEMENTS}, got '{self.data_on_device}'")
        if self.train_missing not in TRAIN_SCHEMES:
            raise ConfigError(f"train_missing must be one of {TRAIN_SCHEMES}, got '{self.train_missing}'")
        for name in ("precision", "encoder_precision"):
            if getattr(self, name) not in PRECISIONS:
                raise ConfigError(f"{name} must be one of {PRECISIONS}, got '{getattr(self, name)}'")
        for name in ("recon_weight", "attn_weight", "joint_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0")
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ConfigError("epochs, batch_size and patience must be >= 1")

    @property
    def distillation_weights(self) -> dict[str, float]:
        """Weights of the MSSD terms that are on (all off without MSSD)."""
        if not self.mssd:
            return {}
        w = {"recon": self.recon_weight, "attn": self.attn_weight, "joint": self.joint_weight}
        return {k: v for k, v in w.items() if v > 0}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready settings (``model_config`` as a dict)."""
        return dataclasses.asdict(self)

    def with_overrides(self, **changes: Any) -> "TrainConfig":
        """A new config with ``changes`` applied; ``None`` values mean "not given" and are skipped.

        ``model_config`` may be a dict, merged key by key into the current backbone settings. When
        ``model`` changes, the backbone settings and ``mssd`` restart from the new model's defaults
        (unless given too). Unknown names are refused.
        """
        changes = {k: v for k, v in changes.items() if v is not None}
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(f"unknown setting(s) {unknown}; known: {sorted(known)}")
        values = self.to_dict()
        model_changes = changes.pop("model_config", {})
        if "model" in changes and changes["model"] != self.model:
            values["model_config"] = {}
            values["mssd"] = None  # the new backbone's own recipe
        if dataclasses.is_dataclass(model_changes):
            model_changes = dataclasses.asdict(model_changes)
        values.update(changes)
        values["model_config"] = {**values["model_config"], **model_changes}
        return TrainConfig.from_dict(values)

    def differences(self, other: "TrainConfig") -> dict[str, tuple[Any, Any]]:
        """Settings that differ from ``other`` (backbone settings reported as ``model_config.KEY``)."""
        flat = lambda c: {**{k: v for k, v in c.to_dict().items() if k != "model_config"},  # noqa: E731
                          **{f"model_config.{k}": v for k, v in dataclasses.asdict(c.model_config).items()}}
        a, b = flat(self), flat(other)
        return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown setting(s) {unknown}; known: {sorted(known)}")
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> "TrainConfig":
        """Read a JSON config: a flat TrainConfig dict, or a run's config.json (its "train" entry)."""
        with open(path, encoding="utf-8") as f:
            try:
                values = json.load(f)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
        if isinstance(values, dict) and "train" in values and isinstance(values["train"], dict):
            values = values["train"]
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a JSON object of settings")
        return cls.from_dict(values, source=str(path))


def compose_config(config_file: Optional[str | Path] = None, default: Optional[TrainConfig] = None,
                   **overrides: Any) -> TrainConfig:
    """Settings from a JSON file (else ``default``, else the paper's defaults) with ``overrides``
    applied (``None`` = not given; ``model_config`` merged key by key)."""
    base = TrainConfig.from_file(config_file) if config_file else (default or TrainConfig())
    return base.with_overrides(**overrides)
