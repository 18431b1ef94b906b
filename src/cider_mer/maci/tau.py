"""Counterfactual debiasing strength tau: prediction = log p(y|x) - tau * log p(y|x_cf).

tau is chosen on the VALIDATION split (same missing mode, rate and seed) by the task's selection
metric; ties go to the smaller tau. The authors' "oracle" choice on test labels per metric is
available separately and is always labelled as such in results.
"""

from __future__ import annotations

import numpy as np

from cider_mer.data.labels import SELECTION_METRIC
from cider_mer.metrics import LOWER_IS_BETTER, task_metrics

TAU_GRID = tuple(round(0.1 * i, 1) for i in range(31))  # 0.0, 0.1, ..., 3.0


def debias(log_probs: np.ndarray, cf_log_probs: np.ndarray | None, tau: float) -> np.ndarray:
    """(N, C) scores after counterfactual subtraction (tau = 0 or no CF: unchanged)."""
    if cf_log_probs is None or tau == 0:
        return log_probs
    return log_probs - tau * cf_log_probs


def select_tau(task: str, log_probs: np.ndarray, cf_log_probs: np.ndarray | None, labels: np.ndarray,
               grid=TAU_GRID, metric: str | None = None) -> tuple[float, float]:
    """Best tau on the given (validation) predictions: returns (tau, metric value at tau)."""
    metric = metric or SELECTION_METRIC[task]
    if cf_log_probs is None:
        return 0.0, task_metrics(task, log_probs, labels)[metric]
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    best_tau, best = 0.0, -np.inf
    for tau in grid:
        value = task_metrics(task, debias(log_probs, cf_log_probs, tau), labels)[metric]
        if sign * value > best + 1e-9:
            best_tau, best = float(tau), sign * value
    return best_tau, sign * best
