"""The benchmark's product, :class:`BenchmarkTable` (``benchmark.json``), rebuilt from the run folders.

Per row and training seed, each Table IV setting's figures come from the stored evaluation
(:class:`~cider_mer.evaluation.results.EvalResults`) of the run trained for it: AUILC for the RMFM
settings, the rate-0 mean for the complete-data setting (each the mean over evaluation seeds);
rows show mean ± std (ddof=0) over training seeds. The complexity figures (Table VI) per row:
parameters outside the text encoder and MACI's share (parameters with MACI minus without), rebuilt
from the first finished run's config; each run's peak memory (``peak_memory.json``) and median
training seconds per epoch (``train_log.csv``), as mean ± std over the row's runs.

``benchmark.json`` layout: ``kind``, ``command``, ``task``, ``metrics``, ``settings`` (KEY ->
label, test, figure, training data), ``rates``, ``training_seeds``, ``eval_seeds``, ``data``
(``iid``/``ood`` -> file, sha256_16), ``shared_training``, ``base_config``, ``rows`` (KEY ->
label, model, maci, config, seeds_done, complete, values {SETTING: {METRIC: stats}}, curves
{SETTING: {METRIC: curve}}, complexity, runs [one per (seed, training set)]), ``hardware``,
``notes``, ``finished``, ``updated``, ``versions``.
"""

from __future__ import annotations

import csv
import io
import statistics
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from cider_mer.ablation.aggregate import Curve, Stats, optional_float
from cider_mer.ablation.run import EVAL_SPLIT, MISSING_MODE, RunStatus
from cider_mer.benchmark.plan import SETTINGS, BenchmarkSettings, BenchRow, Setting, TrainingSet
from cider_mer.benchmark.resources import KINDS, PeakRecord
from cider_mer.config import TrainConfig
from cider_mer.evaluation.results import EvalResults
from cider_mer.io_utils import json_normal, read_json, versions
from cider_mer.runs import CONFIG_FILE, LOG_FILE

KIND = "cider-mer benchmark (Tables IV and VI)"
AGGREGATION = ("mean ± std (ddof=0) over training seeds; each seed's value is the mean over evaluation seeds; "
               "AUILC = trapezoid over the missing rates; complete data = the rate-0 point of the OOD evaluation")


@dataclass
class RunInfo:
    """One trained run of a row: where it is, what it gives and what it cost."""

    seed: int
    training: str  # "shared", "iid" or "ood"
    run_dir: str  # relative to the benchmark folder
    done: bool = False  # every evaluation it owes exists
    status: Optional[str] = None  # what this invocation did: "trained", "resumed", "skipped"
    values: dict[str, dict[str, Optional[float]]] = field(default_factory=dict)  # SETTING -> METRIC -> value
    epochs_run: Optional[int] = None
    seconds_per_epoch: Optional[float] = None  # median over the logged epochs
    peak_memory: Optional[PeakRecord] = None

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "training": self.training, "run_dir": self.run_dir, "done": self.done,
                "status": self.status, "values": self.values, "epochs_run": self.epochs_run,
                "seconds_per_epoch": self.seconds_per_epoch,
                "peak_memory": None if self.peak_memory is None else self.peak_memory.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunInfo":
        peak = d.get("peak_memory")
        return cls(seed=int(d["seed"]), training=str(d["training"]), run_dir=str(d["run_dir"]),
                   done=bool(d.get("done")), status=d.get("status"),
                   values={s: {m: optional_float(v) for m, v in ms.items()} for s, ms in d.get("values", {}).items()},
                   epochs_run=None if d.get("epochs_run") is None else int(d["epochs_run"]),
                   seconds_per_epoch=optional_float(d.get("seconds_per_epoch")),
                   peak_memory=None if peak is None else PeakRecord.from_dict(peak))


@dataclass
class Complexity:
    """Table VI for one row."""

    params_excluding_text_encoder: Optional[int]
    params_maci: Optional[int]  # with MACI minus without (rows with MACI only)
    peak_memory_gib: Stats  # over the row's measured runs
    seconds_per_epoch: Stats  # over the row's runs (each the median over its epochs)

    def to_dict(self) -> dict[str, Any]:
        return {"params_excluding_text_encoder": self.params_excluding_text_encoder, "params_maci": self.params_maci,
                "peak_memory_gib": self.peak_memory_gib.to_dict(), "seconds_per_epoch": self.seconds_per_epoch.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Complexity":
        return cls(d.get("params_excluding_text_encoder"), d.get("params_maci"),
                   Stats.from_dict(d["peak_memory_gib"]), Stats.from_dict(d["seconds_per_epoch"]))


@dataclass
class RowSummary:
    """One row of the tables over the training seeds."""

    key: str
    label: str
    model: str
    maci: bool
    config: dict[str, Any]  # the exact TrainConfig it trains (the seed is the base's)
    seeds_done: list[int]
    complete: bool
    values: dict[str, dict[str, Stats]]  # SETTING -> METRIC -> over seeds
    curves: dict[str, dict[str, Optional[Curve]]]  # RMFM SETTING -> METRIC -> mean curve over seeds
    complexity: Complexity
    runs: list[RunInfo]

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "model": self.model, "maci": self.maci, "config": self.config,
                "seeds_done": list(self.seeds_done), "complete": self.complete,
                "values": {s: {m: st.to_dict() for m, st in ms.items()} for s, ms in self.values.items()},
                "curves": {s: {m: None if c is None else c.to_dict() for m, c in ms.items()}
                           for s, ms in self.curves.items()},
                "complexity": self.complexity.to_dict(), "runs": [r.to_dict() for r in self.runs]}

    @classmethod
    def from_dict(cls, key: str, d: dict[str, Any]) -> "RowSummary":
        return cls(key=key, label=d["label"], model=d["model"], maci=bool(d["maci"]), config=d["config"],
                   seeds_done=[int(s) for s in d["seeds_done"]], complete=bool(d["complete"]),
                   values={s: {m: Stats.from_dict(x) for m, x in ms.items()} for s, ms in d["values"].items()},
                   curves={s: {m: Curve.from_dict(x) for m, x in ms.items()} for s, ms in d["curves"].items()},
                   complexity=Complexity.from_dict(d["complexity"]), runs=[RunInfo.from_dict(r) for r in d["runs"]])


@dataclass
class Hardware:
    """Where this invocation ran, and what the peak-memory column measures."""

    device: str
    device_name: str
    memory_kinds: list[str]  # the KINDS keys found among the runs' measurements
    devices_measured: list[str]  # device names recorded by the runs (one, unless runs came from several machines)

    @property
    def memory_label(self) -> str:
        return "; ".join(KINDS[k] for k in self.memory_kinds) or "not measured yet"

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "device_name": self.device_name, "memory_kinds": list(self.memory_kinds),
                "memory_label": self.memory_label, "devices_measured": list(self.devices_measured)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Hardware":
        return cls(d["device"], d["device_name"], list(d.get("memory_kinds", [])), list(d.get("devices_measured", [])))


@dataclass
class BenchmarkTable:
    """The whole benchmark: its settings and one :class:`RowSummary` per row, in table order."""

    task: str
    metrics: list[str]
    rates: list[float]
    training_seeds: list[int]
    eval_seeds: list[int]
    data: dict[str, dict[str, Optional[str]]]  # "iid"/"ood" -> {"file", "sha256_16"}
    shared_training: bool
    training_data: dict[str, str]  # SETTING -> the train/valid splits its runs used, in words
    base_config: dict[str, Any]
    rows: dict[str, RowSummary]
    hardware: Hardware
    notes: list[str] = field(default_factory=list)
    command: Optional[str] = None
    missing_mode: str = MISSING_MODE
    split: str = EVAL_SPLIT
    kind: str = KIND
    aggregation: str = AGGREGATION
    updated: str = ""
    versions: dict[str, Any] = field(default_factory=dict)

    @property
    def settings(self) -> tuple[Setting, ...]:
        return SETTINGS

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]

    @property
    def finished(self) -> bool:
        return all(r.complete for r in self.rows.values())

    def to_dict(self) -> dict[str, Any]:
        """The ``benchmark.json`` object."""
        return {
            "kind": self.kind, "command": self.command, "task": self.task, "metrics": list(self.metrics),
            "primary_metric": self.primary_metric, "missing_mode": self.missing_mode, "split": self.split,
            "settings": {s.key: {"label": s.label, "test": s.test, "figure": s.figure,
                                 "training_data": self.training_data.get(s.key)} for s in self.settings},
            "rates": list(self.rates), "training_seeds": list(self.training_seeds),
            "eval_seeds": list(self.eval_seeds), "aggregation": self.aggregation, "data": self.data,
            "shared_training": self.shared_training, "base_config": self.base_config,
            "rows": {k: r.to_dict() for k, r in self.rows.items()}, "hardware": self.hardware.to_dict(),
            "notes": list(self.notes), "finished": self.finished, "updated": self.updated, "versions": self.versions,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BenchmarkTable":
        """Read a ``benchmark.json`` object."""
        return cls(task=d["task"], metrics=list(d["metrics"]), rates=[float(r) for r in d["rates"]],
                   training_seeds=[int(s) for s in d["training_seeds"]], eval_seeds=[int(s) for s in d["eval_seeds"]],
                   data={k: dict(v) for k, v in d["data"].items()}, shared_training=bool(d["shared_training"]),
                   training_data={k: v["training_data"] for k, v in d["settings"].items()},
                   base_config=d["base_config"], rows={k: RowSummary.from_dict(k, r) for k, r in d["rows"].items()},
                   hardware=Hardware.from_dict(d["hardware"]), notes=list(d.get("notes", [])),
                   command=d.get("command"), missing_mode=d.get("missing_mode", MISSING_MODE),
                   split=d.get("split", EVAL_SPLIT), kind=d.get("kind", KIND),
                   aggregation=d.get("aggregation", AGGREGATION), updated=d.get("updated", ""),
                   versions=d.get("versions", {}))


# ----------------------------------------------------------------------------- building it from disk


def run_epoch_figures(run_dir: Path) -> tuple[Optional[int], Optional[float]]:
    """(epochs logged, median training seconds per epoch) from the run's ``train_log.csv``."""
    path = run_dir / LOG_FILE
    if not path.is_file():
        return None, None
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    seconds = [float(r["train_seconds"]) for r in rows if r.get("train_seconds")]
    return len(rows), (round(statistics.median(seconds), 4) if seconds else None)


def run_parameter_counts(run_dir: Path, maci: bool) -> tuple[Optional[int], Optional[int]]:
    """(parameters outside the text encoder, MACI's share) rebuilt from the run's config (no weights read)."""
    from cider_mer.models.interface import DataShapes
    from cider_mer.models.registry import build_model

    try:
        meta = read_json(run_dir / CONFIG_FILE)
        cfg = TrainConfig.from_dict(meta["train"])
        shapes = DataShapes(**meta["shapes"])
    except (OSError, KeyError, TypeError, ValueError):
        return None, None

    def count(with_maci: bool) -> int:
        model = build_model(cfg.model, shapes, cfg.model_config, text_encoder=None, maci=with_maci)
        return int(model.parameter_counts()["params_excluding_text_encoder"])

    total = count(cfg.head == "mcm")
    return total, (total - count(False) if maci else None)


def _figure(results: EvalResults, setting: Setting, metric: str) -> Optional[float]:
    value = results.auilc.get(metric) if setting.figure == "auilc" else results.at_rate(metric, 0.0)
    return optional_float(value)


def summarize_row(settings: BenchmarkSettings, row: BenchRow,
                  statuses: Optional[dict[tuple[str, int], RunStatus]] = None) -> RowSummary:
    """One row over the training seeds, from the stored evaluations and logs of its runs."""
    statuses = statuses or {}
    metrics = settings.metrics
    runs: list[RunInfo] = []
    per_seed: dict[int, dict[str, dict[str, Optional[float]]]] = {}
    curves: dict[str, dict[str, list[list[float]]]] = {s.key: {m: [] for m in metrics}
                                                       for s in SETTINGS if s.figure == "auilc"}
    seeds_done = []
    first_done: Optional[Path] = None
    for seed in settings.seeds:
        seed_runs = [(t, _run_info(settings, row, t, seed, statuses)) for t in settings.training_sets]
        runs += [info for _, info in seed_runs]
        if not all(info.done for _, info in seed_runs):
            continue
        seeds_done.append(seed)
        per_seed[seed] = {k: v for _, info in seed_runs for k, v in info.values.items()}
        first_done = first_done or settings.out / seed_runs[0][1].run_dir
        for training, _ in seed_runs:
            for s in SETTINGS:
                if s.key in curves and s.test in training.tests:
                    res = settings.stored_results(row.named(training, settings.shared).name, seed,
                                                  training.subdir(s.test))
                    for m in metrics:
                        curves[s.key][m].append([float(x) for x in res.metrics[m].mean])
    values = {s.key: {m: Stats.of([float("nan") if (v := per_seed[seed][s.key].get(m)) is None else v
                                   for seed in seeds_done]) for m in metrics} for s in SETTINGS}
    params, params_maci = run_parameter_counts(first_done, row.maci) if first_done is not None else (None, None)
    peaks = [r.peak_memory.gib for r in runs if r.peak_memory is not None]
    speeds = [r.seconds_per_epoch for r in runs if r.done and r.seconds_per_epoch is not None]
    return RowSummary(
        key=row.key, label=row.label, model=row.model, maci=row.maci, config=json_normal(row.config.to_dict()),
        seeds_done=seeds_done, complete=len(seeds_done) == len(settings.seeds), values=values,
        curves={s: {m: Curve.of(c) for m, c in ms.items()} for s, ms in curves.items()},
        complexity=Complexity(params, params_maci, Stats.of(peaks), Stats.of(speeds)), runs=runs)


def _run_info(settings: BenchmarkSettings, row: BenchRow, training: TrainingSet, seed: int,
              statuses: dict[tuple[str, int], RunStatus]) -> RunInfo:
    name = row.named(training, settings.shared).name
    run_dir = settings.run_dir(row, training, seed)
    status = statuses.get((name, seed))
    info = RunInfo(seed=seed, training=training.key, run_dir=str(run_dir.relative_to(settings.out)),
                   status=None if status is None else status.status)
    stored = {t: settings.stored_results(name, seed, training.subdir(t)) for t in training.tests}
    info.done = all(r is not None for r in stored.values())
    if info.done:
        info.values = {s.key: {m: _figure(stored[s.test], s, m) for m in settings.metrics}
                       for s in SETTINGS if s.test in training.tests}
    info.epochs_run, info.seconds_per_epoch = run_epoch_figures(run_dir)
    info.peak_memory = PeakRecord.read(run_dir)
    return info


def training_data_text(settings: BenchmarkSettings) -> dict[str, str]:
    """Per setting, which train/valid splits its runs were trained on."""
    out = {}
    for s in SETTINGS:
        t = settings.training_for(s.test)
        if settings.shared:
            out[s.key] = (f"the train/valid splits shared by {settings.iid_path.name} and {settings.ood_path.name} "
                          "(one training per row and seed)")
        else:
            out[s.key] = f"{t.data_path.name} train/valid (its own; the files do not share them)"
    return out


def aggregate(settings: BenchmarkSettings, hardware: Hardware, notes: list[str],
              statuses: Optional[dict[tuple[str, int], RunStatus]] = None) -> BenchmarkTable:
    """Collect every finished run of the benchmark from disk."""
    from cider_mer.text.cache import dataset_key

    rows = {row.key: summarize_row(settings, row, statuses) for row in settings.rows}
    peaks = [r.peak_memory for v in rows.values() for r in v.runs if r.peak_memory is not None]
    hardware.memory_kinds = sorted({p.kind for p in peaks})
    hardware.devices_measured = sorted({p.device_name for p in peaks})
    return BenchmarkTable(
        task=settings.task, metrics=list(settings.metrics), rates=[float(r) for r in settings.rates],
        training_seeds=list(settings.seeds), eval_seeds=list(settings.eval_seeds),
        data={k: {"file": p.name, "sha256_16": dataset_key(p)}
              for k, p in (("iid", settings.iid_path), ("ood", settings.ood_path))},
        shared_training=settings.shared, training_data=training_data_text(settings),
        base_config=json_normal(settings.base.to_dict()), rows=rows, hardware=hardware, notes=list(notes),
        command=settings.command, updated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        versions=versions())
