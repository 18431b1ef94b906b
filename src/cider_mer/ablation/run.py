"""Running one cell of a suite grid: a named configuration at one training seed.

A suite trains each named configuration (an ablation variant today; a model in a benchmark) with
training seeds ``base.seed, base.seed + 1, ...`` into ``<out>/runs/<name>/seed<k>/`` and evaluates
it with :func:`cider_mer.evaluation.protocol.evaluate` (RMFM on the test split, tau chosen on
validation) into ``.../eval/``.

Resumption works per (name, seed): a run whose ``eval/results.json`` exists with the same
settings is skipped; a run with a ``config.json`` but no evaluation (or with other ``epochs`` or
``patience``) is continued with ``train(..., resume=True)`` (which returns at once when training
had finished) and then evaluated. A run directory holding other settings than ``--resume`` allows
(:func:`cider_mer.runs.check_same_run`) or another dataset raises :class:`RunError`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from cider_mer.ablation.variants import Variant, get_variant
from cider_mer.config import TrainConfig
from cider_mer.evaluation.protocol import DEFAULT_EVAL_SEEDS
from cider_mer.evaluation.report import metric_label
from cider_mer.evaluation.results import EvalResults
from cider_mer.io_utils import json_normal, read_json
from cider_mer.metrics import RATES_DEFAULT
from cider_mer.runs import CONFIG_FILE, check_same_run

EVAL_DIR = "eval"
RESULTS_FILE = "results.json"
MISSING_MODE = "RMFM"
EVAL_SPLIT = "test"
DEFAULT_EPOCHS = 10
DEFAULT_TRAINING_SEEDS = 3
# The Table V metrics each task can give: Acc2 / F1 (Non0) from the binary task, Acc7 from seven.
REPORT_METRICS = {"binary": ("non0_acc2", "non0_f1", "acc3"), "seven": ("acc7", "f1_7")}


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


@dataclass
class SuiteSettings:
    """Everything that defines one ablation suite (stored in ``ablation.json``)."""

    base: TrainConfig
    data_path: Path
    out: Path
    variants: list[str]
    seeds: list[int]
    eval_seeds: list[int] = field(default_factory=lambda: list(DEFAULT_EVAL_SEEDS))
    rates: list[float] = field(default_factory=lambda: list(RATES_DEFAULT))
    command: Optional[str] = None

    @property
    def task(self) -> str:
        return self.base.task

    @property
    def metrics(self) -> tuple[str, ...]:
        return REPORT_METRICS[self.task]

    def entries(self) -> list[NamedConfig]:
        """The suite's rows: each requested variant applied to the base."""
        return [NamedConfig.from_variant(get_variant(n), self.base) for n in self.variants]

    def results_match(self, results: EvalResults) -> bool:
        """Whether a stored evaluation was made with this suite's protocol settings."""
        return (results.missing_mode == MISSING_MODE and results.split == EVAL_SPLIT
                and results.seeds == [int(s) for s in self.eval_seeds]
                and json_normal(results.rates) == json_normal([float(r) for r in self.rates]))

    def stored_results(self, name: str, seed: int) -> Optional[EvalResults]:
        """The matching evaluation of (name, seed) on disk, or None (absent, unreadable or other settings)."""
        path = run_dir_for(self.out, name, seed) / EVAL_DIR / RESULTS_FILE
        if not path.is_file():
            return None
        try:
            results = EvalResults.from_dict(read_json(path))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return results if self.results_match(results) else None


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


def run_one(settings: SuiteSettings, entry: NamedConfig | str, seed: int, data, encoder=None, progress: bool = True,
            log: Callable[[str], None] = print) -> RunStatus:
    """Train (or continue) and evaluate one (named config, training seed); a variant name also works."""
    from cider_mer.data.labels import SELECTION_METRIC
    from cider_mer.evaluation.protocol import evaluate
    from cider_mer.evaluation.report import write_report
    from cider_mer.runs import Run
    from cider_mer.text.cache import dataset_key
    from cider_mer.training.trainer import train

    if isinstance(entry, str):
        entry = NamedConfig.from_variant(get_variant(entry), settings.base)
    cfg = entry.for_seed(seed)
    run_dir = run_dir_for(settings.out, entry.name, seed)
    tag = f"[{entry.name} seed {seed}]"
    t0 = time.time()
    status = "trained"
    if (run_dir / CONFIG_FILE).is_file():
        changed = check_same_run(run_dir, read_json(run_dir / CONFIG_FILE), cfg, dataset_key(settings.data_path))
        longer = {"epochs", "patience"} & set(changed)  # a finished run may train on
        if not longer and settings.stored_results(entry.name, seed) is not None:
            shown_path = (run_dir / EVAL_DIR / RESULTS_FILE).relative_to(settings.out)
            log(f"{tag} skipped: evaluation exists ({shown_path})")
            return RunStatus(entry.name, seed, "skipped", round(time.time() - t0, 2))
        log(f"{tag} continuing the run in {run_dir.relative_to(settings.out)}")
        status = "resumed"
    else:
        log(f"{tag} training into {run_dir.relative_to(settings.out)}")
    result = train(cfg, data, run_dir, resume=status == "resumed", progress=progress, encoder=encoder)
    t_train = time.time() - t0
    log(f"{tag} training done: best validation {SELECTION_METRIC[cfg.task]} {result.best_value:.2f} at epoch "
        f"{result.best_epoch}/{result.epochs_run} ({t_train:.0f}s now, {result.seconds:.0f}s in all)")
    t1 = time.time()
    results = evaluate(Run.load(run_dir, device=cfg.device, encoder=encoder), data, split=EVAL_SPLIT,
                       mode=MISSING_MODE, rates=settings.rates, seeds=settings.eval_seeds, progress=progress)
    write_report(results, run_dir / EVAL_DIR)
    t_eval = time.time() - t1
    shown = ", ".join(f"AUILC {metric_label(m)} {results.auilc[m]:.2f}" for m in settings.metrics if m in results.auilc)
    log(f"{tag} evaluated in {t_eval:.0f}s: {shown}")
    return RunStatus(entry.name, seed, status, round(time.time() - t0, 2), train_seconds_now=round(t_train, 2),
                     eval_seconds=round(t_eval, 2))
