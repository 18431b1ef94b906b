"""The suite's aggregate as typed records, rebuilt from the run directories on disk.

:func:`aggregate` reads every finished (name, seed) evaluation through
:class:`~cider_mer.evaluation.results.EvalResults` and summarises each named configuration over
the training seeds: AUILC and the rate-0 (complete data) value of each reported metric as mean ±
std (ddof=0, like the evaluation protocol; each training seed's value is itself the mean over the
evaluation seeds), and the mean curve over the rates.

:meth:`AblationTable.to_dict` is the ``ablation.json`` object and :meth:`AblationTable.from_dict`
reads it back. Layout of that object: the suite's settings (``task``, ``metrics``,
``primary_metric``, ``missing_mode``, ``split``, ``rates``, ``training_seeds``, ``eval_seeds``,
``data``, ``base_config`` ...), ``variants`` (NAME -> ``label``, ``description``, ``changes``,
``config``, ``seeds_done``, ``complete``, ``params_excluding_text_encoder``, ``mssd_terms``,
``summary`` {``auilc``/``rate0``: METRIC -> ``mean``/``std``/``per_seed``; ``curve``: METRIC ->
``mean``/``std`` per rate or null}, ``runs`` (SEED -> one run's record) and
``delta_auilc_vs_full``), ``finished``, ``updated`` and ``versions``.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from cider_mer.ablation.run import EVAL_SPLIT, MISSING_MODE, NamedConfig, RunStatus, SuiteSettings, run_dir_for
from cider_mer.config import TrainConfig
from cider_mer.errors import CiderError
from cider_mer.evaluation.results import EvalResults
from cider_mer.io_utils import json_normal, read_json, versions
from cider_mer.checkpoint import read_metadata
from cider_mer.metrics import LOWER_IS_BETTER
from cider_mer.runs import CONFIG_FILE, LOG_FILE, MODEL_FILE

KIND = "cider-mer ablation (Table V)"
REFERENCE = "full"  # the row the Δ column is measured against
TAU_SELECTION = "validation split, same mode/rate/seed (variants without counterfactual text: tau 0)"
AGGREGATION = ("mean ± std (ddof=0) over training seeds of per-run values; each per-run value is the "
               "mean over evaluation seeds; AUILC = trapezoid over the rates")


def optional_float(x: Any) -> Optional[float]:
    return None if x is None else float(x)


@dataclass
class Stats:
    """One figure over the training seeds: mean and std (ddof=0) of the finite values, and every value."""

    mean: Optional[float]
    std: Optional[float]
    per_seed: list[float]

    @classmethod
    def of(cls, values: Sequence[float]) -> "Stats":
        v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
        if not len(v):
            return cls(None, None, list(values))
        return cls(float(v.mean()), float(v.std()), [float(x) for x in values])

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "per_seed": list(self.per_seed)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Stats":
        return cls(optional_float(d.get("mean")), optional_float(d.get("std")), list(d.get("per_seed", [])))


@dataclass
class Curve:
    """A metric over the missing rates: mean and std over the training seeds' mean curves."""

    mean: list[float]
    std: list[float]

    @classmethod
    def of(cls, curves: Sequence[Sequence[float]]) -> Optional["Curve"]:
        if not curves:
            return None
        return cls(np.mean(curves, axis=0).tolist(), np.std(curves, axis=0).tolist())

    def to_dict(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: Optional[dict[str, Any]]) -> Optional["Curve"]:
        return None if d is None else cls(list(d["mean"]), list(d["std"]))


@dataclass
class TrainLog:
    """What a run's ``train_log.csv`` says: epochs, summed training time, the epoch training selected
    (from the checkpoint: by the run's criterion, among selectable epochs) and its validation ``metric``."""

    epochs_run: int
    train_seconds: float
    best_epoch: int
    selection: str  # the validation metric reported for the best epoch
    best_value: float

    @classmethod
    def read(cls, run_dir: Path, selection: str) -> Optional["TrainLog"]:
        path = run_dir / LOG_FILE
        if not path.is_file():
            return None
        try:
            rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
            if not rows:
                return None
            values = [float(r.get(f"val_{selection}") or "nan") for r in rows]
            epochs = [int(r["epoch"]) for r in rows]
            chosen = read_metadata(run_dir / MODEL_FILE).get("epoch")  # the epoch training selected
            if chosen in epochs:
                best = epochs.index(chosen)
            elif all(math.isnan(v) for v in values):
                best = 0
            else:  # no checkpoint yet: the best logged value
                best = int(np.nanargmin(values) if selection in LOWER_IS_BETTER else np.nanargmax(values))
            return cls(len(rows), round(sum(float(r.get("train_seconds") or 0) for r in rows), 2),
                       int(rows[best]["epoch"]), selection, values[best])
        except (UnicodeDecodeError, csv.Error, ValueError, KeyError, TypeError) as exc:
            raise CiderError(f"{path}: unreadable training log ({type(exc).__name__}: {exc}); expected the CSV "
                             f"that training writes, with columns epoch, train_seconds and val_{selection}") from None

    def to_dict(self) -> dict[str, Any]:
        return {"epochs_run": self.epochs_run, "train_seconds": self.train_seconds, "best_epoch": self.best_epoch,
                f"best_val_{self.selection}": self.best_value}


@dataclass
class RunRecord:
    """One (name, training seed): where it lives, what this invocation did, and its figures once done."""

    run_dir: str  # relative to the suite folder
    done: bool = False
    # What this invocation did with the run ("trained", "resumed", "skipped"; None: not worked on).
    status: Optional[str] = None
    seconds: Optional[float] = None
    train_seconds_now: Optional[float] = None
    eval_seconds: Optional[float] = None
    auilc: dict[str, Optional[float]] = field(default_factory=dict)
    rate0: dict[str, Optional[float]] = field(default_factory=dict)
    tau_rate0: Optional[float] = None
    eval_seconds_stored: Optional[float] = None
    train_log: Optional[TrainLog] = None

    @property
    def train_seconds(self) -> float:
        return self.train_log.train_seconds if self.train_log else 0.0

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"run_dir": self.run_dir, "done": self.done}
        if self.status is not None:
            d.update({k: getattr(self, k) for k in ("status", "seconds", "train_seconds_now", "eval_seconds")
                      if getattr(self, k) is not None})
        if self.done:
            d.update({"auilc": dict(self.auilc), "rate0": dict(self.rate0), "tau_rate0": self.tau_rate0,
                      "eval_seconds_stored": self.eval_seconds_stored})
            if self.train_log is not None:
                d.update(self.train_log.to_dict())
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunRecord":
        best = [k for k in d if k.startswith("best_val_")]
        train_log = None
        if "epochs_run" in d and best:
            train_log = TrainLog(int(d["epochs_run"]), float(d.get("train_seconds") or 0.0), int(d["best_epoch"]),
                                 best[0][len("best_val_"):], float(d[best[0]]))
        return cls(run_dir=d["run_dir"], done=bool(d.get("done")), status=d.get("status"),
                   seconds=optional_float(d.get("seconds")), train_seconds_now=optional_float(d.get("train_seconds_now")),
                   eval_seconds=optional_float(d.get("eval_seconds")), auilc=dict(d.get("auilc", {})),
                   rate0=dict(d.get("rate0", {})), tau_rate0=optional_float(d.get("tau_rate0")),
                   eval_seconds_stored=optional_float(d.get("eval_seconds_stored")), train_log=train_log)


@dataclass
class VariantSummary:
    """One named configuration (a Table V variant, or a model in a benchmark) over the training seeds."""

    name: str
    label: str
    description: str
    changes: dict[str, Any]
    config: dict[str, Any]  # the configuration it trains (JSON form; the seed is the base's)
    seeds_done: list[int]
    complete: bool
    params_excluding_text_encoder: Optional[int]
    mssd_terms: Optional[list[str]]
    auilc: dict[str, Stats]
    rate0: dict[str, Stats]
    curve: dict[str, Optional[Curve]]
    runs: dict[int, RunRecord]  # by training seed
    delta_auilc_vs_full: Optional[float] = None  # AUILC of the primary metric minus the reference row's

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label, "description": self.description, "changes": self.changes, "config": self.config,
            "seeds_done": list(self.seeds_done), "complete": self.complete,
            "params_excluding_text_encoder": self.params_excluding_text_encoder, "mssd_terms": self.mssd_terms,
            "summary": {"auilc": {m: s.to_dict() for m, s in self.auilc.items()},
                        "rate0": {m: s.to_dict() for m, s in self.rate0.items()},
                        "curve": {m: None if c is None else c.to_dict() for m, c in self.curve.items()}},
            "runs": {str(seed): r.to_dict() for seed, r in self.runs.items()},
            "delta_auilc_vs_full": self.delta_auilc_vs_full,
        }

    @classmethod
    def from_dict(cls, name: str, d: dict[str, Any]) -> "VariantSummary":
        s = d["summary"]
        return cls(name=name, label=d.get("label", ""), description=d.get("description", ""),
                   changes=d.get("changes", {}), config=d.get("config", {}),
                   seeds_done=[int(x) for x in d.get("seeds_done", [])], complete=bool(d.get("complete")),
                   params_excluding_text_encoder=d.get("params_excluding_text_encoder"),
                   mssd_terms=d.get("mssd_terms"),
                   auilc={m: Stats.from_dict(x) for m, x in s["auilc"].items()},
                   rate0={m: Stats.from_dict(x) for m, x in s["rate0"].items()},
                   curve={m: Curve.from_dict(x) for m, x in s["curve"].items()},
                   runs={int(k): RunRecord.from_dict(r) for k, r in d.get("runs", {}).items()},
                   delta_auilc_vs_full=optional_float(d.get("delta_auilc_vs_full")))


@dataclass
class AblationTable:
    """The whole suite: its settings and one :class:`VariantSummary` per named configuration, in order."""

    task: str
    metrics: list[str]
    rates: list[float]
    training_seeds: list[int]
    eval_seeds: list[int]
    data_file: str
    data_sha256_16: Optional[str]
    base_config: dict[str, Any]
    variants: dict[str, VariantSummary]
    command: Optional[str] = None
    missing_mode: str = MISSING_MODE
    split: str = EVAL_SPLIT
    kind: str = KIND
    tau_selection: str = TAU_SELECTION
    aggregation: str = AGGREGATION
    updated: str = ""
    versions: dict[str, Any] = field(default_factory=dict)

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]

    @property
    def finished(self) -> bool:
        return all(v.complete for v in self.variants.values())

    def done_runs(self) -> Iterable[RunRecord]:
        return (r for v in self.variants.values() for r in v.runs.values() if r.done)

    def compute_seconds(self) -> tuple[float, float, int]:
        """(training seconds, evaluation seconds, finished runs) summed over the finished runs as each logged them."""
        runs = list(self.done_runs())
        return (sum(r.train_seconds for r in runs), sum(r.eval_seconds_stored or 0.0 for r in runs), len(runs))

    def to_dict(self) -> dict[str, Any]:
        """The ``ablation.json`` object."""
        return {
            "kind": self.kind, "command": self.command, "task": self.task, "metrics": list(self.metrics),
            "primary_metric": self.primary_metric, "missing_mode": self.missing_mode, "split": self.split,
            "rates": list(self.rates), "training_seeds": list(self.training_seeds),
            "eval_seeds": list(self.eval_seeds), "tau_selection": self.tau_selection,
            "aggregation": self.aggregation, "data": {"file": self.data_file, "sha256_16": self.data_sha256_16},
            "base_config": self.base_config, "variants": {n: v.to_dict() for n, v in self.variants.items()},
            "finished": self.finished, "updated": self.updated, "versions": self.versions,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AblationTable":
        """Read an ``ablation.json`` object."""
        data = d.get("data", {})
        return cls(task=d["task"], metrics=list(d["metrics"]), rates=[float(r) for r in d["rates"]],
                   training_seeds=[int(s) for s in d["training_seeds"]], eval_seeds=[int(s) for s in d["eval_seeds"]],
                   data_file=data.get("file", ""), data_sha256_16=data.get("sha256_16"),
                   base_config=d.get("base_config", {}),
                   variants={n: VariantSummary.from_dict(n, v) for n, v in d["variants"].items()},
                   command=d.get("command"), missing_mode=d.get("missing_mode", MISSING_MODE),
                   split=d.get("split", EVAL_SPLIT), kind=d.get("kind", KIND),
                   tau_selection=d.get("tau_selection", TAU_SELECTION), aggregation=d.get("aggregation", AGGREGATION),
                   updated=d.get("updated", ""), versions=d.get("versions", {}))


def compute_seconds(table: AblationTable) -> tuple[float, float, int]:
    """(training seconds, evaluation seconds, finished runs) of a suite; see :meth:`AblationTable.compute_seconds`."""
    return table.compute_seconds()


# ----------------------------------------------------------------------------- building it from disk


def _param_count(run_dir: Path) -> Optional[int]:
    """Parameters outside the text encoder, rebuilt from the run's config (no weights read)."""
    from cider_mer.models.interface import DataShapes
    from cider_mer.models.registry import build_model

    try:
        meta = read_json(run_dir / CONFIG_FILE)
        cfg = TrainConfig.from_dict(meta["train"])
        model = build_model(cfg.model, DataShapes(**meta["shapes"]), cfg.model_config, text_encoder=None,
                            maci=cfg.head == "mcm")
        return int(model.parameter_counts()["params_excluding_text_encoder"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def _mssd_terms(run_dir: Path) -> Optional[list[str]]:
    try:
        return read_json(run_dir / CONFIG_FILE).get("mssd_terms")
    except (OSError, ValueError):
        return None


def _record(settings: SuiteSettings, name: str, seed: int, results: Optional[EvalResults],
            status: Optional[RunStatus], selection: str) -> RunRecord:
    run_dir = run_dir_for(settings.out, name, seed)
    record = RunRecord(run_dir=str(run_dir.relative_to(settings.out)))
    if status is not None:
        record.status, record.seconds = status.status, status.seconds
        record.train_seconds_now, record.eval_seconds = status.train_seconds_now, status.eval_seconds
    if results is None:
        return record
    record.done = True
    record.auilc = {m: results.auilc.get(m) for m in settings.metrics}
    record.rate0 = {m: results.at_rate(m, 0.0) for m in settings.metrics}
    record.tau_rate0 = results.tau_at_rate(0.0)
    record.eval_seconds_stored = results.seconds
    record.train_log = TrainLog.read(run_dir, selection)
    return record


def summarize(settings: SuiteSettings, entry: NamedConfig,
              statuses: Optional[dict[tuple[str, int], RunStatus]] = None) -> VariantSummary:
    """One named configuration over the suite's training seeds, from its finished evaluations on disk."""
    from cider_mer.data.labels import SELECTION_METRIC

    statuses = statuses or {}
    metrics = settings.metrics
    nan = float("nan")
    runs: dict[int, RunRecord] = {}
    finished: list[tuple[int, EvalResults]] = []
    for seed in settings.seeds:
        results = settings.stored_results(entry.name, seed)
        runs[seed] = _record(settings, entry.name, seed, results, statuses.get((entry.name, seed)),
                             SELECTION_METRIC[settings.task])
        if results is not None:
            finished.append((seed, results))
    first_dir = run_dir_for(settings.out, entry.name, finished[0][0]) if finished else None
    return VariantSummary(
        name=entry.name, label=entry.label, description=entry.description, changes=entry.changes,
        config=json_normal(entry.config.to_dict()), seeds_done=[seed for seed, _ in finished],
        complete=len(finished) == len(settings.seeds),
        params_excluding_text_encoder=None if first_dir is None else _param_count(first_dir),
        mssd_terms=None if first_dir is None else _mssd_terms(first_dir),
        auilc={m: Stats.of([nan if r.auilc.get(m) is None else float(r.auilc[m]) for _, r in finished])
               for m in metrics},
        rate0={m: Stats.of([nan if (x := r.at_rate(m, 0.0)) is None else float(x) for _, r in finished])
               for m in metrics},
        curve={m: Curve.of([[float(x) for x in r.metrics[m].mean] for _, r in finished]) for m in metrics},
        runs=runs,
    )


def aggregate(settings: SuiteSettings, statuses: Optional[dict[tuple[str, int], RunStatus]] = None,
              entries: Optional[Sequence[NamedConfig]] = None, reference: str = REFERENCE) -> AblationTable:
    """Collect every finished evaluation of the requested (name, seed) pairs from disk.

    ``entries``: the rows (default: the settings' variants applied to the base); ``reference``:
    the row the Δ column is measured against (no Δ when the table has no such row)."""
    from cider_mer.text.cache import dataset_key

    rows = {e.name: summarize(settings, e, statuses) for e in (settings.entries() if entries is None else entries)}
    primary = settings.metrics[0]
    ref = rows[reference].auilc[primary].mean if reference in rows else None
    for v in rows.values():
        mean = v.auilc[primary].mean
        v.delta_auilc_vs_full = None if ref is None or mean is None else mean - ref
    try:
        key = dataset_key(settings.data_path)
    except OSError:
        key = None
    return AblationTable(
        task=settings.task, metrics=list(settings.metrics), rates=[float(r) for r in settings.rates],
        training_seeds=list(settings.seeds), eval_seeds=list(settings.eval_seeds),
        data_file=Path(settings.data_path).name, data_sha256_16=key,
        base_config=json_normal(settings.base.to_dict()), variants=rows, command=settings.command,
        updated=datetime.now(timezone.utc).isoformat(timespec="seconds"), versions=versions(),
    )
