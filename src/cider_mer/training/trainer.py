"""Training with MSSD (SPEC §4), selection on validation only, resumable runs.

A run directory holds:

- ``config.json``: every setting, the data shapes, the dataset's content key, seed and versions;
- ``model.safetensors``: the model that scored best on the VALIDATION split;
- ``maci.json``: the counterfactual vocabulary and MCM statistics summary (when MACI is on);
- ``train_log.csv``: per-epoch losses and validation metrics;
- ``resume.safetensors``: the state after the last completed epoch (for ``--resume``).

The test split is never read here.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from cider_mer.data.dataset import MerDataset
from cider_mer.data.labels import SELECTION_METRIC, num_classes
from cider_mer.evaluation.predict import predict
from cider_mer.io_utils import atomic_write_json, atomic_write_text, read_json, versions
from cider_mer.maci.counterfactual import BiasVocabulary, build_bias_vocabulary
from cider_mer.maci.mcm import MCMHead
from cider_mer.maci.statistics import cached_statistics
from cider_mer.maci.tau import select_tau
from cider_mer.metrics import task_metrics
from cider_mer.missing import KeepMasks, apply_missing, dropped_masks, sample_training_keep
from cider_mer.models.interface import ModelInputs, MerModel
from cider_mer.models.interface import DataShapes
from cider_mer.models.registry import build_model, get_spec, make_config
from cider_mer.text.cache import cached_text_features, encoder_fingerprint
from cider_mer.text.encoder import TextEncoder
from cider_mer.training import losses
from cider_mer.training.batches import DeviceSplit, bucketed_batches, shuffled_batches
from cider_mer.training.checkpoint import load_resume, save_model, save_resume
from cider_mer.training.config import TrainConfig

CONFIG_FILE, MODEL_FILE, RESUME_FILE, LOG_FILE, MACI_FILE = (
    "config.json", "model.safetensors", "resume.safetensors", "train_log.csv", "maci.json")


class RunError(ValueError):
    """A run directory is missing, incomplete or does not fit the request."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RunError(f"device '{name}' was asked for, but CUDA is not available")
    return dev


def autocast_dtype_for(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The model's autocast dtype: bf16 only for ``precision="bf16"`` on CUDA, else None (fp32)."""
    return torch.bfloat16 if (precision == "bf16" and device.type == "cuda") else None


def set_tf32(device: torch.device, allowed: bool) -> None:
    """TF32 matmuls/convolutions on CUDA go with bf16 training; fp32 runs stay exact."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = allowed
        torch.backends.cudnn.allow_tf32 = allowed


def build_optimizer(model: MerModel, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam: lr 1e-3 for the model; the encoder gets its own lr with weight decay on
    non-bias, non-LayerNorm weights (as L2 inside Adam, like the reference code)."""
    enc_ids = model.encoder_parameter_ids()
    decay, no_decay, rest = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in enc_ids:
            (no_decay if ("bias" in name or "LayerNorm" in name or "layer_norm" in name) else decay).append(p)
        else:
            rest.append(p)
    groups = [{"params": rest, "lr": cfg.lr, "weight_decay": 0.0}]
    if decay:
        groups.append({"params": decay, "lr": cfg.encoder_lr, "weight_decay": cfg.encoder_weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "lr": cfg.encoder_lr, "weight_decay": 0.0})
    return torch.optim.Adam(groups)


def effective_weights(cfg: TrainConfig, model: MerModel) -> dict[str, float]:
    """The MSSD terms that are on in ``cfg`` and that the backbone can feed."""
    weights = dict(cfg.distillation_weights)
    if not getattr(model.backbone, "supports_reconstruction", True):
        weights.pop("recon", None)
    if not getattr(model.backbone, "supports_attention", True):
        weights.pop("attn", None)
    return weights


def mssd_step(model: MerModel, optimizer: torch.optim.Optimizer, inputs: ModelInputs, labels: torch.Tensor,
              keep: KeepMasks, cfg: TrainConfig, autocast_dtype: Optional[torch.dtype] = None) -> dict[str, torch.Tensor]:
    """One MSSD step: (1) complete pass, CE, step; (2) gradients ZEROED, incomplete pass with the
    distillation terms against the (pre-update, detached) complete pass, step.

    Without MSSD (``cfg.mssd=False``) only the incomplete pass with CE runs.
    Returns the loss terms as detached scalars (no host sync).
    """
    weights = effective_weights(cfg, model)
    dev = inputs.text_ids.device
    amp = dict(device_type=dev.type, dtype=autocast_dtype, enabled=autocast_dtype is not None)
    logs: dict[str, torch.Tensor] = {}
    complete = None
    if cfg.mssd:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(**amp):
            complete = model(inputs)
            task_loss = F.nll_loss(complete.log_probs.float(), labels)
        task_loss.backward()
        optimizer.step()
        logs["loss_complete"] = task_loss.detach()
    optimizer.zero_grad(set_to_none=True)  # the reference code forgets this: stage-1 grads leak
    # Training masks drop tokens in practically every batch: always re-encode the incomplete text (no host sync
    # is spent checking whether the cached complete-text features could be reused).
    inputs_m = apply_missing(inputs.replace(text_features=None), keep)
    with torch.autocast(**amp):
        missing = model(inputs_m, need_recon="recon" in weights)
        loss = F.nll_loss(missing.log_probs.float(), labels)
        logs["loss_missing"] = loss.detach()
        if "recon" in weights:
            term = losses.reconstruction_loss(missing, complete, inputs, dropped_masks(inputs, keep))
            logs["loss_recon"] = term.detach()
            loss = loss + weights["recon"] * term
        if "attn" in weights:
            term = losses.attention_loss(missing, complete)
            logs["loss_attn"] = term.detach()
            loss = loss + weights["attn"] * term
        if "joint" in weights:
            term = losses.joint_loss(missing, complete)
            logs["loss_joint"] = term.detach()
            loss = loss + weights["joint"] * term
    loss.backward()
    optimizer.step()
    logs["loss"] = loss.detach()
    return logs


@dataclass
class EpochRandomness:
    """The two generators of an epoch: batch order (CPU) and missing masks (training device)."""

    shuffle: torch.Generator
    masks: torch.Generator


def train_epoch(model: MerModel, optimizer: torch.optim.Optimizer, split: DeviceSplit, cfg: TrainConfig,
                rng: EpochRandomness, autocast_dtype: Optional[torch.dtype] = None, progress: bool = False,
                desc: str = "train") -> tuple[dict[str, torch.Tensor], int]:
    """One pass of MSSD steps over ``split`` with fresh missing masks per batch.

    Returns the summed loss terms (device tensors: no host sync) and the number of batches. On
    the CPU each batch is cut to its longest text first (exact; saves padded work).
    """
    from tqdm.auto import tqdm

    device = split.device
    model.train()
    if cfg.length_buckets:
        order = bucketed_batches(split.text_mask.sum(dim=1).cpu(), cfg.batch_size, rng.shuffle, device)
    else:
        order = shuffled_batches(split.n, cfg.batch_size, rng.shuffle, device)
    n_batches = math.ceil(split.n / cfg.batch_size)
    sums: dict[str, torch.Tensor] = {}
    bar = tqdm(order, total=n_batches, desc=desc, disable=not progress, leave=False)
    for idx in bar:
        inputs = split.inputs(idx)
        if device.type == "cpu":
            inputs = inputs.trim_text()
        keep = sample_training_keep(inputs.text_mask, inputs.audio_mask, inputs.vision_mask, rng.masks,
                                    cfg.train_missing)
        logs = mssd_step(model, optimizer, inputs, split.labels.index_select(0, idx), keep, cfg, autocast_dtype)
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + v
        if progress and device.type == "cpu":  # on a GPU, reading the loss would sync every batch
            bar.set_postfix(loss=f"{float(logs['loss']):.3f}")
    return sums, n_batches


@dataclass
class Prepared:
    """What a run builds from its config and data before the first epoch."""

    cfg: TrainConfig
    shapes: DataShapes
    model: MerModel
    encoder: TextEncoder
    device: torch.device
    cf_vocab: Optional[BiasVocabulary]
    data_key: str


def load_encoder(cfg: TrainConfig) -> TextEncoder:
    return configure_encoder(TextEncoder.from_pretrained(cfg.text_encoder, frozen=cfg.freeze_text_encoder), cfg)


def configure_encoder(encoder: TextEncoder, cfg: TrainConfig) -> TextEncoder:
    """Apply the run's encoder precision (also to an encoder shared between runs)."""
    encoder.compute_dtype = torch.bfloat16 if cfg.encoder_precision == "bf16" else None
    return encoder


def shapes_for(data: MerDataset, encoder_dim: int, task: str) -> DataShapes:
    return DataShapes(encoder_dim, data.audio_dim, data.vision_dim, data.text_len, data.audio_len, data.vision_len,
                      data.aligned, num_classes(task))


def prepare(cfg: TrainConfig, data: MerDataset, data_path: str | Path, device: torch.device,
            encoder: Optional[TextEncoder] = None) -> Prepared:
    """Seed, build the model, compute MACI's training statistics and vocabulary (train split only)."""
    from cider_mer.text.cache import dataset_key

    torch.manual_seed(cfg.seed)
    encoder = configure_encoder(encoder, cfg) if encoder is not None else load_encoder(cfg)
    shapes = shapes_for(data, encoder.dim, cfg.task)
    model = build_model(cfg.model, shapes, cfg.model_config, text_encoder=encoder, maci=cfg.head == "mcm")
    train = data["train"]
    if isinstance(model.head, MCMHead):
        # Class-mean text features come from the frozen PRE-TRAINED encoder (weights not yet tuned).
        stats = cached_statistics(
            data_path, train, cfg.task, encoder_fingerprint(encoder),
            lambda: cached_text_features(data_path, "train", train.text_ids, train.text_mask, train.text_segment,
                                         encoder, device=device, batch_size=cfg.eval_batch_size))
        model.head.set_statistics(torch.as_tensor(stats.priors), torch.as_tensor(stats.class_means))
    vocab = None
    if cfg.counterfactual:
        vocab = build_bias_vocabulary(train, cfg.task, top_k=cfg.cf_vocab_size, cv_threshold=cfg.cf_cv_threshold)
    model.to(device)
    return Prepared(cfg, shapes, model, encoder, device, vocab, dataset_key(data_path))


def device_split(data: MerDataset, name: str, prep: Prepared, data_path: str | Path) -> DeviceSplit:
    """A split on the device; with a frozen encoder, its complete-text states come from the cache."""
    split = data[name]
    feats = None
    if prep.cfg.freeze_text_encoder:
        feats = cached_text_features(data_path, name, split.text_ids, split.text_mask, split.text_segment,
                                     prep.encoder, device=prep.device, batch_size=prep.cfg.eval_batch_size)
    return DeviceSplit.from_split(split, prep.cfg.task, prep.device, feats)


def validate(model: MerModel, valid: DeviceSplit, cfg: TrainConfig, cf_vocab_ids: Optional[torch.Tensor],
             autocast_dtype: Optional[torch.dtype] = None) -> dict[str, float]:
    """Complete-data validation: metrics at the tau chosen on this validation split."""
    pred = predict(model, valid, cf_vocab=cf_vocab_ids, batch_size=cfg.eval_batch_size, autocast_dtype=autocast_dtype)
    labels = valid.labels.cpu().numpy()
    tau, _ = select_tau(cfg.task, pred.log_probs, pred.cf_log_probs, labels)
    scores = pred.log_probs if tau == 0 else pred.log_probs - tau * pred.cf_log_probs
    out = {f"val_{k}": v for k, v in task_metrics(cfg.task, scores, labels).items()}
    out["val_loss"] = float(F.nll_loss(torch.as_tensor(pred.log_probs), torch.as_tensor(labels)).item())
    out["val_tau"] = tau
    return out


def run_metadata(cfg: TrainConfig, prep: Prepared, data: MerDataset, data_path: str | Path) -> dict[str, Any]:
    model_cfg = make_config(cfg.model, cfg.model_config)
    return {
        "train": cfg.to_dict(),
        "model_config": dataclasses.asdict(model_cfg),
        "model_source": get_spec(cfg.model).source,
        "shapes": prep.shapes.to_dict(),
        "text_encoder": prep.encoder.name,
        "data": {"file": Path(data_path).name, "sha256_16": prep.data_key, "sizes": {k: data[k].n for k in ("train", "valid")}},
        "seed": cfg.seed,
        "mssd_terms": sorted(effective_weights(cfg, prep.model)),
        "selection_metric": SELECTION_METRIC[cfg.task],
        "versions": versions(),
    }


def _write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _generator_states(mask_gen: torch.Generator, shuffle_gen: torch.Generator) -> dict[str, torch.Tensor]:
    states = {"torch": torch.get_rng_state(), "mask": mask_gen.get_state(), "shuffle": shuffle_gen.get_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


@dataclass
class TrainResult:
    run_dir: Path
    best_epoch: int
    best_value: float
    epochs_run: int
    stopped_early: bool
    seconds: float


def train(cfg: TrainConfig, data: MerDataset, data_path: str | Path, run_dir: str | Path, resume: bool = False,
          progress: bool = True, encoder: Optional[TextEncoder] = None,
          epoch_callback: Optional[Callable[[int, dict[str, float]], None]] = None) -> TrainResult:
    """Train ``cfg`` on ``data`` (train and valid splits only) into ``run_dir``.

    ``epoch_callback(epoch, row)`` is called after each epoch (used by tuning for pruning; it may
    raise to stop the run).
    """
    run_dir = Path(run_dir)
    config_path, resume_path = run_dir / CONFIG_FILE, run_dir / RESUME_FILE
    if config_path.exists() and not resume:
        raise RunError(f"{run_dir}: already holds a run (config.json); pass --resume to continue it or choose another --out")
    device = resolve_device(cfg.device)
    prep = prepare(cfg, data, data_path, device, encoder)
    meta = run_metadata(cfg, prep, data, data_path)
    if resume and config_path.exists():
        old = read_json(config_path)
        if old.get("train") != meta["train"] or old.get("data", {}).get("sha256_16") != prep.data_key:
            raise RunError(f"{run_dir}: --resume needs the same settings and dataset as the original run "
                           "(compare config.json)")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(config_path, meta)
    if prep.cf_vocab is not None:
        atomic_write_json(run_dir / MACI_FILE, {"vocabulary": prep.cf_vocab.to_dict()})

    model = prep.model
    train_split = device_split(data, "train", prep, data_path)
    valid_split = device_split(data, "valid", prep, data_path)
    cf_ids = None if prep.cf_vocab is None else torch.as_tensor(prep.cf_vocab.token_ids, device=device)
    optimizer = build_optimizer(model, cfg)
    autocast_dtype = autocast_dtype_for(cfg.precision, device)
    set_tf32(device, cfg.precision == "bf16")
    if cfg.compile:
        model.backbone = torch.compile(model.backbone)  # type: ignore[assignment]

    mask_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    shuffle_gen = torch.Generator().manual_seed(cfg.seed + 2)
    include_encoder = not cfg.freeze_text_encoder
    book: dict[str, Any] = {"epoch": 0, "best_value": -math.inf, "best_epoch": 0, "bad_epochs": 0, "log": [],
                            "stopped_early": False, "seconds": 0.0}
    if resume and resume_path.exists():
        gens, book = load_resume(resume_path, model, optimizer)
        torch.set_rng_state(gens["torch"])
        mask_gen.set_state(gens["mask"])
        shuffle_gen.set_state(gens["shuffle"])
        if "cuda" in gens and torch.cuda.is_available():
            torch.cuda.set_rng_state(gens["cuda"])
    metric = SELECTION_METRIC[cfg.task]
    started = time.time() - book["seconds"]
    while book["epoch"] < cfg.epochs and not book["stopped_early"]:
        epoch = book["epoch"] + 1
        t0 = time.time()
        sums, n_batches = train_epoch(model, optimizer, train_split, cfg, EpochRandomness(shuffle_gen, mask_gen),
                                      autocast_dtype, progress=progress, desc=f"epoch {epoch}")
        train_seconds = time.time() - t0
        row: dict[str, Any] = {"epoch": epoch, **{k: float(v) / max(n_batches, 1) for k, v in sums.items()},
                               "train_seconds": round(train_seconds, 3)}
        row.update(validate(model, valid_split, cfg, cf_ids, autocast_dtype))
        value = row[f"val_{metric}"]
        improved = value > book["best_value"]
        if improved:
            book.update(best_value=value, best_epoch=epoch, bad_epochs=0)
            save_model(run_dir / MODEL_FILE, model, include_encoder,
                       {"epoch": epoch, f"val_{metric}": value, "val_tau": row["val_tau"]})
        else:
            book["bad_epochs"] += 1
        book["epoch"] = epoch
        book["stopped_early"] = book["bad_epochs"] >= cfg.patience
        book["seconds"] = time.time() - started
        book["log"].append(row)
        _write_log(run_dir / LOG_FILE, book["log"])
        save_resume(resume_path, model, optimizer, include_encoder, _generator_states(mask_gen, shuffle_gen), book)
        if progress:
            extra = " *" if improved else ""
            print(f"epoch {epoch:3d}  loss {row['loss']:.4f}  val {metric} {value:.2f}  tau {row['val_tau']:.1f}  "
                  f"({train_seconds:.1f}s){extra}", flush=True)
        if epoch_callback is not None:
            epoch_callback(epoch, row)
    return TrainResult(run_dir, book["best_epoch"], book["best_value"], book["epoch"], book["stopped_early"],
                       book["seconds"])
