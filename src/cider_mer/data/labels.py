"""Label conventions, tasks and their labels (SPEC §1.2, §12).

A dataset file declares its *label convention* (the ``meta`` entry of the file, see
:mod:`cider_mer.data.dataset`; a file without it is ``mosi``). Each task belongs to exactly one
convention, so a task's name alone fixes its labels, model output width, metrics and selection
metric everywhere (training, tau, tuning, reports):

================  ===============================  ============================================
convention        labels in the file               tasks (model output width)
================  ===============================  ============================================
``mosi``          sentiment score in [-3, 3]       ``binary`` (3), ``seven`` (7), ``regression`` (1)
``sims``          sentiment score in [-1, 1]       ``sims_binary`` (2), ``sims_regression`` (1)
``categorical``   class id 0..C-1 + class names    ``emotion`` (C, the number of class names)
================  ===============================  ============================================

- ``binary``: trained as 3 classes, 0 negative / 1 neutral / 2 positive (the sign of the score).
- ``seven``: ``round(clip(y, -3, 3)) + 3`` with numpy's half-to-even rounding, 0..6.
- ``regression`` (MMSA's convention): one output, the score in [-3, 3] itself, trained with L1.
- ``sims_binary``: 2 classes from the CH-SIMS Acc2 bins, [-1, 0] -> 0 and (0, 1] -> 1 (a score
  of 0 is negative, as in MMSA's SIMS evaluation); reported as Acc2 and F1.
- ``sims_regression``: one output, the score in [-1, 1], trained with L1; reported as the field
  reports CH-SIMS: Acc2, Acc3, Acc5, F1, MAE, Corr.
- ``emotion``: the file's class ids (IEMOCAP, MELD, MER: neutral / joy / anger ...).

The CH-SIMS bins follow MMSA (thuiar/MMSA, ``MetricsTop`` SIMS regression evaluation): intervals
closed on the right, Acc2 [-1, 0], (0, 1]; Acc3 [-1, -0.1], (-0.1, 0.1], (0.1, 1]; Acc5
[-1, -0.7], (-0.7, -0.1], (-0.1, 0.1], (0.1, 0.7], (0.7, 1]. Scores are compared with the edges at
float32, the precision of the stored labels, so a label of 0.1 falls in (-0.1, 0.1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cider_mer.errors import CiderError

# task -> width of the model's output (None: the dataset's number of classes)
TASKS: dict[str, int | None] = {"binary": 3, "seven": 7, "regression": 1, "sims_binary": 2, "sims_regression": 1,
                                "emotion": None}
# convention -> its tasks, in the order the help text lists them
CONVENTION_TASKS: dict[str, tuple[str, ...]] = {
    "mosi": ("binary", "seven", "regression"),
    "sims": ("sims_binary", "sims_regression"),
    "categorical": ("emotion",),
}
CONVENTIONS = tuple(CONVENTION_TASKS)
# convention -> range of its sentiment scores (categorical files have none)
SCORE_RANGE: dict[str, tuple[float, float]] = {"mosi": (-3.0, 3.0), "sims": (-1.0, 1.0)}
REGRESSION_TASKS = ("regression", "sims_regression")  # one score, L1 loss, no MACI
# The tasks whose reports break results down by class (per-class F1 and a confusion matrix).
PER_CLASS_TASKS = ("emotion",)
CLASS_NAMES: dict[str, list[str]] = {  # tasks with fixed classes; emotion's come from the data
    "binary": ["negative", "neutral", "positive"],
    "seven": ["-3", "-2", "-1", "0", "+1", "+2", "+3"],
    "regression": ["score"],
    "sims_binary": ["negative", "positive"],
    "sims_regression": ["score"],
}
# Validation metric used for checkpoint selection, tau selection and tuning, per task (regression:
# the lowest MAE, MMSA's key metric for its regression runs -- Acc2 of the score's sign is flat while
# every prediction has one sign, which stopped runs at such epochs; emotion: weighted F1, the
# headline figure of IEMOCAP / MELD work, robust to their class imbalance).
SELECTION_METRIC: dict[str, str] = {"binary": "non0_acc2", "seven": "acc7", "regression": "mae",
                                    "sims_binary": "acc2", "sims_regression": "mae", "emotion": "f1_weighted"}
# The CH-SIMS bins as inner edges of right-closed intervals (module docstring).
SIMS_EDGES: dict[str, tuple[float, ...]] = {"acc2": (0.0,), "acc3": (-0.1, 0.1), "acc5": (-0.7, -0.1, 0.1, 0.7)}
TASK_CONVENTION = {task: conv for conv, tasks in CONVENTION_TASKS.items() for task in tasks}


class LabelError(CiderError):
    """A task does not fit the labels at hand (their convention or their classes)."""


def check_task(task: str) -> str:
    if task not in TASKS:
        raise LabelError(f"unknown task '{task}': expected one of {sorted(TASKS)}")
    return task


def is_regression(task: str) -> bool:
    """Whether ``task`` predicts one score (L1 loss) rather than classes."""
    return check_task(task) in REGRESSION_TASKS


def num_classes(task: str) -> int:
    """The output width of a task with fixed classes (see :meth:`LabelConvention.num_classes`)."""
    width = TASKS[check_task(task)]
    if width is None:
        raise LabelError(f"task '{task}' takes its number of classes from a dataset's class names; "
                         "give the data (--data)")
    return width


def sign_classes(scores: np.ndarray) -> np.ndarray:
    """(N,) float scores -> (N,) int64 in {0 neg, 1 neu, 2 pos}."""
    s = np.asarray(scores, dtype=np.float64)
    return np.where(s < 0, 0, np.where(s > 0, 2, 1)).astype(np.int64)


def seven_classes(scores: np.ndarray) -> np.ndarray:
    """(N,) float scores -> (N,) int64 in 0..6, rounding half to even like the field's code."""
    return (np.round(np.clip(np.asarray(scores, dtype=np.float64), -3.0, 3.0)) + 3).astype(np.int64)


def sims_classes(scores: np.ndarray, bins: str) -> np.ndarray:
    """(N,) scores in [-1, 1] -> (N,) int64 bin ids of the CH-SIMS ``bins`` (acc2, acc3 or acc5).

    Right-closed intervals: the id is the number of inner edges strictly below the score, both
    compared at float32.
    """
    edges = np.asarray(SIMS_EDGES[bins], dtype=np.float32)
    return np.searchsorted(edges, np.asarray(scores, dtype=np.float32), side="left").astype(np.int64)


def task_labels(task: str, regression: np.ndarray, classification: np.ndarray) -> np.ndarray:
    """Labels for ``task`` from a split's scores and class labels: (N,) int64 class ids, or (N,)
    float32 scores for the regression tasks. Does not check the convention (see
    :meth:`LabelConvention.check_task`)."""
    check_task(task)
    if task in ("binary", "emotion"):
        return np.asarray(classification, dtype=np.int64)
    if task in REGRESSION_TASKS:
        return np.asarray(regression, dtype=np.float32)
    if task == "sims_binary":
        return sims_classes(regression, "acc2")
    return seven_classes(regression)


def class_priors(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(C,) empirical class frequencies of integer labels."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


@dataclass(frozen=True)
class LabelConvention:
    """How a dataset's labels read: the convention's name and, for ``categorical``, the class names
    (class id k is ``class_names[k]``)."""

    name: str = "mosi"
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.name not in CONVENTION_TASKS:
            raise LabelError(f"unknown label convention '{self.name}': expected one of {list(CONVENTIONS)}")
        if (self.name == "categorical") != bool(self.class_names):
            raise LabelError("class names go with the categorical convention, and only with it")

    @property
    def tasks(self) -> tuple[str, ...]:
        return CONVENTION_TASKS[self.name]

    @property
    def score_range(self) -> tuple[float, float] | None:
        """(low, high) of the sentiment scores; None for categorical labels."""
        return SCORE_RANGE.get(self.name)

    def describe(self) -> str:
        """One line: the convention, its labels and its tasks."""
        if self.score_range is None:
            labels = f"{len(self.class_names)} classes: {', '.join(self.class_names)}"
        else:
            labels = "scores in [{:g}, {:g}]".format(*self.score_range)
        return f"{self.name} ({labels}; task{'s' if len(self.tasks) > 1 else ''} {', '.join(self.tasks)})"

    def check_task(self, task: str, source: str = "the labels") -> str:
        """``task`` when it fits this convention; else a :class:`LabelError` naming ``source``."""
        if check_task(task) not in self.tasks:
            raise LabelError(f"{source}: task '{task}' does not fit the label convention {self.describe()}; "
                             f"use --task {' or '.join(self.tasks)}")
        return task

    def num_classes(self, task: str) -> int:
        """The model's output width for ``task`` on these labels: the one place where the class count
        of ``emotion`` comes from the data."""
        self.check_task(task)
        return len(self.class_names) if TASKS[task] is None else num_classes(task)

    def names_for(self, task: str) -> list[str]:
        """Display names of the task's classes (``["score"]`` for the regression tasks)."""
        self.check_task(task)
        return list(self.class_names) if TASKS[task] is None else list(CLASS_NAMES[task])

    def to_meta(self) -> dict | None:
        """The file's ``meta`` entry (plain types only); None for ``mosi``, which old files imply."""
        if self.name == "mosi":
            return None
        meta: dict = {"label_convention": self.name}
        if self.class_names:
            meta["class_names"] = list(self.class_names)
        return meta


MOSI = LabelConvention()
