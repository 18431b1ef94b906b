"""Training (SPEC §4): MSSD for CIDer, each baseline's own objective, selection on validation only,
resumable runs (a resumed run may change only ``runs.RESUMABLE_SETTINGS``), one writer per run
directory, and a ``train.log`` per run. The run directory's layout belongs to :mod:`cider_mer.runs`.

Per batch, with a fresh training missing mask:
- **MSSD** (``cfg.mssd``): a complete pass (task loss, step), gradients zeroed, then an incomplete
  pass with the task loss plus the distillation terms against the detached complete pass (and
  the backbone's own objective terms), step;
- **own objective** (``cfg.mssd`` false): one step on the incomplete pass's task loss plus the
  backbone's objective terms (fed a complete pass too when the backbone asks for one); with
  ``cfg.grad_accumulation`` k > 1 the gradients of k consecutive batches are summed (as MMSA and
  DLF do; not averaged) before one step, and a trailing group of fewer than k batches steps too (the
  originals drop it; stepping keeps a split smaller than one group trainable).
The task loss is NLL of the head's log-probabilities, or L1 of the score for ``regression``; with a
trained bias branch (``cfg.debias``) it is the branch's combined loss (:mod:`cider_mer.debias.poe`).
The checkpoint is chosen by the run's validation criterion (``cfg.selection``, logged as
``val_selection`` with the bias groups' sizes and metrics). The test split is never read here.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
import torch.nn.functional as F

from cider_mer.batches import DeviceSplit, bucketed_batches, shuffled_batches
from cider_mer.checkpoint import load_resume, save_resume
from cider_mer.config import TrainConfig
from cider_mer.data.dataset import MerDataset
from cider_mer.data.labels import SELECTION_METRIC, is_regression
from cider_mer.debias.poe import bias_branch_of
from cider_mer.io_utils import atomic_write_text, command_line, read_json
from cider_mer.locks import Claim, claim_dir
from cider_mer.metrics import is_better, task_metrics
from cider_mer.missing import apply_missing, dropped_masks, sample_training_keep
from cider_mer.models.interface import (EpochPlan, KeepMasks, MerModel, ModelInputs, ModelOutput, ObjectiveBatch,
                                        TaskLoss)
from cider_mer.runs import (
    CONFIG_FILE,
    LOG_FILE,
    RESUME_FILE,
    TEXT_LOG_FILE,
    Run,
    RunError,
    check_cache_dir,
    check_same_run,
)
from cider_mer.text.cache import dataset_key
from cider_mer.text.encoder import TextEncoder
from cider_mer.training import losses


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


def head_loss(task: str, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The task loss of the head's outputs (B, C): NLL of log-probabilities, or L1 of the (B, 1) score."""
    if is_regression(task):
        return F.l1_loss(outputs.float().reshape(-1), labels.float())
    return F.nll_loss(outputs.float(), labels)


def task_loss(model: MerModel, task: str, out: ModelOutput, inputs: ModelInputs, labels: torch.Tensor) -> torch.Tensor:
    """:func:`head_loss` of one pass, or with the model's trained bias branch its combined loss on
    the pass's own text (``inputs``)."""
    branch = bias_branch_of(model)
    if branch is None:
        return head_loss(task, out.log_probs, labels)
    return branch.training_loss(out.log_probs, out.joint, inputs.text_ids, inputs.text_mask, labels)


def raw_output_loss(task: str) -> TaskLoss:
    """The task loss of raw outputs (auxiliary heads): cross-entropy of logits, or L1 of scores."""
    if is_regression(task):
        return lambda out, y: F.l1_loss(out.float().reshape(-1), y.float())
    return lambda out, y: F.cross_entropy(out.float(), y)


def effective_weights(cfg: TrainConfig, model: MerModel) -> dict[str, float]:
    """The MSSD terms that are on in ``cfg`` and that the backbone can feed."""
    weights = dict(cfg.distillation_weights)
    if not model.backbone.supports_reconstruction:
        weights.pop("recon", None)
    if not model.backbone.supports_attention:
        weights.pop("attn", None)
    return weights


def _autocast(inputs: ModelInputs, dtype: Optional[torch.dtype]) -> torch.autocast:
    """Autocast at ``dtype`` on the batch's device (disabled when None: exact fp32)."""
    return torch.autocast(inputs.text_ids.device.type, dtype=dtype, enabled=dtype is not None)


def _add_objective_terms(model: MerModel, loss: torch.Tensor, logs: dict[str, torch.Tensor],
                         batch: ObjectiveBatch) -> torch.Tensor:
    for name, term in model.backbone.objective_terms(batch).items():
        logs[f"loss_{name}"] = term.detach()
        loss = loss + term
    return loss


def mssd_step(model: MerModel, optimizer: torch.optim.Optimizer, inputs: ModelInputs, labels: torch.Tensor,
              keep: KeepMasks, cfg: TrainConfig, autocast_dtype: Optional[torch.dtype] = None,
              starts_group: bool = True, ends_group: bool = True) -> dict[str, torch.Tensor]:
    """One MSSD step: (1) complete pass, task loss, step; (2) gradients ZEROED, incomplete pass with
    the distillation terms against the (pre-update, detached) complete pass, step.

    Without MSSD (``cfg.mssd=False``) this is :func:`objective_step`: only the incomplete pass runs
    (``starts_group``/``ends_group``: this batch begins/ends a gradient-accumulation group).
    Returns the loss terms as detached scalars (no host sync).
    """
    if not cfg.mssd:
        return objective_step(model, optimizer, inputs, labels, keep, cfg, autocast_dtype, starts_group, ends_group)
    weights = effective_weights(cfg, model)
    logs: dict[str, torch.Tensor] = {}
    optimizer.zero_grad(set_to_none=True)
    with _autocast(inputs, autocast_dtype):
        complete = model(inputs)
        complete_loss = task_loss(model, cfg.task, complete, inputs, labels)
    complete_loss.backward()
    optimizer.step()
    logs["loss_complete"] = complete_loss.detach()
    optimizer.zero_grad(set_to_none=True)  # the reference code forgets this: stage-1 grads leak
    # Training masks drop tokens in practically every batch: always re-encode the incomplete text (no host sync
    # is spent checking whether the cached complete-text features could be reused).
    inputs_m = apply_missing(inputs.replace(text_features=None), keep)
    with _autocast(inputs, autocast_dtype):
        missing = model(inputs_m, need_recon="recon" in weights)
        loss = task_loss(model, cfg.task, missing, inputs_m, labels)
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
        loss = _add_objective_terms(model, loss, logs, ObjectiveBatch(
            missing.backbone, None, inputs, inputs_m, keep, labels, raw_output_loss(cfg.task), model.head))
    loss.backward()
    optimizer.step()
    logs["loss"] = loss.detach()
    return logs


def objective_step(model: MerModel, optimizer: torch.optim.Optimizer, inputs: ModelInputs, labels: torch.Tensor,
                   keep: KeepMasks, cfg: TrainConfig, autocast_dtype: Optional[torch.dtype] = None,
                   starts_group: bool = True, ends_group: bool = True) -> dict[str, torch.Tensor]:
    """One step of the backbone's own objective: task loss of the incomplete pass plus its objective
    terms (with a complete pass, sharing the step, when the backbone needs one). Gradients are zeroed
    only when the batch ``starts_group`` and the optimiser steps only when it ``ends_group``."""
    if starts_group:
        optimizer.zero_grad(set_to_none=True)
    inputs_m = apply_missing(inputs.replace(text_features=None), keep)
    logs: dict[str, torch.Tensor] = {}
    with _autocast(inputs, autocast_dtype):
        complete = model.backbone(inputs) if model.backbone.needs_complete_pass else None
        missing = model(inputs_m)
        loss = task_loss(model, cfg.task, missing, inputs_m, labels)
        logs["loss_missing"] = loss.detach()
        loss = _add_objective_terms(model, loss, logs, ObjectiveBatch(
            missing.backbone, complete, inputs, inputs_m, keep, labels, raw_output_loss(cfg.task), model.head))
    loss.backward()
    if ends_group:
        optimizer.step()
    logs["loss"] = loss.detach()
    return logs


@dataclass
class EpochRandomness:
    """The two generators of an epoch: batch order (CPU) and missing masks (training device)."""

    shuffle: torch.Generator
    masks: torch.Generator

    def states(self) -> dict[str, torch.Tensor]:
        states = {"torch": torch.get_rng_state(), "mask": self.masks.get_state(), "shuffle": self.shuffle.get_state()}
        if torch.cuda.is_available():
            states["cuda"] = torch.cuda.get_rng_state()
        return states

    def restore(self, states: dict[str, torch.Tensor]) -> None:
        torch.set_rng_state(states["torch"])
        self.masks.set_state(states["mask"])
        self.shuffle.set_state(states["shuffle"])
        if "cuda" in states and torch.cuda.is_available():
            torch.cuda.set_rng_state(states["cuda"])


def train_epoch(model: MerModel, optimizer: torch.optim.Optimizer, split: DeviceSplit, cfg: TrainConfig,
                rng: EpochRandomness, autocast_dtype: Optional[torch.dtype] = None, progress: bool = False,
                desc: str = "train", plan: EpochPlan = EpochPlan()) -> tuple[dict[str, torch.Tensor], int]:
    """One pass of training steps over ``split`` with fresh missing masks per batch (none in a
    ``plan.complete_only`` epoch).

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
    group = cfg.grad_accumulation
    bar = tqdm(order, total=n_batches, desc=desc, disable=not progress, leave=False)
    for i, idx in enumerate(bar):
        inputs = split.inputs(idx)
        if device.type == "cpu":
            inputs = inputs.trim_text()
        if plan.complete_only:
            keep = KeepMasks(inputs.text_mask > 0, inputs.audio_mask > 0, inputs.vision_mask > 0)
        else:
            keep = sample_training_keep(inputs.text_mask, inputs.audio_mask, inputs.vision_mask, rng.masks,
                                        cfg.train_missing)
        logs = mssd_step(model, optimizer, inputs, split.labels.index_select(0, idx), keep, cfg, autocast_dtype,
                         starts_group=i % group == 0, ends_group=(i + 1) % group == 0 or i + 1 == n_batches)
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + v
        if progress and device.type == "cpu":  # on a GPU, reading the loss would sync every batch
            bar.set_postfix(loss=f"{float(logs['loss']):.3f}")
    return sums, n_batches


def validate(run: Run, valid: DeviceSplit, train: Optional[DeviceSplit] = None) -> dict[str, Any]:
    """Complete-data validation: metrics at the tau chosen on this validation split, and the run's
    criterion (``val_selection``). ``train`` (inputs only, no labels) refreshes a centred counterfactual."""
    if train is not None:
        run.refresh_cf_centre(train)
    debiaser = run.debiaser
    tau, pred = debiaser.tune(run.model, valid)
    labels = valid.labels.cpu().numpy()
    scores = debiaser.scores(pred, tau)
    out: dict[str, Any] = {f"val_{k}": v for k, v in task_metrics(run.cfg.task, scores, labels).items()}
    out["val_loss"] = float(head_loss(run.cfg.task, torch.as_tensor(pred.log_probs), torch.as_tensor(labels)).item())
    out["val_tau"] = tau
    out.update(debiaser.select(scores, pred, labels).log_row())
    return out


@dataclass
class TrainState:
    """The trainer's bookkeeping, saved with the resume state after every epoch."""

    epoch: int = 0  # last completed epoch
    best_value: Optional[float] = None  # best validation criterion (val_selection) so far
    best_epoch: int = 0
    bad_epochs: int = 0  # selectable epochs since the last improvement (early stopping)
    stopped_early: bool = False
    seconds: float = 0.0  # training wall time so far, over all sessions
    log: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch (train_log.csv)

    def improves(self, value: float, metric: str) -> bool:
        if self.best_value is None:
            return True
        return is_better(value, self.best_value, metric)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainState":
        values = dict(values)
        if values.get("best_value") in (None, -math.inf, "-Infinity"):  # older runs stored -inf
            values["best_value"] = None
        return cls(**values)


@dataclass
class TrainResult:
    """What :func:`train` returns: where the run is and how its selection went."""

    run_dir: Path
    best_epoch: int
    best_value: float
    epochs_run: int
    stopped_early: bool
    seconds: float


def _write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def config_for_resume(run_dir: str | Path) -> TrainConfig:
    """The settings stored in an existing run directory (``--resume`` without ``--config``)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise RunError(f"{run_dir}: nothing to resume ('{CONFIG_FILE}' is missing)")
    return TrainConfig.from_file(path)


def _open_run(cfg: TrainConfig, data: MerDataset, run_dir: Path, resume: bool,
              encoder: Optional[TextEncoder]) -> Run:
    """Refuse a directory that holds another run (or, resuming, other settings), build the run and
    write its config."""
    config_path = run_dir / CONFIG_FILE
    if config_path.exists() and not resume:
        raise RunError(f"{run_dir}: already holds a run (config.json); pass --resume to continue it or choose another --out")
    continuing = resume and config_path.exists()
    changed = check_same_run(run_dir, read_json(config_path), cfg, dataset_key(data.path)) if continuing else {}
    run = Run.create(cfg, data, run_dir, encoder)
    run.meta["mssd_terms"] = sorted(effective_weights(cfg, run.model))
    if not continuing or changed:  # a plain resume leaves the stored record (and its command line) as it was
        run.save_config()
    return run


def _run_epoch(run: Run, optimizer, splits: tuple[DeviceSplit, DeviceSplit], rng: EpochRandomness,
               state: TrainState, progress: bool, log: logging.Logger) -> dict[str, Any]:
    """Train one epoch, validate, keep the checkpoint when it improves; returns the log row."""
    epoch, metric = state.epoch + 1, SELECTION_METRIC[run.cfg.task]
    plan = run.model.backbone.epoch_plan(epoch)
    t0 = time.time()
    sums, n_batches = train_epoch(run.model, optimizer, splits[0], run.cfg, rng, run.autocast_dtype,
                                  progress=progress, desc=f"epoch {epoch}", plan=plan)
    row: dict[str, Any] = {"epoch": epoch, **{k: float(v) / max(n_batches, 1) for k, v in sums.items()},
                           "train_seconds": round(time.time() - t0, 3)}
    if not math.isfinite(row["loss"]):  # the weights are NaN/inf now: stop before validating or saving them
        kept = f"model.safetensors keeps epoch {state.best_epoch}" if state.best_epoch else "no model was saved"
        raise RunError(f"{run.run_dir}: training diverged at epoch {epoch}: the mean training loss is {row['loss']} "
                       f"(try a lower lr / encoder_lr, or precision fp32); {kept}")
    row.update(validate(run, splits[1], splits[0]))
    value = row["val_selection"]
    improved = plan.selectable and state.improves(value, metric)
    if improved:
        state.best_value, state.best_epoch, state.bad_epochs = value, epoch, 0
        run.save_weights({"epoch": epoch, f"val_{metric}": row[f"val_{metric}"], "val_selection": value,
                          "val_tau": row["val_tau"]})
    elif plan.selectable:
        state.bad_epochs += 1
    state.epoch, state.stopped_early = epoch, state.bad_epochs >= run.cfg.patience
    state.log.append(row)
    line = (f"epoch {epoch:3d}  loss {row['loss']:.4f}  val {metric} {row[f'val_{metric}']:.2f}  "
            f"selection {value:.2f} ({row['val_selection_criterion']})  tau {row['val_tau']:.1f}  "
            f"({row['train_seconds']:.1f}s){' *' if improved else ''}")
    log.info(line)
    if progress:
        print(line, flush=True)
    return row


@contextmanager
def _text_log(path: Path) -> Iterator[logging.Logger]:
    """A logger appending to the run's ``train.log`` for the block (its own, unregistered: two runs
    in one process never write into each other's file); the file is closed at the end."""
    log = logging.Logger("cider_mer.train")
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    log.addHandler(handler)
    try:
        yield log
    finally:
        log.removeHandler(handler)
        handler.close()


def _settings_line(run: Run, state: TrainState, data: MerDataset) -> str:
    cfg, meta = run.cfg, run.meta
    start = f"resuming after epoch {state.epoch}" if state.epoch else "new run"
    return (f"start ({start}): command {command_line() or '(Python API)'}; model {cfg.model}, task {cfg.task}, "
            f"head {cfg.head}, mssd {cfg.mssd}, epochs {cfg.epochs}, patience {cfg.patience}, batch {cfg.batch_size}"
            f"{f' x {cfg.grad_accumulation} accumulated' if cfg.grad_accumulation > 1 else ''}, "
            f"lr {cfg.lr}, seed {cfg.seed}, precision {cfg.precision}, device {meta['device']}, "
            f"data {Path(data.path).name} ({meta['data']['sha256_16']}); version {meta['versions']['cider-mer']}, "
            f"git {meta['versions']['git']}")


def train(cfg: Optional[TrainConfig], data: MerDataset, run_dir: str | Path, resume: bool = False,
          progress: bool = True, encoder: Optional[TextEncoder] = None,
          epoch_callback: Optional[Callable[[int, dict[str, float]], None]] = None) -> TrainResult:
    """Train ``cfg`` on ``data`` (train and valid splits only) into ``run_dir``.

    ``cfg=None`` with ``resume`` continues with the settings stored in the run; a given ``cfg`` may
    change only :data:`~cider_mer.runs.RESUMABLE_SETTINGS` of a resumed run. ``epoch_callback(epoch,
    row)`` is called after each epoch (tuning prunes through it; it may raise to stop the run).

    The run directory is locked for the call (:func:`cider_mer.locks.claim_dir`: a second writer
    gets :class:`~cider_mer.locks.FolderInUseError`). A call that fails before its first epoch is
    saved removes what it created there, so the same command can simply run again.
    """
    run_dir = Path(run_dir)
    with claim_dir(run_dir, "run folder") as claim:
        cfg = cfg if cfg is not None else config_for_resume(run_dir)
        check_cache_dir(cfg, data.path)
        run = _open_run(cfg, data, run_dir, resume, encoder)
        with _text_log(run.path(TEXT_LOG_FILE)) as log:
            try:
                result = _train_loop(run, data, resume, progress, epoch_callback, claim, log)
            except BaseException as exc:
                log.info(f"stopped: {type(exc).__name__}: {str(exc).strip()[:300]}")
                raise
    return result


def _train_loop(run: Run, data: MerDataset, resume: bool, progress: bool,
                epoch_callback: Optional[Callable[[int, dict[str, float]], None]], claim: Claim,
                log: logging.Logger) -> TrainResult:
    """The epochs of :func:`train` (from the resume state, when there is one) until done or stopped."""
    cfg = run.cfg
    splits = (run.split(data, "train"), run.split(data, "valid"))
    optimizer = build_optimizer(run.model, cfg)
    set_tf32(run.device, cfg.precision == "bf16")
    if cfg.compile:
        run.model.backbone = torch.compile(run.model.backbone)  # type: ignore[assignment]
    rng = EpochRandomness(shuffle=torch.Generator().manual_seed(cfg.seed + 2),
                          masks=torch.Generator(device=run.device).manual_seed(cfg.seed + 1))
    state = TrainState()
    if resume and run.path(RESUME_FILE).exists():
        states, book = load_resume(run.path(RESUME_FILE), run.model, optimizer)
        rng.restore(states)
        state = TrainState.from_dict(book)
        state.stopped_early = state.bad_epochs >= cfg.patience  # the patience may have changed
    log.info(_settings_line(run, state, data))
    started = time.time() - state.seconds
    while state.epoch < cfg.epochs and not state.stopped_early:
        row = _run_epoch(run, optimizer, splits, rng, state, progress, log)
        state.seconds = time.time() - started
        _write_log(run.path(LOG_FILE), state.log)
        save_resume(run.path(RESUME_FILE), run.model, optimizer, not cfg.freeze_text_encoder, rng.states(),
                    asdict(state))
        claim.keep()  # a resumable epoch is on disk
        if epoch_callback is not None:
            epoch_callback(state.epoch, row)
    best = state.best_value if state.best_value is not None else float("nan")
    log.info(f"end: {state.epoch} epoch(s){' (stopped early)' if state.stopped_early else ''}; best val "
             f"{SELECTION_METRIC[cfg.task]} {best:.4f} at epoch {state.best_epoch}; {state.seconds:.1f}s of training "
             "in all")
    return TrainResult(run.run_dir, state.best_epoch, best, state.epoch, state.stopped_early, state.seconds)
