"""The benchmark (the paper's Tables IV and VI as one call): train, evaluate, resume, aggregate, write.

Layout under ``out``::

    runs/<row>/seed<k>/                 a normal run (shared train/valid), evaluated into
        eval_iid/ and eval_ood/         RMFM on each file's test split (results.json, .csv, .md, .png)
        peak_memory.json                its training's peak memory
    runs/<row>/{iid,ood}/seed<k>/       the same when the files do not share train/valid
    benchmark.md / .csv / .json / .png  the tables over rows and training seeds

Each (row, seed) goes through :func:`cider_mer.ablation.run.run_one`, the ablation suite's runner:
an evaluated run is skipped, an interrupted one is continued, a run folder with other settings is
refused. A folder made for another IID/OOD pair is refused as a whole.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from cider_mer.ablation.run import (
    DEFAULT_EPOCHS,
    DEFAULT_TRAINING_SEEDS,
    Evaluation,
    RunStatus,
    check_run_settings,
    run_one,
    shared_encoder,
    training_seeds,
)
from cider_mer.benchmark.plan import (
    DEFAULT_MODELS,
    MPLMM_PRETRAIN_CAP,
    BenchmarkSettings,
    build_rows,
    shares_training_data,
)
from cider_mer.benchmark.render import write_outputs
from cider_mer.benchmark.resources import PeakMemory, device_name
from cider_mer.benchmark.table import BenchmarkTable, Hardware, aggregate
from cider_mer.config import TrainConfig
from cider_mer.errors import ConfigError
from cider_mer.evaluation.protocol import DEFAULT_EVAL_SEEDS
from cider_mer.io_utils import ensure_writable_dir, read_json
from cider_mer.metrics import RATES_DEFAULT
from cider_mer.locks import LOCK_NAME, locked
from cider_mer.runs import CONFIG_FILE, RunError

TABLE_FILE = "benchmark.json"
TEXT_DIM_UNKNOWN = 768  # the text width used to check model shapes when runs load their own (fine-tuned) encoder


def default_base_config(task: str = "binary", epochs: int = DEFAULT_EPOCHS) -> TrainConfig:
    """The run-level base when no ``--config`` is given: ``cpu_friendly_config`` (frozen default
    MiniLM with cached features, length buckets, patience max(3, epochs // 3)); without MACI for
    regression."""
    from cider_mer.training.presets import cpu_friendly_config

    no_maci = {"head": "linear", "counterfactual": False} if task == "regression" else {}
    return cpu_friendly_config(task, epochs=epochs, **no_maci)


def _check_folder(settings: BenchmarkSettings) -> None:
    """Refuse a benchmark folder made for other data files (its stored evaluations would not fit)."""
    from cider_mer.text.cache import dataset_key

    path = settings.out / TABLE_FILE
    if not path.is_file():
        return
    try:
        stored = read_json(path)["data"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunError(f"{path}: unreadable benchmark file ({exc}); use another --out") from None
    for kind, file in (("iid", settings.iid_path), ("ood", settings.ood_path)):
        now = dataset_key(file)
        if stored.get(kind, {}).get("sha256_16") != now:
            raise RunError(f"{path}: this benchmark was made with another {kind.upper()} file (content "
                           f"{stored.get(kind, {}).get('sha256_16')}, now {now} from {file}); use another --out")


def _check_runs(settings: BenchmarkSettings) -> None:
    """Refuse, before anything is written, any existing run folder that holds other settings or data."""
    from cider_mer.text.cache import dataset_key

    for row in settings.rows:
        for training in settings.training_sets:
            for seed in settings.seeds:
                run_dir = settings.run_dir(row, training, seed)
                if (run_dir / CONFIG_FILE).is_file():
                    check_run_settings(run_dir, row.named(training, settings.shared).for_seed(seed),
                                       dataset_key(training.data_path))


def _check_models(settings: BenchmarkSettings, datasets: dict, text_dim: int) -> None:
    """Build every row's model for the shapes of its training data (no encoder, no weights kept), so
    that a model that cannot take this data (its construction rejects the shapes) is refused
    before any row trains."""
    from cider_mer.models.registry import build_model
    from cider_mer.runs import shapes_for

    for row in settings.rows:
        for training in settings.training_sets:
            data = datasets[training.source]
            try:
                build_model(row.model, shapes_for(data, text_dim, settings.task), row.config.model_config,
                            text_encoder=None, maci=row.maci)
            except ValueError as exc:
                raise ConfigError(f"{training.data_path}: model '{row.model}' cannot take this data ({exc}); "
                                  "leave it out of --models / --maci-plugins") from None


def _notes(settings: BenchmarkSettings) -> list[str]:
    notes = ["Baselines are trained with their own objective and registered default settings; without MACI unless "
             "the row says +MACI (MCM head and counterfactual text on). CIDer uses MSSD"
             + (" and MACI." if settings.task != "regression" else "; no MACI with the regression task.")]
    mplmm = [r for r in settings.rows if r.model == "mplmm"]
    if mplmm:
        pre = mplmm[0].config.model_config.pretrain_epochs
        notes.append(f"MPLMM: stage-1 pre-training (complete inputs, not selectable) cut to pretrain_epochs={pre} = "
                     f"min({MPLMM_PRETRAIN_CAP}, epochs // 2) of {settings.base.epochs} epochs, so that prompt "
                     "fine-tuning epochs remain to select from.")
    return notes


def run_benchmark(base: TrainConfig, iid_path: str | Path, ood_path: str | Path, out: str | Path,
                  models: str | Sequence[str] = DEFAULT_MODELS, maci_plugins: Optional[str | Sequence[str]] = None,
                  n_seeds: int = DEFAULT_TRAINING_SEEDS, eval_seeds: Sequence[int] = DEFAULT_EVAL_SEEDS,
                  rates: Optional[Sequence[float]] = None, progress: bool = True,
                  log: Callable[[str], None] = print, command: Optional[str] = None, encoder=None) -> BenchmarkTable:
    """Run (or continue) the benchmark and return the table written to ``out/benchmark.json``.

    ``base``: the run-level settings of every row (see :func:`default_base_config`); ``models``:
    names or a comma list; ``maci_plugins``: baselines that get an extra row with MACI;
    ``n_seeds``: training seeds ``base.seed .. base.seed + n_seeds - 1``.
    """
    from cider_mer.data.dataset import load_dataset
    from cider_mer.runs import resolve_device

    rows = build_rows(base, models, maci_plugins)  # fails before any work on a bad model list
    ensure_writable_dir(out, "benchmark folder")
    iid_path, ood_path = Path(iid_path), Path(ood_path)
    datasets = {"iid": load_dataset(iid_path), "ood": load_dataset(ood_path)}
    settings = BenchmarkSettings(
        base=base, iid_path=iid_path, ood_path=ood_path, out=Path(out), rows=rows, seeds=training_seeds(base, n_seeds),
        shared=shares_training_data(datasets["iid"], datasets["ood"]), eval_seeds=[int(s) for s in eval_seeds],
        rates=[round(float(r), 4) for r in (rates if rates is not None else RATES_DEFAULT)], command=command)
    settings.check_protocol()
    _check_folder(settings)
    _check_runs(settings)
    encoder = shared_encoder(base, encoder)
    _check_models(settings, datasets, encoder.dim if encoder is not None else TEXT_DIM_UNKNOWN)
    device = resolve_device(base.device)
    hardware = Hardware(str(device), device_name(device), [], [])
    notes = _notes(settings)
    with locked(settings.out / LOCK_NAME, f"benchmark folder {settings.out}"):  # one writer per folder
        measure = PeakMemory(device)
        write_outputs(aggregate(settings, hardware, notes), settings.out)  # records the data files before any run
        trainings = settings.training_sets
        total = len(rows) * len(settings.seeds) * len(trainings)
        log(f"benchmark: {len(rows)} row(s) x {len(settings.seeds)} training seed(s) x {len(trainings)} training set(s) "
            f"= {total} run(s) into {settings.out}; "
            + ("the files share train/valid: one training per row and seed" if settings.shared
               else "the files have their own train/valid: each row and seed is trained on both"))
        statuses: dict[tuple[str, int], RunStatus] = {}
        t0 = time.time()
        table = None
        for row in rows:
            for seed in settings.seeds:
                for training in trainings:
                    entry = row.named(training, settings.shared)
                    train_data = datasets[training.source]
                    evals = [Evaluation(training.subdir(t), datasets[t]) for t in training.tests]
                    statuses[(entry.name, seed)] = run_one(settings, entry, seed, train_data, encoder=encoder,
                                                           progress=progress, log=log, evaluations=evals, measure=measure)
            table = aggregate(settings, hardware, notes, statuses)
            write_outputs(table, settings.out)
        skipped = sum(1 for s in statuses.values() if s.status == "skipped")
        log(f"benchmark finished in {time.time() - t0:.0f}s ({total - skipped} run(s) worked on, {skipped} skipped); "
            f"tables in {settings.out / 'benchmark.md'}")
    return table
