"""One home for a run: its directory layout, how it is created and loaded, and how the model is
rebuilt from it (as ``save_pretrained`` pairs with ``from_pretrained``).

A run directory holds:

- ``config.json``: every setting, the data shapes, the dataset's content key, seed and versions;
- ``model.safetensors``: the model that scored best on the VALIDATION split;
- ``maci.json``: the counterfactual vocabulary (when the run uses counterfactual text);
- ``train_log.csv``: per-epoch losses and validation metrics;
- ``resume.safetensors``: the state after the last completed epoch (for ``--resume``).

``Run.create`` builds a new run from settings and data (train split only); ``Run.load`` (also
``cider_mer.load_run``) rebuilds a trained one for evaluation and prediction.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from cider_mer.batches import DeviceSplit
from cider_mer.checkpoint import load_model, save_model
from cider_mer.config import TrainConfig
from cider_mer.data.dataset import MerDataset, check_vocabulary
from cider_mer.data.labels import SELECTION_METRIC, num_classes
from cider_mer.errors import CiderError, ConfigError
from cider_mer.inference import Debiaser, Predictions
from cider_mer.io_utils import atomic_write_json, read_json, versions
from cider_mer.maci.counterfactual import BiasVocabulary, build_bias_vocabulary
from cider_mer.maci.mcm import MCMHead
from cider_mer.maci.statistics import cached_statistics
from cider_mer.models.interface import DataShapes, KeepMasks, MerModel
from cider_mer.models.registry import build_model, get_spec
from cider_mer.text.cache import cached_text_features, dataset_key, encoder_fingerprint
from cider_mer.text.encoder import TextEncoder

CONFIG_FILE, MODEL_FILE, RESUME_FILE, LOG_FILE, MACI_FILE = (
    "config.json", "model.safetensors", "resume.safetensors", "train_log.csv", "maci.json")


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
    """What the model must know of ``data`` for ``task`` with a ``text_dim``-wide encoder."""
    return DataShapes(text_dim, data.audio_dim, data.vision_dim, data.text_len, data.audio_len, data.vision_len,
                      data.aligned, num_classes(task))


@dataclass
class Run:
    """A run: settings, data shapes, model (on ``device``), text encoder and MACI's bias vocabulary."""

    run_dir: Path
    cfg: TrainConfig
    shapes: DataShapes
    model: MerModel
    encoder: TextEncoder
    device: torch.device
    bias_vocab: Optional[BiasVocabulary]
    meta: dict[str, Any]  # the contents of config.json

    # ------------------------------------------------------------------ creating and loading

    @classmethod
    def create(cls, cfg: TrainConfig, data: MerDataset, run_dir: str | Path,
               encoder: Optional[TextEncoder] = None) -> "Run":
        """Seed, build the model, compute MACI's training statistics and vocabulary (train split only).

        Nothing is written; :meth:`save_config` writes ``config.json`` (and ``maci.json``).
        """
        device = resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)
        encoder = configure_encoder(encoder, cfg) if encoder is not None else load_encoder(cfg)
        encoder_config = encoder.model.config
        check_vocabulary(data, encoder_config.vocab_size, encoder.name,
                         type_vocab_size=getattr(encoder_config, "type_vocab_size", None),
                         max_positions=getattr(encoder_config, "max_position_embeddings", None),
                         splits=("train", "valid"))
        shapes = shapes_for(data, encoder.dim, cfg.task)
        model = build_model(cfg.model, shapes, cfg.model_config, text_encoder=encoder, maci=cfg.head == "mcm")
        train = data["train"]
        if isinstance(model.head, MCMHead):
            # Class-mean text features come from the frozen PRE-TRAINED encoder (weights not yet tuned).
            stats = cached_statistics(
                data.path, train, cfg.task, encoder_fingerprint(encoder),
                lambda: cached_text_features(data.path, "train", train.text_ids, train.text_mask, train.text_segment,
                                             encoder, device=device, batch_size=cfg.eval_batch_size))
            model.head.set_statistics(torch.as_tensor(stats.priors), torch.as_tensor(stats.class_means))
        vocab = None
        if cfg.counterfactual:
            vocab = build_bias_vocabulary(train, cfg.task, top_k=cfg.cf_vocab_size, cv_threshold=cfg.cf_cv_threshold)
        model.to(device)
        meta = {
            "train": cfg.to_dict(),
            "model_config": dataclasses.asdict(cfg.model_config),
            "model_source": get_spec(cfg.model).source,
            "shapes": shapes.to_dict(),
            "text_encoder": encoder.name,
            "data": {"file": Path(data.path).name, "sha256_16": dataset_key(data.path),
                     "sizes": {k: data[k].n for k in ("train", "valid")}},
            "seed": cfg.seed,
            "selection_metric": SELECTION_METRIC[cfg.task],
            "versions": versions(),
        }
        return cls(Path(run_dir), cfg, shapes, model, encoder, device, vocab, meta)

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
        try:
            meta = read_json(run_dir / CONFIG_FILE)
            cfg = TrainConfig.from_dict(meta["train"], source=str(run_dir / CONFIG_FILE))
            shapes = DataShapes(**meta["shapes"])
        except (ValueError, KeyError, TypeError) as exc:
            raise RunError(f"{run_dir / CONFIG_FILE}: unreadable run config ({exc})") from exc
        dev = resolve_device(device)
        encoder = configure_encoder(encoder or TextEncoder.from_pretrained(cfg.text_encoder,
                                                                           frozen=cfg.freeze_text_encoder), cfg)
        if encoder.dim != shapes.text_dim:
            raise RunError(f"{run_dir}: the run used a {shapes.text_dim}-d text encoder, "
                           f"'{cfg.text_encoder}' is {encoder.dim}-d")
        model = build_model(cfg.model, shapes, cfg.model_config, text_encoder=encoder, maci=cfg.head == "mcm")
        load_model(run_dir / MODEL_FILE, model)
        vocab = None
        if cfg.counterfactual:
            if not (run_dir / MACI_FILE).is_file():
                raise RunError(f"{run_dir}: '{MACI_FILE}' is missing although the run uses counterfactual text")
            vocab = BiasVocabulary.from_dict(read_json(run_dir / MACI_FILE)["vocabulary"])
        model.to(dev).eval()
        return cls(run_dir, cfg, shapes, model, encoder, dev, vocab, meta)

    # ------------------------------------------------------------------ files

    def path(self, name: str) -> Path:
        return self.run_dir / name

    def save_config(self) -> None:
        """Write ``config.json`` (and ``maci.json`` when the run uses counterfactual text)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path(CONFIG_FILE), self.meta)
        if self.bias_vocab is not None:
            atomic_write_json(self.path(MACI_FILE), {"vocabulary": self.bias_vocab.to_dict()})

    def save_weights(self, metadata: dict[str, Any]) -> None:
        """Write the model as ``model.safetensors`` (a frozen encoder's published weights left out)."""
        save_model(self.path(MODEL_FILE), self.model, not self.cfg.freeze_text_encoder, metadata)

    # ------------------------------------------------------------------ data and inference

    @property
    def autocast_dtype(self) -> Optional[torch.dtype]:
        return autocast_dtype_for(self.cfg.precision, self.device)

    @property
    def debiaser(self) -> Debiaser:
        """MACI's inference for this run (inactive without counterfactual text), at the run's precision."""
        ids = None if self.bias_vocab is None else torch.as_tensor(self.bias_vocab.token_ids, device=self.device)
        return Debiaser(self.cfg.task, ids, self.cfg.eval_batch_size, self.autocast_dtype)

    def check_compatible(self, data: MerDataset) -> None:
        """Cross-dataset evaluation needs the same feature dims and alignment as training."""
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


def load_run(run_dir: str | Path, device: str = "auto", encoder: Optional[TextEncoder] = None) -> Run:
    """A trained run, ready to predict (see :meth:`Run.load`)."""
    return Run.load(run_dir, device=device, encoder=encoder)
