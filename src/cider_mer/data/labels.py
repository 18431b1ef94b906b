"""Tasks and their labels (SPEC §1.2).

- ``binary``: trained as 3 classes, 0 negative / 1 neutral / 2 positive (the sign of the score).
- ``seven``: ``round(clip(y, -3, 3)) + 3`` with numpy's half-to-even rounding, 0..6.
- ``regression`` (MMSA's convention): one output, the score in [-3, 3] itself, trained with L1.
"""

from __future__ import annotations

import numpy as np

TASKS: dict[str, int] = {"binary": 3, "seven": 7, "regression": 1}  # task -> width of the model's output
CLASS_TASKS = ("binary", "seven")  # the tasks with classes (MACI's statistics, priors)
CLASS_NAMES: dict[str, list[str]] = {
    "binary": ["negative", "neutral", "positive"],
    "seven": ["-3", "-2", "-1", "0", "+1", "+2", "+3"],
    "regression": ["score"],
}
# Validation metric used for checkpoint selection, tau selection and tuning, per task (regression:
# Non0 Acc2 of the score's sign, the field's headline figure; MAE is reported beside it).
SELECTION_METRIC: dict[str, str] = {"binary": "non0_acc2", "seven": "acc7", "regression": "non0_acc2"}


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"unknown task '{task}': expected one of {sorted(TASKS)}")
    return task


def num_classes(task: str) -> int:
    return TASKS[check_task(task)]


def sign_classes(scores: np.ndarray) -> np.ndarray:
    """(N,) float scores -> (N,) int64 in {0 neg, 1 neu, 2 pos}."""
    s = np.asarray(scores, dtype=np.float64)
    return np.where(s < 0, 0, np.where(s > 0, 2, 1)).astype(np.int64)


def seven_classes(scores: np.ndarray) -> np.ndarray:
    """(N,) float scores -> (N,) int64 in 0..6, rounding half to even like the field's code."""
    return (np.round(np.clip(np.asarray(scores, dtype=np.float64), -3.0, 3.0)) + 3).astype(np.int64)


def task_labels(task: str, regression: np.ndarray, classification: np.ndarray) -> np.ndarray:
    """Labels for ``task`` from a split's regression and 3-class labels: (N,) int64 class ids, or
    (N,) float32 scores for the regression task."""
    if check_task(task) == "binary":
        return np.asarray(classification, dtype=np.int64)
    if task == "regression":
        return np.asarray(regression, dtype=np.float32)
    return seven_classes(regression)


def class_priors(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(C,) empirical class frequencies of integer labels."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(np.float64)
    return counts / max(counts.sum(), 1.0)
