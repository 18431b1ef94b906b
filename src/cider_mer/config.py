"""Every setting of a training run, in one dataclass stored in ``config.json`` of each run.

This module imports without torch; building a config resolves the backbone's config dataclass
through the model registry (which does import torch).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

from cider_mer.data.labels import TASKS, is_regression
from cider_mer.errors import CiderError, ConfigError
from cider_mer.validation import (
    AT_LEAST_1,
    NON_NEGATIVE,
    POSITIVE,
    SEED,
    Range,
    SettingError,
    each,
    one_of,
    validate_fields,
)

HEADS = ("mcm", "linear")
PRECISIONS = ("fp32", "bf16")
TRAIN_SCHEMES = ("per_sample", "per_position")  # how training draws missing positions (see cider_mer.missing)
DEVICE_PATTERN = r"auto|cpu|cuda(:[0-9]+)?"
DATA_PLACEMENTS = ("auto", "always", "never")  # where a split's arrays live (see cider_mer.batches)
# Debiasing options (docs/debiasing.md); the defaults are the paper's MACI ("maci_paper").
SELECTIONS = ("plain", "group_mean", "worst_group")
CF_FILLS = ("mask", "unk")
CF_OTHER_MODALITIES = ("keep", "absent")
DEBIAS_METHODS = ("none", "poe", "learned_mixin")


@dataclass
class TrainConfig:
    """Settings of one run. Defaults are the paper's fixed settings (Table II, reference code).

    ``model_config`` is the backbone's own typed config (e.g. :class:`~cider_mer.models.cider.CiderConfig`);
    a dict or ``None`` given here is turned into it. ``mssd=None`` means the backbone's recipe:
    MSSD for CIDer, the model's own published objective (one step on incomplete inputs plus its
    auxiliary terms) for the baselines; ``lr``, ``batch_size`` and ``grad_accumulation`` at ``None``
    its published learning rate, batch size and gradient accumulation.

    Every field is checked on construction against its annotation (strictly) and ``RANGES``, the
    one place that declares each setting's allowed values (see :mod:`cider_mer.validation`).
    """

    RANGES: ClassVar[dict[str, Range]] = {
        "task": one_of(*TASKS),
        "head": one_of(*HEADS),
        "cf_vocab_size": AT_LEAST_1,
        "cf_cv_threshold": NON_NEGATIVE,
        "encoder_precision": one_of(*PRECISIONS),
        **each(("epochs", "patience", "batch_size", "grad_accumulation", "eval_batch_size"), AT_LEAST_1),
        **each(("lr", "encoder_lr"), POSITIVE),
        **each(("encoder_weight_decay", "recon_weight", "attn_weight", "joint_weight"), NON_NEGATIVE),
        "train_missing": one_of(*TRAIN_SCHEMES),
        "seed": SEED,
        "device": Range(pattern=DEVICE_PATTERN, label="auto, cpu, cuda or cuda:N"),
        "precision": one_of(*PRECISIONS),
        "cf_fill": one_of(*CF_FILLS),
        "cf_other_modalities": one_of(*CF_OTHER_MODALITIES),
        "debias": one_of(*DEBIAS_METHODS),
        "debias_entropy_weight": NON_NEGATIVE,
        "selection": one_of(*SELECTIONS),
        "selection_min_group": AT_LEAST_1,
        "data_on_device": one_of(*DATA_PLACEMENTS),
    }

    task: str = "binary"
    model: str = "cider"
    model_config: Any = None  # the backbone's config dataclass
    # MACI: the MCM head (else a plain linear head) and counterfactual text at evaluation.
    head: str = "mcm"
    counterfactual: bool = True
    cf_vocab_size: int = 100
    cf_cv_threshold: float = 0.1
    # The bias vocabulary given as the words of a known confound (e.g. topic words) instead of the SPEC's
    # statistical rule above; their word-pieces serve the counterfactual, the bias branch and group selection.
    bias_words: Optional[list[str]] = None
    # A valid counterfactual (each off by default = the paper): bias words kept, other tokens [UNK] instead of
    # [MASK]; audio/vision missing (zeroed) in the counterfactual pass; its log-probs centred by their mean
    # over the training inputs.
    cf_fill: str = "mask"
    cf_other_modalities: str = "keep"
    cf_centre: bool = False
    # A trained bias branch on the bag of bias-vocabulary word-pieces, combined with the main head during
    # training (product of experts or learned-mixin, with an optional entropy penalty), dropped at test.
    debias: str = "none"
    debias_entropy_weight: float = 0.0
    # Validation criterion for the checkpoint, tau and tuning: the plain selection metric, or over the groups
    # a bias-only model gets right / wrong (their mean, or the worse one); plain below selection_min_group.
    selection: str = "plain"
    selection_min_group: int = 20
    # Text encoder: None = the shipped all-MiniLM-L6-v2; a local directory or a hub id otherwise.
    text_encoder: Optional[str] = None
    freeze_text_encoder: bool = False
    encoder_precision: str = "fp32"  # "bf16": the text encoder under bf16 autocast (CPU or GPU)
    # Optimisation (Adam; encoder parameters get their own lr and weight decay).
    epochs: int = 200
    patience: int = 10
    batch_size: Optional[int] = None  # None: the backbone's published batch (BackboneSpec.batch_default; CIDer 128)
    # Batches whose gradients are summed before one optimiser step (None: the backbone's published recipe,
    # e.g. DLF 10 batches of 16); only with the model's own objective (MSSD steps twice per batch).
    grad_accumulation: Optional[int] = None
    eval_batch_size: int = 256
    lr: Optional[float] = None  # None: the backbone's published lr (BackboneSpec.lr_default; CIDer 1e-3)
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
        from cider_mer.models.registry import get_spec, make_config

        validate_fields(self)
        try:
            self.model_config = make_config(self.model, self.model_config)
        except SettingError as exc:
            raise exc.within("model_config") from None
        spec = get_spec(self.model)
        if self.mssd is None:
            self.mssd = spec.mssd_default
        if self.lr is None:
            self.lr = spec.lr_default
        if self.batch_size is None:
            self.batch_size = spec.batch_default
        if self.grad_accumulation is None:
            self.grad_accumulation = spec.accumulation_default if not self.mssd else 1
        if self.mssd and self.grad_accumulation > 1:
            raise ConfigError(f"grad_accumulation must be 1 with MSSD (it steps twice per batch), got "
                              f"{self.grad_accumulation}; set mssd false to train with the model's own objective")
        first = getattr(self.model_config, "first_selectable_epoch", 1)  # after a stage that is never selected
        if self.epochs < first:
            raise ConfigError(f"epochs must be >= {first} for model '{self.model}' (its first {first - 1} epochs "
                              f"are a pre-training stage that is never selected), got {self.epochs}; raise epochs "
                              "or shorten the model's pre-training stage")
        if self.bias_words is not None and (not self.bias_words or any(not w.strip() for w in self.bias_words)):
            raise ConfigError(f"bias_words must be null or a non-empty list of non-blank words, got {self.bias_words}")
        if is_regression(self.task) and (self.head == "mcm" or self.counterfactual):
            raise ConfigError(f"MACI needs classes: with task '{self.task}' use head 'linear' and counterfactual "
                              "false (--no-maci)")
        if is_regression(self.task) and (self.debias != "none" or self.selection != "plain"):
            raise ConfigError(f"debias and group selection need classes: with task '{self.task}' use debias 'none' "
                              "and selection 'plain'")

    @property
    def needs_bias_vocabulary(self) -> bool:
        """Counterfactual text, the bias branch and group selection all read the bias vocabulary."""
        return self.counterfactual or self.debias != "none" or self.selection != "plain"

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
        ``model`` changes, the backbone settings, ``mssd``, ``lr``, ``batch_size`` and ``grad_accumulation``
        restart from the new model's defaults (unless given too); so does ``grad_accumulation`` when ``mssd``
        changes. Unknown names are refused.
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
            values["lr"] = None  # and its published learning rate, batch size and accumulation
            values["batch_size"] = None
            values["grad_accumulation"] = None
        if "mssd" in changes and changes["mssd"] != self.mssd:
            values["grad_accumulation"] = None  # the recipe of the new objective
        if dataclasses.is_dataclass(model_changes):
            model_changes = dataclasses.asdict(model_changes)
        values.update(changes)
        values["model_config"] = {**values["model_config"], **model_changes}
        return TrainConfig.from_dict(values, source=None)

    def differences(self, other: "TrainConfig") -> dict[str, tuple[Any, Any]]:
        """Settings that differ from ``other`` (backbone settings reported as ``model_config.KEY``)."""
        flat = lambda c: {**{k: v for k, v in c.to_dict().items() if k != "model_config"},  # noqa: E731
                          **{f"model_config.{k}": v for k, v in dataclasses.asdict(c.model_config).items()}}
        a, b = flat(self), flat(other)
        return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: Optional[str] = "config") -> "TrainConfig":
        """Settings from a dict; errors start with ``source`` (the file they came from), when given."""
        where = f"{source}: " if source else ""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{where}unknown setting(s) {unknown}; known: {sorted(known)}")
        if not source:
            return cls(**values)
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(f"{where}{exc}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> "TrainConfig":
        """Read a JSON config: a flat TrainConfig dict, or a run's config.json (its "train" entry)."""
        from cider_mer.io_utils import read_json

        try:
            values = read_json(path)
        except CiderError as exc:
            raise ConfigError(str(exc)) from None
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
