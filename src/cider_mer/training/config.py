"""Every setting of a training run, in one dataclass stored in ``config.json`` of each run."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from cider_mer.data.labels import check_task
from cider_mer.missing import TRAIN_SCHEMES

HEADS = ("mcm", "linear")
PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainConfig:
    """Settings of one run. Defaults are the paper's fixed settings (Table II, reference code)."""

    task: str = "binary"
    model: str = "cider"
    model_config: dict[str, Any] = field(default_factory=dict)  # the backbone's own settings
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
    mssd: bool = True
    recon_weight: float = 0.6
    attn_weight: float = 0.1
    joint_weight: float = 0.5
    train_missing: str = "per_sample"  # or "per_position" (the authors' code: p = 0.5)
    # Speed option: batches of similar text length (each batch is cut to its longest text on CPU).
    length_buckets: bool = False
    seed: int = 1111
    device: str = "auto"
    precision: str = "fp32"
    compile: bool = False

    def __post_init__(self) -> None:
        check_task(self.task)
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got '{self.head}'")
        if self.train_missing not in TRAIN_SCHEMES:
            raise ValueError(f"train_missing must be one of {TRAIN_SCHEMES}, got '{self.train_missing}'")
        for name in ("precision", "encoder_precision"):
            if getattr(self, name) not in PRECISIONS:
                raise ValueError(f"{name} must be one of {PRECISIONS}, got '{getattr(self, name)}'")
        for name in ("recon_weight", "attn_weight", "joint_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ValueError("epochs, batch_size and patience must be >= 1")

    @property
    def maci(self) -> bool:
        return self.head == "mcm" or self.counterfactual

    @property
    def distillation_weights(self) -> dict[str, float]:
        """Weights of the MSSD terms that are on (all off without MSSD)."""
        if not self.mssd:
            return {}
        w = {"recon": self.recon_weight, "attn": self.attn_weight, "joint": self.joint_weight}
        return {k: v for k, v in w.items() if v > 0}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown setting(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> "TrainConfig":
        """Read a JSON config: a flat TrainConfig dict, or a run's config.json (its "train" entry)."""
        with open(path, encoding="utf-8") as f:
            try:
                values = json.load(f)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: not valid JSON ({exc})") from exc
        if isinstance(values, dict) and "train" in values and isinstance(values["train"], dict):
            values = values["train"]
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a JSON object of settings")
        return cls.from_dict(values, source=str(path))
