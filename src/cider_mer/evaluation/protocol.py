"""The evaluation protocol (SPEC §6): one trained run, every missing rate, several seeds.

For each evaluation seed and each missing rate (or SMM subset) the same seeded, rate-nested
masks are drawn for the validation split and the evaluated split. tau is chosen on the
validation predictions at that mode, rate and seed, then applied to the evaluated split; with
``oracle_tau`` it is instead chosen per metric on the evaluated split's labels, as the authors
did, and the results say so. Metrics are averaged over seeds (mean and std) and AUILC is the
trapezoid over the rates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from cider_mer.data.dataset import MerDataset
from cider_mer.data.labels import SELECTION_METRIC
from cider_mer.evaluation.predict import predict
from cider_mer.io_utils import read_json, versions
from cider_mer.maci.counterfactual import BiasVocabulary
from cider_mer.maci.tau import TAU_GRID, debias, select_tau
from cider_mer.metrics import LOWER_IS_BETTER, METRIC_NAMES, RATES_DEFAULT, auilc_over_rates, task_metrics
from cider_mer.missing import SMM_SUBSETS, EvalMissingness, check_mode
from cider_mer.models.interface import MerModel
from cider_mer.models.interface import DataShapes
from cider_mer.models.registry import build_model
from cider_mer.text.cache import cached_text_features
from cider_mer.text.encoder import TextEncoder
from cider_mer.training.batches import DeviceSplit
from cider_mer.training.checkpoint import load_model
from cider_mer.training.config import TrainConfig
from cider_mer.training.trainer import (CONFIG_FILE, MACI_FILE, MODEL_FILE, RunError, configure_encoder,
                                        resolve_device)

DEFAULT_EVAL_SEEDS = (0, 1, 2)


@dataclass
class LoadedRun:
    run_dir: Path
    meta: dict[str, Any]
    cfg: TrainConfig
    shapes: DataShapes
    model: MerModel
    encoder: TextEncoder
    cf_vocab: Optional[BiasVocabulary]
    device: torch.device


def load_run(run_dir: str | Path, device: str = "auto", encoder: Optional[TextEncoder] = None) -> LoadedRun:
    """Rebuild a trained model from its run directory (config.json + model.safetensors)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run directory")
    for name in (CONFIG_FILE, MODEL_FILE):
        if not (run_dir / name).is_file():
            raise RunError(f"{run_dir}: not a finished run: '{name}' is missing (train first with `cider train --out {run_dir}`)")
    try:
        meta = read_json(run_dir / CONFIG_FILE)
        cfg = TrainConfig.from_dict(meta["train"], source=str(run_dir / CONFIG_FILE))
        shapes = DataShapes(**meta["shapes"])
    except (ValueError, KeyError, TypeError) as exc:
        raise RunError(f"{run_dir / CONFIG_FILE}: unreadable run config ({exc})") from exc
    dev = resolve_device(device)
    encoder = configure_encoder(encoder or TextEncoder.from_pretrained(cfg.text_encoder, frozen=cfg.freeze_text_encoder),
                                cfg)
    if encoder.dim != shapes.text_dim:
        raise RunError(f"{run_dir}: the run used a {shapes.text_dim}-d text encoder, '{cfg.text_encoder}' is {encoder.dim}-d")
    model = build_model(cfg.model, shapes, cfg.model_config, text_encoder=encoder, maci=cfg.head == "mcm")
    load_model(run_dir / MODEL_FILE, model)
    vocab = None
    if cfg.counterfactual:
        if not (run_dir / MACI_FILE).is_file():
            raise RunError(f"{run_dir}: '{MACI_FILE}' is missing although the run uses counterfactual text")
        vocab = BiasVocabulary.from_dict(read_json(run_dir / MACI_FILE)["vocabulary"])
    model.to(dev).eval()
    return LoadedRun(run_dir, meta, cfg, shapes, model, encoder, vocab, dev)


def check_compatible(run: LoadedRun, data: MerDataset) -> None:
    """Cross-dataset evaluation needs the same feature dims and alignment as training."""
    s = run.shapes
    got = {"audio_dim": data.audio_dim, "vision_dim": data.vision_dim, "aligned": data.aligned}
    want = {"audio_dim": s.audio_dim, "vision_dim": s.vision_dim, "aligned": s.aligned}
    bad = {k: (want[k], got[k]) for k in want if want[k] != got[k]}
    if bad:
        detail = ", ".join(f"{k}: run {w}, file {g}" for k, (w, g) in bad.items())
        raise RunError(f"{data.path}: does not fit the run in {run.run_dir} ({detail}); cross-dataset evaluation "
                       "needs equal feature dims and the same alignment")


def eval_split(run: LoadedRun, data: MerDataset, name: str, data_path: Optional[str | Path]) -> DeviceSplit:
    split = data[name]
    feats = None
    if run.cfg.freeze_text_encoder and data_path is not None:
        feats = cached_text_features(data_path, name, split.text_ids, split.text_mask, split.text_segment,
                                     run.encoder, device=run.device, batch_size=run.cfg.eval_batch_size)
    return DeviceSplit.from_split(split, run.cfg.task, run.device, feats)


def _points(mode: str, rates: Optional[Sequence[float]]) -> list[Any]:
    if mode == "SMM":
        return ["LAV", *SMM_SUBSETS]
    return [round(float(r), 4) for r in (rates if rates is not None else RATES_DEFAULT)]


def _oracle(task: str, lp: np.ndarray, cf: Optional[np.ndarray], labels: np.ndarray) -> tuple[dict[str, float], dict[str, float]]:
    """Per metric, the best value over the tau grid on the evaluated labels (the authors' protocol)."""
    grid = TAU_GRID if cf is not None else (0.0,)
    best: dict[str, float] = {}
    taus: dict[str, float] = {}
    for tau in grid:
        for k, v in task_metrics(task, debias(lp, cf, tau), labels).items():
            if k not in best or (v < best[k] if k in LOWER_IS_BETTER else v > best[k]):
                best[k], taus[k] = v, float(tau)
    return best, taus


def evaluate(run: LoadedRun, data: MerDataset, data_path: Optional[str | Path] = None, split: str = "test",
             mode: str = "RMFM", rates: Optional[Sequence[float]] = None,
             seeds: Sequence[int] = DEFAULT_EVAL_SEEDS, oracle_tau: bool = False,
             progress: bool = True) -> dict[str, Any]:
    """Run the protocol and return the results dict (see :func:`cider_mer.evaluation.report.write_report`)."""
    check_mode(mode, data.aligned)
    check_compatible(run, data)
    if split not in data.splits:
        raise RunError(f"unknown split '{split}': expected one of {sorted(data.splits)}")
    task = run.cfg.task
    points = _points(mode, rates)
    t0 = time.time()
    target = eval_split(run, data, split, data_path)
    valid = target if split == "valid" else eval_split(run, data, "valid", data_path)
    cf_ids = None if run.cf_vocab is None else torch.as_tensor(run.cf_vocab.token_ids, device=run.device)
    names = METRIC_NAMES[task]
    per_seed = {k: np.zeros((len(seeds), len(points))) for k in names}
    taus = np.zeros((len(seeds), len(points)))
    oracle_taus: dict[str, np.ndarray] = {k: np.zeros((len(seeds), len(points))) for k in names}
    y_valid, y_target = valid.labels.cpu().numpy(), target.labels.cpu().numpy()
    from tqdm.auto import tqdm

    bar = tqdm(total=len(seeds) * len(points), desc=f"eval {mode}", disable=not progress, leave=False)
    for si, seed in enumerate(seeds):
        em_valid = EvalMissingness(mode, *valid.padding_masks(), seed=seed, aligned=data.aligned)
        em_target = EvalMissingness(mode, *target.padding_masks(), seed=seed, aligned=data.aligned)
        for pi, point in enumerate(points):
            pt = predict(run.model, target, em_target.masks(point), cf_ids, run.cfg.eval_batch_size)
            if oracle_tau:
                values, chosen = _oracle(task, pt.log_probs, pt.cf_log_probs, y_target)
                for k in names:
                    oracle_taus[k][si, pi] = chosen[k]
            else:
                if cf_ids is None:
                    tau = 0.0
                else:
                    pv = predict(run.model, valid, em_valid.masks(point), cf_ids, run.cfg.eval_batch_size)
                    tau, _ = select_tau(task, pv.log_probs, pv.cf_log_probs, y_valid)
                taus[si, pi] = tau
                values = task_metrics(task, debias(pt.log_probs, pt.cf_log_probs, tau), y_target)
            for k in names:
                per_seed[k][si, pi] = values[k]
            bar.update(1)
    bar.close()
    numeric = mode != "SMM"
    results: dict[str, Any] = {
        "missing_mode": mode,
        "split": split,
        "rates": [float(p) for p in points] if numeric else [],
        "points": [str(p) for p in points],
        "seeds": [int(s) for s in seeds],
        "task": task,
        "metrics": {k: {"mean": v.mean(0).tolist(), "std": v.std(0).tolist(), "per_seed": v.tolist()}
                    for k, v in per_seed.items()},
        "auilc": {}, "auilc_std": {},
        "tau_selection": "oracle: chosen per metric on the evaluated split's labels" if oracle_tau
        else ("validation split, same mode/rate/seed, by " + SELECTION_METRIC[task] if cf_ids is not None
              else "none (no counterfactual text)"),
        "tau": ({k: v.mean(0).tolist() for k, v in oracle_taus.items()} if oracle_tau
                else {"mean": taus.mean(0).tolist(), "per_seed": taus.tolist()}),
        "config": {k: run.meta[k] for k in ("train", "model_config", "shapes", "text_encoder", "seed", "data")
                   if k in run.meta},
        "run_dir": run.run_dir.name,
        "data": {"file": Path(data_path).name if data_path else None, "sizes": {k: s.n for k, s in data.splits.items()}},
        "versions": versions(),
        "seconds": round(time.time() - t0, 2),
    }
    if numeric and len(points) >= 2:
        for k, v in per_seed.items():
            a = np.array([auilc_over_rates(row, points) for row in v])
            results["auilc"][k], results["auilc_std"][k] = float(a.mean()), float(a.std())
    return results
