"""Bias-aware validation criterion (GroupDRO / JTT-style groups), read on VALIDATION only.

The bias-only model (:mod:`cider_mer.debias.bias_model`, fitted on the training split) is right on
the *bias-aligned* validation samples and wrong on the *bias-conflicting* ones. With the task's
selection metric M (Non0 Acc2 for binary, Acc7 for seven) on each group:

- ``plain``: M on all validation samples (the default, as before);
- ``group_mean``: (M(aligned) + M(conflicting)) / 2;
- ``worst_group``: the worse of the two.

Both group criteria fall back to ``plain`` (with a logged warning) when a group has fewer than
``min_group`` samples or its metric is undefined. Both are symmetric in the two groups and never
decrease when either group improves, so a model cannot gain by inverting the bias: the
conflicting group alone is never the criterion.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from cider_mer.data.labels import SELECTION_METRIC
from cider_mer.metrics import LOWER_IS_BETTER, task_metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SelectionResult:
    """One validation score and how it came about (the train log's ``val_selection`` and group columns)."""

    value: float  # the criterion's value, in the selection metric's units and orientation
    plain: float  # the selection metric on all samples
    criterion: str  # the criterion applied ("plain" after a fallback)
    sizes: tuple[int, int] = (0, 0)  # (aligned, conflicting) samples; (0, 0) without groups
    group_values: tuple[float, float] = (math.nan, math.nan)  # the metric on each group

    def log_row(self, prefix: str = "val_") -> dict[str, Any]:
        return {f"{prefix}selection": self.value, f"{prefix}selection_criterion": self.criterion,
                f"{prefix}aligned_n": self.sizes[0], f"{prefix}conflicting_n": self.sizes[1],
                f"{prefix}aligned_metric": self.group_values[0], f"{prefix}conflicting_metric": self.group_values[1]}


def combine_groups(criterion: str, aligned: float, conflicting: float, metric: str) -> float:
    """The group criterion of two group values (higher-is-better or lower-is-better per ``metric``)."""
    if criterion == "group_mean":
        return 0.5 * (aligned + conflicting)
    if criterion == "worst_group":
        return max(aligned, conflicting) if metric in LOWER_IS_BETTER else min(aligned, conflicting)
    raise ValueError(f"criterion must be 'group_mean' or 'worst_group', got '{criterion}'")


def select_value(task: str, scores: np.ndarray, labels: np.ndarray, aligned: Optional[np.ndarray],
                 criterion: str = "plain", min_group: int = 20, warn: bool = True) -> SelectionResult:
    """The validation criterion of (N, C) ``scores`` with (N,) ``labels``; ``aligned`` (N,) bool marks
    the samples the bias-only model gets right (``None``: no groups, plain). ``warn``: log a fallback."""
    metric = SELECTION_METRIC[task]
    plain = float(task_metrics(task, scores, labels)[metric])
    if criterion == "plain" or aligned is None:
        return SelectionResult(plain, plain, "plain")
    aligned = np.asarray(aligned, dtype=bool)
    sizes = (int(aligned.sum()), int((~aligned).sum()))
    values = tuple(float(task_metrics(task, scores[m], labels[m])[metric]) if m.any() else math.nan
                   for m in (aligned, ~aligned))
    if min(sizes) < min_group or not all(math.isfinite(v) for v in values):
        if warn:
            log.warning("selection '%s' falls back to plain: validation groups aligned/conflicting have %d/%d "
                        "samples (minimum %d) and %s values %s", criterion, sizes[0], sizes[1], min_group, metric,
                        values)
        return SelectionResult(plain, plain, "plain", sizes, values)  # type: ignore[arg-type]
    value = combine_groups(criterion, values[0], values[1], metric)
    return SelectionResult(value, plain, criterion, sizes, values)  # type: ignore[arg-type]
