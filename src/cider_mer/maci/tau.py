"""Counterfactual debiasing strength tau: prediction = log p(y|x) - tau * (log p(y|x_cf) - m).

``m`` is 0 (the paper) or, with ``cf_centre``, the (C,) mean counterfactual log-probability over
the TRAINING inputs, so the subtraction removes what the bias words say about *this* sample and
not a constant class offset. tau is chosen on the VALIDATION split (same missing mode, rate and
seed) by the run's validation criterion (the task's selection metric, or its group-balanced form,
see :mod:`cider_mer.debias.selection`); ties go to the smaller tau. The authors' "oracle" choice on
test labels per metric is available separately and is always labelled as such in results.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from cider_mer.data.labels import SELECTION_METRIC
from cider_mer.metrics import LOWER_IS_BETTER, task_metrics

TAU_GRID = tuple(round(0.1 * i, 1) for i in range(31))  # 0.0, 0.1, ..., 3.0


def debias(log_probs: np.ndarray, cf_log_probs: np.ndarray | None, tau: float,
           centre: Optional[np.ndarray] = None) -> np.ndarray:
    """(N, C) scores after counterfactual subtraction (tau = 0 or no CF: unchanged); ``centre`` (C,)
    is subtracted from the counterfactual log-probabilities first."""
    if cf_log_probs is None or tau == 0:
        return log_probs
    cf = cf_log_probs if centre is None else cf_log_probs - np.asarray(centre, dtype=cf_log_probs.dtype)[None, :]
    return log_probs - tau * cf


def select_tau(task: str, log_probs: np.ndarray, cf_log_probs: np.ndarray | None, labels: np.ndarray,
               grid=TAU_GRID, metric: str | None = None, centre: Optional[np.ndarray] = None,
               criterion: Optional[Callable[[np.ndarray], float]] = None) -> tuple[float, float]:
    """Best tau on the given (validation) predictions: returns (tau, criterion value at tau).

    ``criterion`` maps (N, C) debiased scores to a value in ``metric``'s orientation (default: the
    metric itself on ``labels``).
    """
    metric = metric or SELECTION_METRIC[task]
    if criterion is None:
        criterion = lambda scores: task_metrics(task, scores, labels)[metric]  # noqa: E731
    if cf_log_probs is None:
        return 0.0, criterion(log_probs)
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    best_tau, best = 0.0, -np.inf
    for tau in grid:
        value = criterion(debias(log_probs, cf_log_probs, tau, centre))
        if sign * value > best + 1e-9:
            best_tau, best = float(tau), sign * value
    return best_tau, sign * best
