"""The evaluation protocol (SPEC §6): one trained run, every missing rate, several seeds.

For each evaluation seed and each missing rate (or SMM subset) the same seeded, rate-nested
masks are drawn for the validation split and the evaluated split. tau is chosen on the
validation predictions at that mode, rate and seed, then applied to the evaluated split; with
``oracle_tau`` it is instead chosen per metric on the evaluated split's labels, as the authors
did, and the results say so. Metrics are averaged over seeds (mean and std) and AUILC is the
trapezoid over the rates. Prediction and tau use the run's own precision (its autocast setting).
For the tasks with named classes (``emotion``) the results also hold each class's F1 per point and
the confusion matrix at the complete-data point (rate 0, or SMM's LAV; else the lowest rate), the
mean over seeds; with ``oracle_tau`` both use the tau chosen for the selection metric.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from cider_mer.data.dataset import MerDataset
from cider_mer.data.labels import PER_CLASS_TASKS, SELECTION_METRIC
from cider_mer.evaluation.results import EvalResults, MetricCurve
from cider_mer.io_utils import run_record
from cider_mer.maci.tau import TAU_GRID
from cider_mer.metrics import (METRIC_NAMES, RATES_DEFAULT, auilc_over_rates, confusion, is_better,
                               per_class_f1, task_metrics)
from cider_mer.missing import (
    SMM_SUBSETS,
    EvalMissingness,
    MissingModeError,
    check_mode,
    check_modality_rates,
    point_label,
)
from cider_mer.runs import Run, describe_device

DEFAULT_EVAL_SEEDS = (0, 1, 2)


def _points(mode: str, rates: Optional[Sequence[float | Sequence[float]]]) -> list[Any]:
    """SMM subsets, rates, or (r_l, r_a, r_v) per-modality points (all points of one kind)."""
    if mode == "SMM":
        return ["LAV", *SMM_SUBSETS]
    rates = list(rates if rates is not None else RATES_DEFAULT)
    triples = [not isinstance(r, (int, float)) for r in rates]
    if any(triples):
        if not all(triples):
            raise MissingModeError("either every point has per-modality rates (text/audio/vision) or none has")
        return [tuple(round(float(x), 4) for x in check_modality_rates(mode, r)) for r in rates]
    return [round(float(r), 4) for r in rates]


def _modality_auilc_axis(points: list[tuple[float, float, float]]) -> Optional[list[float]]:
    """The mean rates of per-modality points when they lie on one axis (every modality's rate
    non-decreasing from point to point and the mean rising, so the masks are nested); else None."""
    ordered = all(all(b >= a for a, b in zip(p, q)) and sum(q) > sum(p) for p, q in zip(points, points[1:]))
    return [round(sum(p) / 3.0, 4) for p in points] if ordered else None


def _complete_point(points: list[Any]) -> int:
    """Index of the complete-data point: SMM's LAV or rate 0 (else the lowest (mean) rate)."""
    if points[0] == "LAV":
        return 0
    return int(np.argmin([sum(p) / len(p) if isinstance(p, tuple) else p for p in points]))


def best_over_tau(task: str, debiaser: Any, pred: Any, labels: np.ndarray) -> tuple[dict[str, float], dict[str, float]]:
    """Per metric, the best value over the tau grid on the evaluated labels (the authors' protocol),
    scoring each tau as the run's debiaser does (its counterfactual centre included)."""
    grid = TAU_GRID if pred.cf_log_probs is not None else (0.0,)
    best: dict[str, float] = {}
    taus: dict[str, float] = {}
    for tau in grid:
        for k, v in task_metrics(task, debiaser.scores(pred, tau), labels).items():
            if k not in best or is_better(v, best[k], k):
                best[k], taus[k] = v, float(tau)
    return best, taus


def evaluate(run: Run, data: MerDataset, split: str = "test", mode: str = "RMFM",
             rates: Optional[Sequence[float | Sequence[float]]] = None, seeds: Sequence[int] = DEFAULT_EVAL_SEEDS,
             oracle_tau: bool = False, progress: bool = True) -> EvalResults:
    """Run the protocol on ``split`` of ``data`` (tau from its ``valid`` split).

    ``rates`` are missing rates, or for RMFM_same (r_l, r_a, r_v) per-modality points. Their AUILC
    is taken over the mean rate when the points lie on one axis (each modality's rate non-decreasing,
    the mean rising: nested masks), and not reported otherwise.
    """
    from tqdm.auto import tqdm

    check_mode(mode, data.aligned)
    run.check_compatible(data)
    task, points, t0 = run.cfg.task, _points(mode, rates), time.time()
    target = run.split(data, split)
    valid = target if split == "valid" else run.split(data, "valid")
    debiaser = run.debiaser
    names = METRIC_NAMES[task]
    per_seed = {k: np.zeros((len(seeds), len(points))) for k in names}
    taus = np.zeros((len(seeds), len(points)))
    oracle_taus = {k: np.zeros((len(seeds), len(points))) for k in names}
    y_valid, y_target = valid.labels.cpu().numpy(), target.labels.cpu().numpy()
    by_class, n_cls, complete = task in PER_CLASS_TASKS, run.shapes.num_classes, _complete_point(points)
    class_f1 = np.zeros((len(seeds), len(points), n_cls))
    counts = np.zeros((len(seeds), n_cls, n_cls))
    bar = tqdm(total=len(seeds) * len(points), desc=f"eval {mode}", disable=not progress, leave=False)
    for si, seed in enumerate(seeds):
        valid_masks = EvalMissingness(mode, *valid.padding_masks(), seed=seed, aligned=data.aligned)
        target_masks = EvalMissingness(mode, *target.padding_masks(), seed=seed, aligned=data.aligned)
        for pi, point in enumerate(points):
            on_target = debiaser.predict(run.model, target, target_masks.masks(point))
            if oracle_tau:
                values, chosen = best_over_tau(task, debiaser, on_target, y_target)
                for k in names:
                    oracle_taus[k][si, pi] = chosen[k]
                scores = debiaser.scores(on_target, chosen[SELECTION_METRIC[task]])
            else:
                tau = 0.0
                if debiaser.active:
                    tau = debiaser.choose_tau(debiaser.predict(run.model, valid, valid_masks.masks(point)), y_valid)
                taus[si, pi] = tau
                scores = debiaser.scores(on_target, tau)
                values = task_metrics(task, scores, y_target)
            for k in names:
                per_seed[k][si, pi] = values[k]
            if by_class:
                point_counts = confusion(scores, y_target)
                class_f1[si, pi] = per_class_f1(point_counts)
                if pi == complete:
                    counts[si] = point_counts
            bar.update(1)
    bar.close()
    numeric = mode != "SMM"
    record = run_record(describe_device(run.device))
    per_modality = numeric and bool(points) and isinstance(points[0], tuple)
    axis = _modality_auilc_axis(points) if per_modality else [float(p) for p in points] if numeric else None
    results = EvalResults(
        missing_mode=mode, split=split,
        rates=([round(sum(p) / 3.0, 4) for p in points] if per_modality else [float(p) for p in points]) if numeric
        else [],
        points=[point_label(p) for p in points], seeds=[int(s) for s in seeds], task=task,
        modality_rates=[list(p) for p in points] if per_modality else None,
        metrics={k: MetricCurve(v.mean(0).tolist(), v.std(0).tolist(), v.tolist()) for k, v in per_seed.items()},
        tau_selection=("oracle: chosen per metric on the evaluated split's labels" if oracle_tau
                       else ("validation split, same mode/rate/seed, by " + SELECTION_METRIC[task]
                             if debiaser.active else "none (no counterfactual text)")),
        tau_mean=None if oracle_tau else taus.mean(0).tolist(),
        tau_per_seed=None if oracle_tau else taus.tolist(),
        oracle_tau={k: v.mean(0).tolist() for k, v in oracle_taus.items()} if oracle_tau else None,
        config={k: run.meta[k] for k in ("train", "model_config", "shapes", "text_encoder", "seed", "data")
                if k in run.meta},
        run_dir=run.run_dir.name,
        data={"file": Path(data.path).name if data.path else None, "sizes": {k: s.n for k, s in data.splits.items()}},
        versions=record["versions"], seconds=round(time.time() - t0, 2), command=record["command"],
        device=record["device"],
    )
    if by_class:
        results.class_names = run.class_names
        results.per_class_f1 = {name: MetricCurve(class_f1[:, :, k].mean(0).tolist(), class_f1[:, :, k].std(0).tolist(),
                                                  class_f1[:, :, k].tolist()) for k, name in enumerate(run.class_names)}
        results.confusion, results.confusion_point = counts.mean(0).tolist(), str(points[complete])
    if axis is not None and len(points) >= 2:
        for k, v in per_seed.items():
            a = np.array([auilc_over_rates(row, axis) for row in v])
            results.auilc[k], results.auilc_std[k] = float(a.mean()), float(a.std())
    return results
