"""One trial, from ``study.ask()`` to its state in the study (the rules are in docs/tuning.md)."""

from __future__ import annotations

import enum
import math
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from cider_mer.config import TrainConfig
from cider_mer.data.labels import SELECTION_METRIC
from cider_mer.metrics import is_better
from cider_mer.tuning.census import Census, take_census
from cider_mer.tuning.heartbeat import Heartbeat
from cider_mer.tuning.settings import TuneError
from cider_mer.tuning.space import Param, apply_params, params_key
from cider_mer.tuning.storage import RetryCrashedTrial

if TYPE_CHECKING:
    import optuna
    from optuna.storages import RDBStorage
    from optuna.trial import TrialState

    from cider_mer.data.dataset import MerDataset
    from cider_mer.text.encoder import TextEncoder

TRIALS_DIR = "trials"  # trial k trains into OUT/trials/trial_k
EpochHook = Callable[[int, int, dict[str, float]], None]  # (trial number, epoch, the epoch's log row)


class Outcome(enum.Enum):
    """What became of one asked trial."""

    SURPLUS = "surplus"  # the study was full already: closed as FAIL before sampling, silently
    DUPLICATE = "duplicate"  # same set as a finished trial: closed with its outcome, not counted
    DUPLICATE_RUNNING = "duplicate_running"  # same set as a lower-numbered running trial: closed as FAIL
    PRUNED = "pruned"
    FAILED = "failed"  # trained, but no finite validation value
    COMPLETE = "complete"
    LOST = "lost"  # trained, but another worker had closed the trial meanwhile (heartbeat missed)

    @property
    def trained(self) -> bool:
        """A run was trained here and its state recorded."""
        return self in (Outcome.COMPLETE, Outcome.PRUNED, Outcome.FAILED)

    @property
    def finished(self) -> bool:
        """The trial counts toward the study's total (resets the worker's failure count)."""
        return self in (Outcome.COMPLETE, Outcome.PRUNED)

    @property
    def repeat(self) -> bool:
        """The sampler proposed a set already tried."""
        return self in (Outcome.DUPLICATE, Outcome.DUPLICATE_RUNNING)

    @property
    def reported(self) -> bool:
        """Worth a log line and fresh output files."""
        return self not in (Outcome.SURPLUS, Outcome.DUPLICATE_RUNNING)


@dataclass
class TrialContext:
    """What every trial of one worker shares."""

    study: optuna.Study
    storage: RDBStorage
    study_id: int
    base: TrainConfig
    data: MerDataset
    out_dir: Path
    space: Sequence[Param]
    n_trials: int
    encoder: Optional[TextEncoder]
    progress: bool
    heartbeat_interval: int
    log: Callable[[str], None]
    on_epoch: Optional[EpochHook]
    storage_shown: str


def run_trial(ctx: TrialContext, trial: optuna.Trial) -> Outcome:
    """Run one asked trial to its end and close it in the study.

    A trial that raises is closed as FAIL (re-queued when interrupted) and the exception goes on.
    """
    trial_id = ctx.storage.get_trial_id_from_study_id_trial_number(ctx.study_id, trial.number)
    with Heartbeat(ctx.storage, trial_id, ctx.heartbeat_interval):
        try:
            return _run(ctx, trial)
        except TuneError:
            raise
        except BaseException as exc:
            _close_broken(ctx, trial, trial_id, exc)
            raise


def _run(ctx: TrialContext, trial: optuna.Trial) -> Outcome:
    from optuna.trial import TrialState

    census = take_census(ctx.study, ctx.space)
    if census.before(trial.number) >= ctx.n_trials:  # another worker took the last place at the same moment
        trial.set_user_attr("skipped", "surplus")
        _tell(ctx, trial, state=TrialState.FAIL)
        return Outcome.SURPLUS
    params = {p.name: p.suggest(trial) for p in ctx.space}
    key = params_key(params, ctx.space)
    repeat = _close_repeat(ctx, trial, census, key)
    if repeat is not None:
        return repeat
    cfg = apply_params(ctx.base, params, ctx.space)
    return _train(ctx, trial, cfg, _claim_run_dir(ctx, trial), key)


def _close_repeat(ctx: TrialContext, trial: optuna.Trial, census: Census, key: Optional[tuple]) -> Optional[Outcome]:
    """Close a trial whose set was tried already (without training it); None for a new set."""
    from optuna.trial import TrialState

    orig = census.finished_like(key, trial.number, ctx.space)
    if orig is not None:
        trial.set_user_attr("duplicate_of", orig.number)
        if orig.state == TrialState.COMPLETE:
            _tell(ctx, trial, value=orig.value)
        else:
            if orig.intermediate_values:
                step = max(orig.intermediate_values)
                trial.report(orig.intermediate_values[step], step)
            _tell(ctx, trial, state=TrialState.PRUNED)
        return Outcome.DUPLICATE
    twin = census.running_like(key, trial.number, ctx.space)
    if twin is not None:
        trial.set_user_attr("skipped", "duplicate_running")
        trial.set_user_attr("duplicate_of", twin.number)
        _tell(ctx, trial, state=TrialState.FAIL)
        return Outcome.DUPLICATE_RUNNING
    return None


def _claim_run_dir(ctx: TrialContext, trial: optuna.Trial) -> Path:
    """The trial's run folder, which must not exist yet (else the trial is closed and TuneError raised)."""
    from optuna.trial import TrialState

    run_dir = (ctx.out_dir / TRIALS_DIR / f"trial_{trial.number}").resolve()
    if run_dir.exists():
        trial.set_user_attr("skipped", "folder_taken")
        _tell(ctx, trial, state=TrialState.FAIL)
        raise TuneError(f"{run_dir} already exists but belongs to no trial of study '{ctx.study.study_name}' "
                        f"in {ctx.storage_shown}: use a fresh --out for a new study (or the original --storage)")
    return run_dir


class _EpochWatch:
    """The trainer's epoch callback: reports each epoch's validation criterion (``val_selection``: the
    selection metric, or its group-balanced form with ``selection``) to the pruner and keeps the best."""

    def __init__(self, trial: optuna.Trial, metric: str, hook: Optional[EpochHook]) -> None:
        self.trial, self.metric, self.hook = trial, metric, hook
        self.best, self.best_epoch, self.last = None, 0, 0

    def __call__(self, epoch: int, row: dict[str, float]) -> None:
        import optuna

        value = float(row["val_selection"])
        self.last = epoch
        if not math.isnan(value) and (self.best is None or is_better(value, self.best, self.metric)):
            self.best, self.best_epoch = value, epoch
        self.trial.report(value, epoch)
        if self.hook is not None:
            self.hook(self.trial.number, epoch, row)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch} (val {self.metric}, {row['val_selection_criterion']} "
                                     f"criterion, {value:.2f})")


def _train(ctx: TrialContext, trial: optuna.Trial, cfg: TrainConfig, run_dir: Path, key: Optional[tuple]) -> Outcome:
    import optuna
    from optuna.trial import TrialState

    from cider_mer.training.trainer import train

    trial.set_user_attr("run_dir", str(run_dir))
    trial.set_user_attr("host", socket.gethostname())
    watch = _EpochWatch(trial, SELECTION_METRIC[cfg.task], ctx.on_epoch)
    try:
        result = train(cfg, ctx.data, run_dir, progress=ctx.progress,
                       encoder=ctx.encoder if cfg.freeze_text_encoder else None, epoch_callback=watch)
    except optuna.TrialPruned:
        _set_attrs(trial, best_value=watch.best, best_epoch=watch.best_epoch, epochs_run=watch.last)
        _tell(ctx, trial, state=TrialState.PRUNED)
        return Outcome.PRUNED
    _set_attrs(trial, best_value=result.best_value, best_epoch=result.best_epoch, epochs_run=result.epochs_run,
               seconds=round(result.seconds, 1))
    if not math.isfinite(result.best_value):
        trial.set_user_attr("error", "no finite validation value")
        _tell(ctx, trial, state=TrialState.FAIL)
        return Outcome.FAILED
    # Two workers may have trained the same set at once: the later one is the duplicate.
    same = take_census(ctx.study, ctx.space).finished_like(key, trial.number, ctx.space)
    if same is not None:
        trial.set_user_attr("duplicate_of", same.number)
    return Outcome.COMPLETE if _tell(ctx, trial, value=result.best_value) else Outcome.LOST


def _set_attrs(trial: optuna.Trial, **attrs: float) -> None:
    for name, value in attrs.items():
        trial.set_user_attr(name, value)


def _close_broken(ctx: TrialContext, trial: optuna.Trial, trial_id: int, exc: BaseException) -> None:
    """Mark a trial that raised FAIL with its error; queue its parameters again when it was interrupted."""
    from optuna.trial import TrialState

    frozen = ctx.storage.get_trial(trial_id)
    if frozen.state != TrialState.RUNNING:
        return
    interrupted = isinstance(exc, KeyboardInterrupt)
    trial.set_user_attr("error", "interrupted (Ctrl-C or SIGTERM); parameters re-queued" if interrupted
                        else f"{type(exc).__name__}: {str(exc)[:300]}")
    _tell(ctx, trial, state=TrialState.FAIL)
    if interrupted:  # not broken: queue the same parameters again, like a crashed worker's
        RetryCrashedTrial()(ctx.study, frozen)


def _tell(ctx: TrialContext, trial: optuna.Trial, state: Optional[TrialState] = None,
          value: Optional[float] = None) -> bool:
    """``study.tell``; False when another worker had closed the trial already (its heartbeat was late)."""
    from optuna.trial import TrialState

    try:
        ctx.study.tell(trial, values=value, state=state)
        return True
    except (ValueError, RuntimeError) as exc:
        stored = [t for t in ctx.study.get_trials(deepcopy=False) if t.number == trial.number]
        if not stored or stored[0].state == TrialState.RUNNING:
            raise
        ctx.log(f"trial {trial.number}: could not record its result ({exc}); another worker marked it "
                f"{stored[0].state.name} (heartbeat missed?) and re-queued its parameters")
        return False
