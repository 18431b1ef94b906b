"""Metrics of the field (SPEC §1.2, §6), all in percent.

binary (3 logits: neg / neu / pos):
- ``non0_acc2`` / ``non0_f1``: neutral *samples* removed, argmax over all three logits, so a
  neutral prediction counts as wrong (the paper's Acc2 / F1);
- ``has0_acc2`` / ``has0_f1``: argmax over the neg/pos logits only; truth is neg vs non-neg;
- ``acc3`` / ``f1_3``: argmax over all three on every sample.
seven: ``acc7`` / ``f1_7``, plus ``mae`` / ``corr`` of the expected score sum_k p_k (k - 3).
regression (one score, MMSA's convention): Has0 / Non0 Acc2 and F1 from the score's sign
(Has0: negative vs non-negative; Non0: neutral samples removed, score < 0 vs > 0, a 0 prediction
counts as positive as in MMSA), ``acc5`` / ``acc7`` from rounding the score clipped to [-2, 2] /
[-3, 3], ``mae`` and ``corr``.
sims_binary (2 logits, the CH-SIMS Acc2 bins): ``acc2`` / ``f1``.
sims_regression (one score, MMSA's CH-SIMS evaluation): prediction and truth clipped to [-1, 1],
``acc2`` / ``acc3`` / ``acc5`` from the CH-SIMS bins (:func:`cider_mer.data.labels.sims_classes`),
``f1`` over the Acc2 bins, ``mae`` and ``corr``.
emotion (C logits): ``acc``, ``f1_weighted`` and ``f1_macro`` (over the classes present in truth or
prediction); :func:`confusion` and :func:`per_class_f1` break them down by class.
F1 is scikit-learn's ``f1_score(y_true, y_pred, average="weighted")`` unless named macro.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from cider_mer.data.labels import SELECTION_METRIC, check_task, sims_classes

RATES_DEFAULT = tuple(round(0.1 * i, 1) for i in range(11))

METRIC_NAMES = {
    "binary": ("non0_acc2", "non0_f1", "has0_acc2", "has0_f1", "acc3", "f1_3"),
    "seven": ("acc7", "f1_7", "mae", "corr"),
    "regression": ("non0_acc2", "non0_f1", "has0_acc2", "has0_f1", "acc5", "acc7", "mae", "corr"),
    "sims_binary": ("acc2", "f1"),
    "sims_regression": ("acc2", "acc3", "acc5", "f1", "mae", "corr"),
    "emotion": ("acc", "f1_weighted", "f1_macro"),
}
# Metrics where lower is better (everything else: higher is better).
LOWER_IS_BETTER = frozenset({"mae"})


def is_better(value: float, than: float, metric: str) -> bool:
    """Whether ``value`` strictly beats ``than`` on ``metric`` (lower for MAE, higher otherwise)."""
    return value < than if metric in LOWER_IS_BETTER else value > than


def selection_direction(task: str) -> str:
    """'minimize' when the task's selection metric is lower-is-better (regression: MAE), else 'maximize'."""
    return "minimize" if SELECTION_METRIC[task] in LOWER_IS_BETTER else "maximize"


def _pct(x: float) -> float:
    return float(100.0 * x)


def _weighted_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    if len(y_true) == 0:
        return float("nan")
    return _pct(f1_score(y_true, y_pred, average="weighted", zero_division=0))


def _accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return _pct(accuracy_score(y_true, y_pred)) if len(y_true) else float("nan")


def binary_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """scores (N, 3) logits or log-probabilities; labels (N,) in {0, 1, 2}."""
    scores, labels = np.asarray(scores), np.asarray(labels, dtype=np.int64)
    pred3 = scores.argmax(axis=1)
    non0 = labels != 1
    has0_pred = (scores[:, 2] > scores[:, 0]).astype(np.int64)  # argmax over {neg, pos}; ties -> neg
    has0_true = (labels != 0).astype(np.int64)
    return {
        "non0_acc2": _accuracy(labels[non0], pred3[non0]),
        "non0_f1": _weighted_f1(labels[non0], pred3[non0]),
        "has0_acc2": _accuracy(has0_true, has0_pred),
        "has0_f1": _weighted_f1(has0_true, has0_pred),
        "acc3": _accuracy(labels, pred3),
        "f1_3": _weighted_f1(labels, pred3),
    }


def regression_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Mean absolute error and Pearson correlation of scores (not in percent)."""
    pred, truth = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    mae = float(np.abs(pred - truth).mean()) if len(pred) else float("nan")
    if len(pred) < 2 or pred.std() == 0 or truth.std() == 0:
        corr = 0.0
    else:
        corr = float(np.corrcoef(pred, truth)[0, 1])
    return {"mae": mae, "corr": corr}


def seven_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """scores (N, 7) log-probabilities (or logits); labels (N,) in 0..6."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    pred = scores.argmax(axis=1)
    probs = np.exp(scores - scores.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    expected = probs @ (np.arange(7) - 3.0)
    return {
        "acc7": _accuracy(labels, pred),
        "f1_7": _weighted_f1(labels, pred),
        **regression_metrics(expected, labels - 3.0),
    }


def score_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """pred (N, 1) or (N,) predicted scores; truth (N,) scores in [-3, 3]."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    truth = np.asarray(truth, dtype=np.float64)
    non0 = truth != 0
    has0_true, has0_pred = truth >= 0, pred >= 0
    non0_true, non0_pred = truth[non0] > 0, pred[non0] >= 0
    rounded = lambda x, r: np.round(np.clip(x, -r, r))  # noqa: E731
    return {
        "non0_acc2": _accuracy(non0_true, non0_pred),
        "non0_f1": _weighted_f1(non0_true, non0_pred),
        "has0_acc2": _accuracy(has0_true, has0_pred),
        "has0_f1": _weighted_f1(has0_true, has0_pred),
        "acc5": _accuracy(rounded(truth, 2), rounded(pred, 2)),
        "acc7": _accuracy(rounded(truth, 3), rounded(pred, 3)),
        **regression_metrics(pred, truth),
    }


def sims_binary_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """scores (N, 2) log-probabilities (or logits); labels (N,) CH-SIMS Acc2 bins in {0, 1}."""
    pred, labels = np.asarray(scores).argmax(axis=1), np.asarray(labels, dtype=np.int64)
    return {"acc2": _accuracy(labels, pred), "f1": _weighted_f1(labels, pred)}


def sims_score_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """pred (N, 1) or (N,) predicted scores; truth (N,) scores in [-1, 1] (both clipped to [-1, 1])."""
    pred = np.clip(np.asarray(pred, dtype=np.float64).reshape(-1), -1.0, 1.0)
    truth = np.clip(np.asarray(truth, dtype=np.float64), -1.0, 1.0)
    bins = {k: (sims_classes(truth, k), sims_classes(pred, k)) for k in ("acc2", "acc3", "acc5")}
    return {
        **{k: _accuracy(*bins[k]) for k in ("acc2", "acc3", "acc5")},
        "f1": _weighted_f1(*bins["acc2"]),
        **regression_metrics(pred, truth),
    }


def emotion_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """scores (N, C) log-probabilities (or logits); labels (N,) class ids in 0..C-1."""
    pred, labels = np.asarray(scores).argmax(axis=1), np.asarray(labels, dtype=np.int64)
    macro = _pct(f1_score(labels, pred, average="macro", zero_division=0)) if len(labels) else float("nan")
    return {"acc": _accuracy(labels, pred), "f1_weighted": _weighted_f1(labels, pred), "f1_macro": macro}


def confusion(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(C, C) int64 counts, row = true class, column = predicted class, for (N, C) scores."""
    scores = np.asarray(scores)
    c = scores.shape[1]
    return confusion_matrix(np.asarray(labels, dtype=np.int64), scores.argmax(axis=1), labels=np.arange(c))


def per_class_f1(counts: np.ndarray) -> np.ndarray:
    """(C,) F1 in percent of each class from a (C, C) confusion matrix: 2TP / (2TP + FP + FN); NaN for
    a class that is neither in the truth nor predicted."""
    counts = np.asarray(counts, dtype=np.float64)
    tp = np.diag(counts)
    denom = counts.sum(axis=0) + counts.sum(axis=1)  # = 2TP + FP + FN
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 100.0 * 2.0 * tp / denom, np.nan)


_TASK_METRICS = {"binary": binary_metrics, "seven": seven_metrics, "regression": score_metrics,
                 "sims_binary": sims_binary_metrics, "sims_regression": sims_score_metrics,
                 "emotion": emotion_metrics}


def task_metrics(task: str, scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """All metrics of ``task`` for (N, C) scores and (N,) labels (class ids, or scores for regression)."""
    return _TASK_METRICS[check_task(task)](scores, labels)


def auilc(values, step: float = 0.1) -> float:
    """Area under the indicator-missing-rate curve: the trapezoid rule with a fixed step.

    With 11 values at rates 0.0, 0.1, ..., 1.0 this is what the paper's Table IV reports.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or len(v) < 2:
        raise ValueError(f"AUILC needs at least two per-rate values, got {v.shape}")
    return float(((v[:-1] + v[1:]) * step / 2.0).sum())


def auilc_over_rates(values, rates) -> float:
    """Trapezoid over arbitrary (sorted) rates; equals :func:`auilc` for the 11 standard rates."""
    v, r = np.asarray(values, dtype=np.float64), np.asarray(rates, dtype=np.float64)
    if len(v) != len(r) or len(v) < 2:
        raise ValueError("AUILC needs one value per rate and at least two rates")
    return float(((v[:-1] + v[1:]) * np.diff(r) / 2.0).sum())
