"""Hyper-parameter search (SPEC §8): Optuna TPE over the paper's Table II space, on VALIDATION.

``tune(base, data_path, out_dir, n_trials)`` trains one run per trial into
``out_dir/trials/trial_<number>`` and optimises the run's best VALIDATION selection metric
(Non0 Acc2 for ``binary``, Acc7 for ``seven``, maximised; MAE for ``regression``, minimised); the test split is never read (reference notes
§4.4). The study lives in a database (SQLite ``out_dir/study.db`` by default, or a shared
PostgreSQL URL); ``n_trials`` is the TOTAL of finished distinct parameter sets wanted, so workers
resume and stop together. docs/tuning.md gives the counting rules, the handling of duplicates,
surplus trials, interruptions and crashed workers, and the output files.

The parts: :mod:`.sampler` (per-trial seeded TPE), :mod:`.census` (counting), :mod:`.settings`
(what a study's trials share), :mod:`.trial` (one trial), :mod:`.output` (files and log lines).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from cider_mer.config import TrainConfig
from cider_mer.data.labels import SELECTION_METRIC
from cider_mer.metrics import selection_direction
from cider_mer.tuning.census import take_census
from cider_mer.tuning.output import BEST_CONFIG, TRIALS_CSV, check_folder_study, trial_line, write_outputs
from cider_mer.tuning.settings import TuneError, check_settings, study_settings
from cider_mer.tuning.space import TABLE_II, Param, apply_params, clean_params, space_size
from cider_mer.tuning.storage import default_storage_url, mask_url, open_storage
from cider_mer.tuning.trial import EpochHook, Outcome, TrialContext, run_trial

if TYPE_CHECKING:
    import optuna
    from optuna.storages import RDBStorage

    from cider_mer.text.encoder import TextEncoder

MAX_REPEATS = 100  # consecutive duplicate proposals before a worker gives up
MAX_FAILURES = 3  # consecutive failed trials (exceptions) before a worker re-raises the last error


@dataclass
class TuneResult:
    study_name: str
    storage: str  # the URL without its password
    out_dir: Path
    n_requested: int
    n_finished: int  # distinct finished parameter sets in the study (COMPLETE + PRUNED)
    trials_trained_here: int
    best_trial: Optional[int]
    best_value: Optional[float]
    best_params: dict[str, Any] = field(default_factory=dict)
    best_run_dir: Optional[str] = None
    timed_out: bool = False

    @property
    def best_config_path(self) -> Path:
        return self.out_dir / BEST_CONFIG

    @property
    def trials_csv_path(self) -> Path:
        return self.out_dir / TRIALS_CSV


@dataclass
class Tally:
    """What one worker's search loop counts."""

    trained: int = 0  # trials trained here (complete, pruned or failed)
    repeats: int = 0  # consecutive proposals of an already tried set
    failures: int = 0  # consecutive trials that raised
    timed_out: bool = False

    def count(self, outcome: Outcome) -> None:
        if outcome.finished:
            self.failures = 0
        self.repeats = self.repeats + 1 if outcome.repeat else 0
        self.trained += outcome.trained


def default_study_name(data_path: str | Path, task: str) -> str:
    return f"{Path(data_path).stem}-{task}"


def tune(base: TrainConfig, data_path: str | Path, out_dir: str | Path, n_trials: int,
         storage: Optional[str] = None, study_name: Optional[str] = None, timeout: Optional[float] = None,
         space: Sequence[Param] = TABLE_II, pruning: bool = True, prune_warmup: int = 3,
         n_startup_trials: int = 10, heartbeat_interval: int = 60, grace_period: Optional[int] = None,
         progress: bool = False, log: Callable[[str], None] = print, encoder: Optional[TextEncoder] = None,
         on_epoch: Optional[EpochHook] = None, threads: Optional[int] = None) -> TuneResult:
    """Run (or continue) a study until it holds ``n_trials`` finished distinct parameter sets.

    ``base`` gives every setting that is not searched, including the training seed (every trial
    uses it) and the sampler's seed. ``storage`` is an SQLAlchemy URL (default: SQLite in
    ``out_dir``). ``timeout`` (seconds) stops starting new trials. ``progress`` shows the trainer's
    per-epoch lines; ``log`` gets one line per finished trial. ``encoder`` is a loaded frozen
    TextEncoder to share among trials (loaded here once when ``base.freeze_text_encoder``;
    fine-tuning trials each load a fresh one). ``on_epoch(trial_number, epoch, row)`` is called
    after each epoch (it may raise to stop). ``threads``: torch threads of this worker (default:
    ``cider --threads``, else torch's own when ``OMP_NUM_THREADS`` is set, else 1; see
    :func:`cider_mer.threads.worker_threads`).

    One study per folder: a folder whose ``tuning.json`` names another study is refused.
    """
    from cider_mer.data.dataset import load_dataset
    from cider_mer.io_utils import ensure_writable_dir
    from cider_mer.runs import check_cache_dir
    from cider_mer.threads import worker_threads

    _check_request(n_trials, timeout, space)
    out_dir, data_path = Path(out_dir), Path(data_path)
    ensure_writable_dir(out_dir, "tuning folder")
    check_cache_dir(base, data_path)
    url = storage or default_storage_url(out_dir)
    shown = mask_url(url)
    name = study_name or default_study_name(data_path, base.task)
    check_folder_study(out_dir, name)
    data = load_dataset(data_path)
    apply_params(base, {}, space)  # the base config itself must be valid
    out_dir.mkdir(parents=True, exist_ok=True)
    heartbeat_interval = max(1, int(heartbeat_interval))
    rdb = open_storage(url, heartbeat_interval, grace_period)
    with warnings.catch_warnings(), worker_threads(threads):
        study = _open_study(rdb, name, shown, base.seed, n_startup_trials, pruning, prune_warmup,
                            selection_direction(base.task))
        check_settings(study, study_settings(base, data_path, space), shown)
        if encoder is None and base.freeze_text_encoder:
            from cider_mer.runs import load_encoder

            encoder = load_encoder(base)
        ctx = TrialContext(study, rdb, rdb.get_study_id_from_name(name), base, data, out_dir, space, n_trials,
                           encoder, progress, heartbeat_interval, log, on_epoch, shown)
        tally = _search(ctx, None if timeout is None else time.monotonic() + timeout)
        best = write_outputs(ctx)
        census = take_census(study, space)
    return TuneResult(name, shown, out_dir, n_trials, census.done, tally.trained,
                      None if best is None else best.number, None if best is None else best.value,
                      {} if best is None else clean_params(best.params, space),
                      None if best is None else best.user_attrs.get("run_dir"), tally.timed_out)


def _check_request(n_trials: int, timeout: Optional[float], space: Sequence[Param]) -> None:
    if n_trials < 1:
        raise ValueError(f"--trials must be >= 1, got {n_trials}")
    if timeout is not None and timeout <= 0:
        raise ValueError(f"--timeout must be > 0 seconds, got {timeout}")
    names = [p.name for p in space]
    if len(set(names)) != len(names) or not names:
        raise ValueError("the search space needs distinct parameter names")
    if n_trials > space_size(space):
        raise ValueError(f"--trials {n_trials} is more than the {space_size(space)} distinct points "
                         "of the search space")


def _open_study(rdb: RDBStorage, name: str, shown: str, seed: int, n_startup_trials: int, pruning: bool,
                prune_warmup: int, direction: str = "maximize") -> optuna.Study:
    """Create or load the study (inside the caller's ``warnings.catch_warnings``)."""
    import optuna

    from cider_mer.tuning.sampler import make_sampler

    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    # We run the trials ourselves (ask/tell) and keep their heartbeats (heartbeat.Heartbeat).
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=max(0, prune_warmup))
              if pruning else optuna.pruners.NopPruner())
    try:
        study = optuna.create_study(storage=rdb, study_name=name, direction=direction,
                                    sampler=make_sampler(seed, n_startup_trials), pruner=pruner, load_if_exists=True)
    except ValueError as exc:
        raise TuneError(f"study '{name}' in {shown}: {exc}") from None
    if study.direction.name.lower() != direction:
        raise TuneError(f"study '{name}' in {shown} is a {study.direction.name.lower()} study; this task's selection "
                        f"metric needs '{direction}' (a study made by `cider tune` for another task?)")
    return study


def _search(ctx: TrialContext, deadline: Optional[float]) -> Tally:
    """Run trials until the study holds ``ctx.n_trials`` finished ones (or the deadline passes)."""
    import optuna

    tally, waiting_said = Tally(), False
    census = take_census(ctx.study, ctx.space)
    ctx.log(f"study '{ctx.study.study_name}' in {ctx.storage_shown}: {census.done}/{ctx.n_trials} finished, "
            f"{len(census.running)} running elsewhere; {selection_direction(ctx.base.task).replace('ize', 'ising')} val "
            f"{SELECTION_METRIC[ctx.base.task]}")
    while True:
        optuna.storages.fail_stale_trials(ctx.study)
        census = take_census(ctx.study, ctx.space)
        if census.done >= ctx.n_trials:
            return tally
        if deadline is not None and time.monotonic() >= deadline:
            tally.timed_out = True
            return tally
        if census.claimed >= ctx.n_trials and not census.waiting:
            if not waiting_said:
                ctx.log(f"waiting for {len(census.running)} trial(s) running elsewhere "
                        f"({', '.join(str(t.number) for t in census.running)}); a crashed one will be taken over")
                waiting_said = True
            time.sleep(min(5.0, ctx.heartbeat_interval))
            continue
        waiting_said = False
        if not _next_trial(ctx, tally):
            return tally


def _next_trial(ctx: TrialContext, tally: Tally) -> bool:
    """Ask for a trial, run it, count and report it; False when the sampler keeps repeating itself."""
    trial = ctx.study.ask()
    try:
        outcome = run_trial(ctx, trial)
    except TuneError:
        raise
    except Exception as exc:  # the trial is recorded as FAIL; a few in a row mean a real problem
        tally.failures += 1
        write_outputs(ctx)
        ctx.log(f"trial {trial.number:3d} failed: {type(exc).__name__}: {str(exc).strip()[:200]}")
        if tally.failures >= MAX_FAILURES:
            raise
        return True
    tally.count(outcome)
    if tally.repeats >= MAX_REPEATS:
        ctx.log(f"stopping: the sampler proposed {tally.repeats} finished parameter sets in a row "
                "(the space is nearly exhausted)")
        return False
    if outcome.reported:
        best = write_outputs(ctx)
        ctx.log(trial_line(ctx, trial.number, outcome, best))
    return True
