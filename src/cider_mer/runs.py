"""One home for a run: its directory layout, how it is created and loaded, and how the model is
rebuilt from it (as ``save_pretrained`` pairs with ``from_pretrained``).

A run directory holds:

- ``config.json``: every setting, the data shapes, the dataset's content key, its label convention
  and the task's class names, seed and versions;
- ``model.safetensors``: the model that scored best on the VALIDATION split;
- ``maci.json``: the bias vocabulary (when the run uses counterfactual text, a bias branch or group
  selection), the bias-only model of group selection, and the counterfactual centre of the
  selected checkpoint (``cf_centre``; label-free, from the training inputs);
- ``train_log.csv``: per-epoch losses and validation metrics;
- ``train.log``: what training printed, with a start and an end line per session (appended on resume);
- ``resume.safetensors``: the state after the last completed epoch (for ``--resume``);
- ``.cider.lock``: the lock of the process writing the run (see :mod:`cider_mer.locks`).

``config.json`` also records the ``cider`` command, the package version and git commit, and the
device of the latest training session (:func:`cider_mer.io_utils.run_record`). ``--resume`` may
change only :data:`RESUMABLE_SETTINGS` (:func:`check_same_run`).

``Run.create`` builds a new run from settings and data (train split only); ``Run.load`` (also
``cider_mer.load_run``) rebuilds a trained one for evaluation and prediction.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from cider_mer.batches import DeviceSplit
from cider_mer.checkpoint import load_model, save_model
from cider_mer.config import TrainConfig
from cider_mer.data.dataset import MerDataset, Split, check_vocabulary
from cider_mer.data.labels import CLASS_NAMES, SELECTION_METRIC
from cider_mer.debias.bias_model import BiasOnlyModel, fit_bias_model
from cider_mer.debias.poe import BiasBranch, attach_bias_branch, bias_branch_of, training_log_prior
from cider_mer.errors import CiderError, ConfigError
from cider_mer.inference import Debiaser, Predictions
from cider_mer.io_utils import atomic_write_json, ensure_writable_dir, json_normal, read_json, run_record
from cider_mer.maci.counterfactual import (BiasVocabulary, build_bias_vocabulary, given_bias_vocabulary,
                                          word_piece_ids)
from cider_mer.maci.mcm import MCMHead
from cider_mer.maci.statistics import cached_statistics
from cider_mer.models.interface import DataShapes, KeepMasks, MerModel
from cider_mer.models.registry import build_model, get_spec
from cider_mer.predict import PredictionTable, WhatIf, predict_inputs
from cider_mer.text.cache import cache_dir_for, cached_text_features, dataset_key, encoder_fingerprint
from cider_mer.text.encoder import TextEncoder, load_tokenizer
from cider_mer.validation import SettingError

CONFIG_FILE, MODEL_FILE, RESUME_FILE, LOG_FILE, MACI_FILE, TEXT_LOG_FILE = (
    "config.json", "model.safetensors", "resume.safetensors", "train_log.csv", "maci.json", "train.log")
# Settings a resumed run may change: they decide how long training goes on and where it runs, not
# what one epoch computes.
RESUMABLE_SETTINGS = ("epochs", "patience", "device", "eval_batch_size")
CACHE_WHAT = "feature cache folder ($CIDER_CACHE_DIR, else .cider_cache beside the data)"


class RunError(CiderError):
    """A run directory is missing, incomplete or does not fit the request."""


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1`` ..."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device '{name}': expected auto, cpu, cuda or cuda:N") from exc
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device '{name}': expected auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' was asked for, but CUDA is not available")
    return dev


def describe_device(device: torch.device) -> str:
    """``cpu``, or ``cuda:0 (NVIDIA H200)``: the device as run records show it."""
    if device.type != "cuda":
        return str(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def check_same_run(run_dir: str | Path, meta: dict[str, Any], cfg: TrainConfig, data_key: str) -> dict[str, tuple]:
    """The one rule for continuing the run stored in ``run_dir`` (whose config.json is ``meta``)
    with ``cfg`` on the dataset with content key ``data_key``: same dataset, and same settings
    except :data:`RESUMABLE_SETTINGS`. Returns those resumable differences (setting -> (stored,
    now)); raises :class:`RunError` listing every other one."""
    stored_key = meta.get("data", {}).get("sha256_16") if isinstance(meta.get("data"), dict) else None
    if stored_key != data_key:
        raise RunError(f"{run_dir}: was trained on another dataset file (content {stored_key}, now {data_key}); "
                       "use another --out")
    try:
        stored = TrainConfig.from_dict(meta["train"], source=str(Path(run_dir) / CONFIG_FILE))
    except (KeyError, TypeError, ValueError) as exc:
        raise RunError(f"{Path(run_dir) / CONFIG_FILE}: unreadable stored settings ({exc})") from None
    diff = stored.differences(cfg) if json_normal(stored.to_dict()) != json_normal(cfg.to_dict()) else {}
    refused = {k: v for k, v in diff.items() if k not in RESUMABLE_SETTINGS}
    if refused:
        detail = ", ".join(f"{k}: stored {a!r}, now {b!r}" for k, (a, b) in refused.items())
        raise RunError(f"{run_dir}: holds a run with other settings ({detail}); continuing it needs the same "
                       f"settings except {', '.join(RESUMABLE_SETTINGS)}: use another --out for new settings")
    return {k: v for k, v in diff.items() if k in RESUMABLE_SETTINGS}


def check_cache_dir(cfg: TrainConfig, data_path: Optional[str | Path]) -> None:
    """Before any work: the feature cache a run with ``cfg`` writes for ``data_path`` must be writable
    (MCM statistics and frozen-encoder features are cached there)."""
    if (cfg.freeze_text_encoder or cfg.head == "mcm") and data_path is not None:
        ensure_writable_dir(cache_dir_for(data_path), CACHE_WHAT)


def autocast_dtype_for(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The model's autocast dtype: bf16 only for ``precision="bf16"`` on CUDA, else None (fp32)."""
    return torch.bfloat16 if (precision == "bf16" and device.type == "cuda") else None


def load_encoder(cfg: TrainConfig) -> TextEncoder:
    """The run's text encoder, loaded offline, at the run's encoder precision."""
    return configure_encoder(TextEncoder.from_pretrained(cfg.text_encoder, frozen=cfg.freeze_text_encoder), cfg)


def configure_encoder(encoder: TextEncoder, cfg: TrainConfig) -> TextEncoder:
    """Apply the run's encoder precision (also to an encoder shared between runs)."""
    encoder.compute_dtype = torch.bfloat16 if cfg.encoder_precision == "bf16" else None
    return encoder


def shapes_for(data: MerDataset, text_dim: int, task: str) -> DataShapes:
    """What the model must know of ``data`` for ``task`` (a task of the file's label convention) with a
    ``text_dim``-wide encoder; the class count comes from the data's labels."""
    data.check_task(task)
    return DataShapes(text_dim, data.audio_dim, data.vision_dim, data.text_len, data.audio_len, data.vision_len,
                      data.aligned, data.convention.num_classes(task))


def check_encoder_vocabulary(data: MerDataset, encoder: TextEncoder, splits: Optional[tuple[str, ...]] = None) -> None:
    """The file's token ids (of ``splits``, default all) fit ``encoder``; else a DatasetError naming both."""
    config = encoder.model.config
    check_vocabulary(data, config.vocab_size, encoder.name, type_vocab_size=getattr(config, "type_vocab_size", None),
                     max_positions=getattr(config, "max_position_embeddings", None), splits=splits)


def bias_vocabulary_for(cfg: TrainConfig, train: Split) -> BiasVocabulary:
    """The run's bias vocabulary from the training split: the word-pieces of ``cfg.bias_words`` when
    given (a known confound), else MACI's statistical rule."""
    if cfg.bias_words is None:
        return build_bias_vocabulary(train, cfg.task, top_k=cfg.cf_vocab_size, cv_threshold=cfg.cf_cv_threshold)
    try:
        pieces = word_piece_ids(cfg.bias_words, load_tokenizer(cfg.text_encoder))
    except ValueError as exc:
        raise ConfigError(f"bias_words: {exc}") from None
    return given_bias_vocabulary(train, cfg.task, pieces)


@dataclass
class Run:
    """A run: settings, data shapes, model (on ``device``), text encoder and the debiasing state: the
    bias vocabulary, the bias-only model of group selection and the counterfactual centre."""

    run_dir: Path
    cfg: TrainConfig
    shapes: DataShapes
    model: MerModel
    encoder: TextEncoder
    device: torch.device
    bias_vocab: Optional[BiasVocabulary]
    meta: dict[str, Any]  # the contents of config.json
    checkpoint: dict[str, Any] = field(default_factory=dict)  # model.safetensors metadata (epoch, val_tau ...)
    bias_model: Optional[BiasOnlyModel] = None  # group selection's bias-only model (training split)
    cf_centre: Optional[np.ndarray] = None  # (C,) mean counterfactual log-probs over the training inputs

    # ------------------------------------------------------------------ creating and loading

    @classmethod
    def create(cls, cfg: TrainConfig, data: MerDataset, run_dir: str | Path,
               encoder: Optional[TextEncoder] = None) -> "Run":
        """Seed, build the model, compute MACI's training statistics and vocabulary (train split only).

        Nothing is written; :meth:`save_config` writes ``config.json`` (and ``maci.json``).
        """
        device = resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)
        data.check_task(cfg.task)  # before the encoder loads
        encoder = configure_encoder(encoder, cfg) if encoder is not None else load_encoder(cfg)
        check_encoder_vocabulary(data, encoder, splits=("train", "valid"))
        shapes = shapes_for(data, encoder.dim, cfg.task)
        train = data["train"]
        # Before the model and its statistics: a bias word the tokenizer does not know fails fast.
        vocab = bias_vocabulary_for(cfg, train) if cfg.needs_bias_vocabulary else None
        model = build_model(cfg.model, shapes, cfg.model_config, text_encoder=encoder, maci=cfg.head == "mcm")
        if isinstance(model.head, MCMHead):
            # Class-mean text features come from the frozen PRE-TRAINED encoder (weights not yet tuned).
            stats = cached_statistics(
                data.path, train, cfg.task, encoder_fingerprint(encoder),
                lambda: cached_text_features(data.path, "train", train.text_ids, train.text_mask, train.text_segment,
                                             encoder, device=device, batch_size=cfg.eval_batch_size))
            model.head.set_statistics(torch.as_tensor(stats.priors), torch.as_tensor(stats.class_means))
        bias_model = None
        if cfg.selection != "plain":
            bias_model = fit_bias_model(train, vocab.token_ids, cfg.task, seed=cfg.seed)
        if cfg.debias != "none":
            log_prior = training_log_prior(train.labels(cfg.task), shapes.num_classes)
            attach_bias_branch(model, BiasBranch(torch.as_tensor(vocab.token_ids), torch.as_tensor(log_prior),
                                                 model.backbone.joint_dim, cfg.debias, cfg.debias_entropy_weight))
        model.to(device)
        meta = {
            "train": cfg.to_dict(),
            "model_config": dataclasses.asdict(cfg.model_config),
            "model_source": get_spec(cfg.model).source,
            "shapes": shapes.to_dict(),
            "text_encoder": encoder.name,
            "data": {"file": Path(data.path).name, "sha256_16": dataset_key(data.path),
                     "sizes": {k: data[k].n for k in ("train", "valid")}},
            "label_convention": data.convention.name,
            "class_names": data.convention.names_for(cfg.task),
            "seed": cfg.seed,
            "selection_metric": SELECTION_METRIC[cfg.task],
            **run_record(describe_device(device)),
        }
        return cls(Path(run_dir), cfg, shapes, model, encoder, device, vocab, meta, bias_model=bias_model)

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "auto", encoder: Optional[TextEncoder] = None) -> "Run":
        """Rebuild a trained run from its directory (config.json + model.safetensors [+ maci.json])."""
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise RunError(f"{run_dir}: no such run directory")
        for name in (CONFIG_FILE, MODEL_FILE):
            if not (run_dir / name).is_file():
                raise RunError(f"{run_dir}: not a finished run: '{name}' is missing "
                               f"(train first with `cider train --out {run_dir}`)")
        config_path = run_dir / CONFIG_FILE
        meta = read_json(config_path)
        try:
            cfg = TrainConfig.from_dict(meta["train"], source=str(config_path))
            shapes = DataShapes(**meta["shapes"])
        except KeyError as exc:
            raise RunError(f"{config_path}: unreadable run config (no entry {exc})") from None
        except (TypeError, SettingError) as exc:
            raise RunError(f"{config_path}: unreadable run config ({exc})") from None
        dev = resolve_device(device)
        encoder = configure_encoder(encoder or TextEncoder.from_pretrained(cfg.text_encoder,
                                                                           frozen=cfg.freeze_text_encoder), cfg)
        if encoder.dim != shapes.text_dim:
            raise RunError(f"{run_dir}: the run used a {shapes.text_dim}-d text encoder, "
                           f"'{cfg.text_encoder}' is {encoder.dim}-d")
        model = build_model(cfg.model, shapes, cfg.model_config, text_encoder=encoder, maci=cfg.head == "mcm")
        maci = _read_maci(run_dir, cfg)
        vocab = None
        if cfg.needs_bias_vocabulary:
            vocab = _read_vocabulary(maci, run_dir / MACI_FILE, encoder.model.config.vocab_size, cfg.task)
        bias_model = BiasOnlyModel.from_dict(maci["bias_model"]) if cfg.selection != "plain" else None
        cf_centre = np.asarray(maci["cf_centre"], dtype=np.float32) if cfg.cf_centre and cfg.counterfactual else None
        if cfg.debias != "none":  # weights and the training log-prior come from the checkpoint
            attach_bias_branch(model, BiasBranch(torch.as_tensor(vocab.token_ids), torch.zeros(shapes.num_classes),
                                                 model.backbone.joint_dim, cfg.debias, cfg.debias_entropy_weight))
        checkpoint = load_model(run_dir / MODEL_FILE, model)
        model.to(dev).eval()
        return cls(run_dir, cfg, shapes, model, encoder, dev, vocab, meta, checkpoint=checkpoint,
                   bias_model=bias_model, cf_centre=cf_centre)

    # ------------------------------------------------------------------ files

    def path(self, name: str) -> Path:
        return self.run_dir / name

    def save_config(self) -> None:
        """Write ``config.json`` (and ``maci.json`` when the run has a bias vocabulary)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path(CONFIG_FILE), self.meta)
        self._save_maci()

    def _save_maci(self) -> None:
        if self.bias_vocab is None:
            return
        payload: dict[str, Any] = {"vocabulary": self.bias_vocab.to_dict()}
        if self.bias_model is not None:
            payload["bias_model"] = self.bias_model.to_dict()
        if self.cf_centre is not None:
            payload["cf_centre"] = np.asarray(self.cf_centre, dtype=np.float64).tolist()
        atomic_write_json(self.path(MACI_FILE), payload)

    def save_weights(self, metadata: dict[str, Any]) -> None:
        """Write the model as ``model.safetensors`` (a frozen encoder's published weights left out), and
        ``maci.json`` again when the checkpoint comes with its own counterfactual centre."""
        save_model(self.path(MODEL_FILE), self.model, not self.cfg.freeze_text_encoder, metadata)
        if self.cf_centre is not None:
            self._save_maci()

    # ------------------------------------------------------------------ data and inference

    @property
    def class_names(self) -> list[str]:
        """Names of the task's classes (index = class id; ``["score"]`` for regression), as trained."""
        names = self.meta.get("class_names")  # runs written before label conventions: the fixed names
        return list(names) if names is not None else list(CLASS_NAMES[self.cfg.task])

    @property
    def autocast_dtype(self) -> Optional[torch.dtype]:
        return autocast_dtype_for(self.cfg.precision, self.device)

    @property
    def debiaser(self) -> Debiaser:
        """This run's inference: counterfactual text (inactive without it), the training log-prior of a
        bias branch, the validation criterion; at the run's precision."""
        cfg = self.cfg
        ids = None
        if cfg.counterfactual and self.bias_vocab is not None:
            ids = torch.as_tensor(self.bias_vocab.token_ids, device=self.device)
        branch = bias_branch_of(self.model)
        log_prior = None if branch is None else branch.log_prior.detach().cpu().numpy()
        return Debiaser(cfg.task, ids, cfg.eval_batch_size, self.autocast_dtype, cfg.cf_fill, cfg.cf_other_modalities,
                        self.cf_centre, log_prior, self.bias_model, cfg.selection, cfg.selection_min_group)

    def refresh_cf_centre(self, train: DeviceSplit) -> None:
        """Recompute the counterfactual centre of the current weights on the training inputs (``cf_centre`` runs)."""
        if self.cfg.cf_centre and self.cfg.counterfactual:
            self.cf_centre = self.debiaser.training_centre(self.model, train)

    @property
    def val_tau(self) -> float:
        """MACI's tau chosen on the VALIDATION split (complete data) at the selected epoch, as
        training stored it with the weights; 0 for a run without counterfactual text."""
        if not self.debiaser.active:
            return 0.0
        tau = self.checkpoint.get("val_tau")
        if not isinstance(tau, (int, float)) or isinstance(tau, bool):
            raise RunError(f"{self.path(MODEL_FILE)}: holds no validation tau ('val_tau' in its metadata); "
                           "it was not written by `cider train`, retrain the run")
        return float(tau)

    def check_compatible(self, data: MerDataset) -> None:
        """Cross-dataset evaluation needs the task's label convention (and, for classes read from the data,
        the same class names), token ids the encoder knows, and the same feature dims and alignment."""
        data.check_task(self.cfg.task)
        names = data.convention.names_for(self.cfg.task)
        if names != self.class_names:
            raise RunError(f"{data.path}: classes {names} do not match the run's classes {self.class_names} "
                           f"({self.run_dir}); class ids would mean other classes")
        check_encoder_vocabulary(data, self.encoder)
        s = self.shapes
        got = {"audio_dim": data.audio_dim, "vision_dim": data.vision_dim, "aligned": data.aligned}
        want = {"audio_dim": s.audio_dim, "vision_dim": s.vision_dim, "aligned": s.aligned}
        bad = {k: (want[k], got[k]) for k in want if want[k] != got[k]}
        if bad:
            detail = ", ".join(f"{k}: run {w}, file {g}" for k, (w, g) in bad.items())
            raise RunError(f"{data.path}: does not fit the run in {self.run_dir} ({detail}); cross-dataset "
                           "evaluation needs equal feature dims and the same alignment")

    def split(self, data: MerDataset, name: str) -> DeviceSplit:
        """Split ``name`` of ``data`` on the run's device; with a frozen encoder, its complete-text
        states come from the feature cache (when the dataset has a file to key it)."""
        if name not in data.splits:
            raise RunError(f"unknown split '{name}': expected one of {sorted(data.splits)}")
        split = data[name]
        feats = None
        if self.cfg.freeze_text_encoder and data.path is not None and Path(data.path).exists():
            feats = cached_text_features(data.path, name, split.text_ids, split.text_mask, split.text_segment,
                                         self.encoder, device=self.device, batch_size=self.cfg.eval_batch_size)
        return DeviceSplit.from_split(split, self.cfg.task, self.device, feats, self.cfg.data_on_device)

    def predict(self, data: MerDataset, split: str = "test", keep: Optional[KeepMasks] = None,
                return_joint: bool = False) -> Predictions:
        """Factual (and counterfactual, when the run uses it) predictions on one split of ``data``."""
        self.check_compatible(data)
        return self.debiaser.predict(self.model, self.split(data, split), keep, return_joint)

    def predict_inputs(self, texts: Sequence[str], audio: Optional[Sequence[Optional[np.ndarray]]] = None,
                       vision: Optional[Sequence[Optional[np.ndarray]]] = None, ids: Optional[Sequence[str]] = None,
                       labels: Optional[Sequence[float]] = None, batch_size: Optional[int] = None,
                       missing: Optional[WhatIf] = None, progress: bool = False) -> PredictionTable:
        """Predictions on raw inputs: N texts and, per sample, (T_i, d) audio / vision frames or None
        (missing). Returns a :class:`~cider_mer.predict.PredictionTable` with class probabilities,
        MACI's debiased predictions and modality presence (see :func:`cider_mer.predict.predict_inputs`)."""
        return predict_inputs(self, texts, audio, vision, ids=ids, labels=labels, batch_size=batch_size,
                              missing=missing, progress=progress)


def _read_vocabulary(stored: dict[str, Any], path: Path, vocab_size: int, task: str) -> BiasVocabulary:
    """The bias vocabulary of a run's ``maci.json`` (``stored``, read from ``path``), with token ids
    that the encoder can embed."""
    try:
        vocab = BiasVocabulary.from_dict(stored["vocabulary"])
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise RunError(f"{path}: unreadable bias vocabulary ({type(exc).__name__}: {exc})") from None
    ids = vocab.token_ids
    if ids.ndim != 1 or (ids.size and (ids.min() < 0 or ids.max() >= vocab_size)) or vocab.task != task:
        raise RunError(f"{path}: expected 'vocabulary' with token_ids (K,) in [0, {vocab_size}) and task '{task}'")
    return vocab


def _read_maci(run_dir: Path, cfg: TrainConfig) -> dict[str, Any]:
    """``maci.json`` with the entries ``cfg`` needs (an empty dict when it needs none)."""
    wanted = [name for name, needed in (("vocabulary", cfg.needs_bias_vocabulary),
                                        ("bias_model", cfg.selection != "plain"),
                                        ("cf_centre", cfg.cf_centre and cfg.counterfactual)) if needed]
    if not wanted:
        return {}
    path = run_dir / MACI_FILE
    if not path.is_file():
        raise RunError(f"{path}: missing although the run's settings need {wanted}")
    maci = read_json(path)
    absent = [name for name in wanted if name not in maci]
    if absent:
        raise RunError(f"{path}: no {absent} entry although the run's settings need it (an unfinished run?)")
    return maci


def load_run(run_dir: str | Path, device: str = "auto", encoder: Optional[TextEncoder] = None) -> Run:
    """A trained run, ready to predict (see :meth:`Run.load`)."""
    return Run.load(run_dir, device=device, encoder=encoder)
