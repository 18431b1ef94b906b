"""Running one cell of a suite grid: a named configuration at one training seed.

Shared by the ablation suite (a Table V variant per row) and the benchmark (a model per row,
:mod:`cider_mer.benchmark`). A suite trains each named configuration with training seeds
``base.seed, base.seed + 1, ...`` into ``<out>/runs/<name>/seed<k>/`` and evaluates it with
:func:`cider_mer.evaluation.protocol.evaluate` (RMFM on the test split, tau chosen on validation)
into one or more report folders of that run: ``eval/`` on the training file by default, or the
:class:`Evaluation` list the suite asks for (the benchmark: ``eval_iid/`` and ``eval_ood/``).

Resumption works per (name, seed): a run whose every evaluation exists with the suite's protocol
settings is skipped; a run with a ``config.json`` but a missing evaluation (or with other
``epochs`` or ``patience``) is continued with ``train(..., resume=True)`` (which returns at once
when training had finished) and the missing evaluations are made (all of them after training on).
A run directory holding other settings than ``--resume`` allows
(:func:`cider_mer.runs.check_same_run`, the one rule) or another training file raises
:class:`RunError`.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Optional, Sequence

from cider_mer.ablation.variants import Variant, get_variant
from cider_mer.config import TrainConfig
from cider_mer.evaluation.protocol import DEFAULT_EVAL_SEEDS
from cider_mer.evaluation.report import metric_label
from cider_mer.evaluation.results import EvalResults
from cider_mer.io_utils import json_normal, read_json
from cider_mer.metrics import RATES_DEFAULT
from cider_mer.runs import CONFIG_FILE, check_same_run

if TYPE_CHECKING:
    from cider_mer.data.dataset import MerDataset

EVAL_DIR = "eval"
RESULTS_FILE = "results.json"
MISSING_MODE = "RMFM"
EVAL_SPLIT = "test"
DEFAULT_EPOCHS = 10
DEFAULT_TRAINING_SEEDS = 3
# The reported metrics each task can give: Acc2 / F1 (Non0) from the binary task, Acc7 from seven
# (the paper's Tables IV and V), MAE / Corr / Non0 Acc2 from regression.
REPORT_METRICS = {"binary": ("non0_acc2", "non0_f1", "acc3"), "seven": ("acc7", "f1_7"),
                  "regression": ("mae", "corr", "non0_acc2")}


@dataclass(frozen=True)
class NamedConfig:
    """One row of a suite: a name, the configuration it trains (before the per-seed ``seed``) and
    how the reports describe it. Ablation variants become these via :meth:`from_variant`."""

    name: str
    config: TrainConfig
    label: str = ""
    description: str = ""
    changes: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_variant(cls, variant: Variant, base: TrainConfig) -> "NamedConfig":
        return cls(variant.name, variant.apply(base), variant.label, variant.description, variant.changes)

    def for_seed(self, seed: int) -> TrainConfig:
        return dataclasses.replace(self.config, seed=seed)


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of every run of a suite: the protocol on the test split of ``data``, reported
    in ``<run dir>/<subdir>/`` (``results.json`` and the usual per-rate files)."""

    subdir: str
    data: "MerDataset"


class SuiteGrid:
    """What every suite shares with :func:`run_one`: its base settings (``base``, hence ``task``), its
    folder ``out``, the evaluation protocol (``eval_seeds``, ``rates``; RMFM on the test split) and
    the ``metrics`` it reports. Suites are
    dataclasses that inherit these methods."""

    base: TrainConfig
    out: Path
    eval_seeds: list[int]
    rates: list[float]

    @property
    def task(self) -> str:
        return self.base.task

    @property
    def metrics(self) -> tuple[str, ...]:
        return REPORT_METRICS[self.task]

    def results_match(self, results: EvalResults) -> bool:
        """Whether a stored evaluation was made with this suite's protocol settings."""
        return (results.missing_mode == MISSING_MODE and results.split == EVAL_SPLIT
                and results.seeds == [int(s) for s in self.eval_seeds]
                and json_normal(results.rates) == json_normal([float(r) for r in self.rates]))

    def stored_results(self, name: str, seed: int, subdir: str = EVAL_DIR) -> Optional[EvalResults]:
        """The matching evaluation of (name, seed) in ``subdir`` on disk, or None (absent, unreadable
        or other settings)."""
        path = run_dir_for(self.out, name, seed) / subdir / RESULTS_FILE
        if not path.is_file():
            return None
        try:
            results = EvalResults.from_dict(read_json(path))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return results if self.results_match(results) else None


@dataclass
class SuiteSettings(SuiteGrid):
    """Everything that defines one ablation suite (stored in ``ablation.json``)."""

    base: TrainConfig
    data_path: Path
    out: Path
    variants: list[str]
    seeds: list[int]
    eval_seeds: list[int] = field(default_factory=lambda: list(DEFAULT_EVAL_SEEDS))
    rates: list[float] = field(default_factory=lambda: list(RATES_DEFAULT))
    command: Optional[str] = None

    def entries(self) -> list[NamedConfig]:
        """The suite's rows: each requested variant applied to the base."""
        return [NamedConfig.from_variant(get_variant(n), self.base) for n in self.variants]


@dataclass
class RunStatus:
    """What :func:`run_one` did for one (name, seed)."""

    name: str
    seed: int
    status: str  # "trained", "resumed" or "skipped"
    seconds: float
    train_seconds_now: Optional[float] = None
    eval_seconds: Optional[float] = None


def training_seeds(base: TrainConfig, n: int) -> list[int]:
    if n < 1:
        raise ValueError(f"the number of training seeds must be >= 1, got {n}")
    return [base.seed + i for i in range(n)]


def run_dir_for(out: str | Path, name: str, seed: int) -> Path:
    return Path(out) / "runs" / name / f"seed{seed}"


def shared_encoder(base: TrainConfig, encoder=None):
    """The text encoder every run of a suite shares: ``encoder`` when given, else (with a frozen
    encoder) loaded once here; None lets each run load its own (fine-tuning)."""
    if encoder is None and base.freeze_text_encoder:
        from cider_mer.runs import load_encoder

        return load_encoder(base)
    if encoder is not None and not base.freeze_text_encoder:
        raise ValueError("a shared text encoder only makes sense with a frozen encoder (freeze_text_encoder)")
    return encoder


def check_run_settings(run_dir: Path, cfg: TrainConfig, data_key: str) -> dict[str, tuple]:
    """:func:`cider_mer.runs.check_same_run` on the run stored in ``run_dir``: refuses other settings
    or another dataset; returns the differences a resumed run may have (epochs, patience ...)."""
    return check_same_run(run_dir, read_json(run_dir / CONFIG_FILE), cfg, data_key)


def run_one(settings: SuiteGrid, entry: NamedConfig, seed: int, data: "MerDataset", encoder=None,
            progress: bool = True, log: Callable[[str], None] = print,
            evaluations: Optional[Sequence[Evaluation]] = None,
            measure: Optional[Callable[[Path], ContextManager[Any]]] = None) -> RunStatus:
    """Train (or continue) one (named config, training seed) on ``data`` (train and valid splits)
    and make its missing evaluations.

    ``evaluations``: default one, ``eval/`` on the test split of ``data`` itself.
    ``measure(run_dir)``: a context manager wrapped around the training call (the benchmark
    records peak memory through it); it is not entered when the run is skipped."""
    from cider_mer.data.labels import SELECTION_METRIC
    from cider_mer.evaluation.protocol import evaluate
    from cider_mer.evaluation.report import write_report
    from cider_mer.runs import Run
    from cider_mer.text.cache import dataset_key
    from cider_mer.training.trainer import train

    evaluations = list(evaluations) if evaluations is not None else [Evaluation(EVAL_DIR, data)]
    cfg = entry.for_seed(seed)
    run_dir = run_dir_for(settings.out, entry.name, seed)
    tag = f"[{entry.name} seed {seed}]"
    t0 = time.time()
    status = "trained"
    if (run_dir / CONFIG_FILE).is_file():
        longer = {"epochs", "patience"} & set(check_run_settings(run_dir, cfg, dataset_key(data.path)))
        todo = list(evaluations) if longer else [  # a run that trains on is evaluated again
            e for e in evaluations if settings.stored_results(entry.name, seed, e.subdir) is None]
        if not todo:
            shown = ", ".join(str((run_dir / e.subdir / RESULTS_FILE).relative_to(settings.out)) for e in evaluations)
            log(f"{tag} skipped: evaluation exists ({shown})")
            return RunStatus(entry.name, seed, "skipped", round(time.time() - t0, 2))
        evaluations = todo
        log(f"{tag} continuing the run in {run_dir.relative_to(settings.out)}")
        status = "resumed"
    else:
        log(f"{tag} training into {run_dir.relative_to(settings.out)}")
    with measure(run_dir) if measure is not None else nullcontext():
        result = train(cfg, data, run_dir, resume=status == "resumed", progress=progress, encoder=encoder)
    t_train = time.time() - t0
    log(f"{tag} training done: best validation {SELECTION_METRIC[cfg.task]} {result.best_value:.2f} at epoch "
        f"{result.best_epoch}/{result.epochs_run} ({t_train:.0f}s now, {result.seconds:.0f}s in all)")
    t1 = time.time()
    run = Run.load(run_dir, device=cfg.device, encoder=encoder)
    for ev in evaluations:
        t_one = time.time()
        results = evaluate(run, ev.data, split=EVAL_SPLIT, mode=MISSING_MODE, rates=settings.rates,
                           seeds=settings.eval_seeds, progress=progress)
        write_report(results, run_dir / ev.subdir)
        shown = ", ".join(f"AUILC {metric_label(m)} {results.auilc[m]:.2f}" for m in settings.metrics
                          if m in results.auilc)
        where = "" if len(evaluations) == 1 and ev.subdir == EVAL_DIR else f" {ev.subdir}"
        log(f"{tag}{where} evaluated in {time.time() - t_one:.0f}s: {shown}")
    t_eval = time.time() - t1
    return RunStatus(entry.name, seed, status, round(time.time() - t0, 2), train_seconds_now=round(t_train, 2),
                     eval_seconds=round(t_eval, 2))
