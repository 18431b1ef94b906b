"""Hyper-parameter search (SPEC §8): Optuna TPE over the paper's Table II space, on VALIDATION.

``tune(base, data_path, out_dir, n_trials)`` trains one run per trial into
``out_dir/trials/trial_<number>`` and maximises the run's best VALIDATION selection metric
(Non0 Acc2 for ``binary``, Acc7 for ``seven``); the test split is never read (the authors
optimised the test metric, reference notes §4.4). A MedianPruner stops trials whose per-epoch
validation metric falls below the median of earlier trials at the same epoch.

The study lives in a database (SQLite file ``out_dir/study.db`` by default; a PostgreSQL URL lets
many worker processes on many machines share it). ``n_trials`` is the TOTAL wanted: a worker
counts the study's finished trials and runs only the missing ones, so re-running with a larger
number continues the study, and several workers stop together at exactly ``n_trials``.

Counting rules (see docs/tuning.md):

- *finished* = COMPLETE or PRUNED trials, counted once per distinct parameter set;
- a sampled set equal to a finished trial's is not retrained: the trial is closed at once with the
  earlier outcome (COMPLETE with the same value, or PRUNED) and the user attribute
  ``duplicate_of``; it does not count. One equal to a lower-numbered RUNNING trial is closed as FAIL
  (``skipped=duplicate_running``);
- before training, a worker checks that the trials finished, running or queued before its own
  still leave room; if not (two workers asked at the same moment) its trial is closed as FAIL
  (``skipped=surplus``) without parameters;
- a worker that finds every remaining trial running elsewhere waits for them, and takes over any
  whose process dies (heartbeat; the trial becomes FAIL and a WAITING copy is queued);
- an interrupted trial (Ctrl-C, SIGTERM through the CLI) is marked FAIL and re-queued.

After every trial the worker rewrites ``out_dir/trials.csv`` (the whole study) and
``out_dir/best_config.json`` (a flat TrainConfig: the base config with the best trial's values,
accepted by ``cider train --config``), both atomically.
"""

from __future__ import annotations

import io
import math
import socket
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from cider_mer.data.labels import SELECTION_METRIC
from cider_mer.io_utils import atomic_write_json, atomic_write_text, json_normal
from cider_mer.training.config import TrainConfig
from cider_mer.tuning.space import TABLE_II, Param, apply_params, clean_params, params_key, space_size
from cider_mer.tuning.storage import RetryCrashedTrial, default_storage_url, mask_url, open_storage

TRIALS_DIR, TRIALS_CSV, BEST_CONFIG, SUMMARY = "trials", "trials.csv", "best_config.json", "tuning.json"
SETTINGS_ATTR = "cider_settings"
# Settings that may differ between workers of one study (they do not change what a trial computes).
RUNTIME_SETTINGS = ("device", "compile", "eval_batch_size")
MAX_REPEATS = 100  # consecutive duplicate proposals before a worker gives up
MAX_FAILURES = 3  # consecutive failed trials (exceptions) before a worker re-raises the last error


class TuneError(ValueError):
    """A tuning request that cannot go on (settings differ from the study's, a trial folder is taken...)."""


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


def default_study_name(data_path: str | Path, task: str) -> str:
    return f"{Path(data_path).stem}-{task}"


# --------------------------------------------------------------------------- sampler


def _trial_seed(seed: int, number: int) -> int:
    return (int(seed) * 1_000_003 + int(number) * 7_919 + 17) % (2**32)


def make_sampler(seed: int, n_startup_trials: int = 10) -> Any:
    """TPE seeded per trial from ``(seed, trial number)``.

    One TPESampler(seed) per worker would make every worker draw the same points in the same order
    (all duplicates); seeding each trial by its study-wide unique number keeps a run reproducible
    for a given seed and history and gives concurrent workers different points. ``constant_liar``
    makes TPE treat the trials running elsewhere as bad, so workers spread out.
    """
    import optuna

    class PerTrialSeededTPE(optuna.samplers.BaseSampler):
        def __init__(self) -> None:
            self._current: tuple[int, Any] | None = None

        def _for(self, trial: Any) -> Any:
            if self._current is None or self._current[0] != trial.number:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    sampler = optuna.samplers.TPESampler(seed=_trial_seed(seed, trial.number),
                                                         n_startup_trials=n_startup_trials, constant_liar=True)
                self._current = (trial.number, sampler)
            return self._current[1]

        def infer_relative_search_space(self, study: Any, trial: Any) -> dict:
            return self._for(trial).infer_relative_search_space(study, trial)

        def sample_relative(self, study: Any, trial: Any, search_space: dict) -> dict:
            return self._for(trial).sample_relative(study, trial, search_space)

        def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
            return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

        def before_trial(self, study: Any, trial: Any) -> None:
            self._for(trial).before_trial(study, trial)

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            self._for(trial).after_trial(study, trial, state, values)
            self._current = None

        def reseed_rng(self) -> None:  # seeds come from the trial numbers
            pass

    return PerTrialSeededTPE()


# --------------------------------------------------------------------------- study bookkeeping


@dataclass
class Census:
    """What the study holds, as this module counts it."""

    finished: list  # first trial of each distinct finished (COMPLETE/PRUNED) parameter set
    running: list  # RUNNING trials that were not skipped
    waiting: list  # queued trials (retries of crashed ones, or enqueued by hand)

    @property
    def done(self) -> int:
        return len(self.finished)

    @property
    def claimed(self) -> int:
        return len(self.finished) + len(self.running) + len(self.waiting)


def take_census(study: Any, space: Sequence[Param]) -> Census:
    from optuna.trial import TrialState

    finished, seen, running, waiting = [], set(), [], []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            key = params_key(t.params, space)
            if "duplicate_of" in t.user_attrs or key is None or key in seen:
                continue
            seen.add(key)
            finished.append(t)
        elif t.state == TrialState.RUNNING and "skipped" not in t.user_attrs:
            running.append(t)
        elif t.state == TrialState.WAITING:
            waiting.append(t)
    return Census(finished, running, waiting)


def _settings(base: TrainConfig, data_path: str | Path, space: Sequence[Param]) -> dict[str, Any]:
    """What every trial of one study must share: the base config less the searched and runtime
    settings, the dataset's content, the search space and the pruning."""
    from cider_mer.text.cache import dataset_key
    from cider_mer.text.encoder import encoder_label

    cfg = base.to_dict()
    for name in RUNTIME_SETTINGS:
        cfg.pop(name, None)
    model_cfg = dict(cfg.get("model_config") or {})
    for p in space:
        (model_cfg if p.target == "model_config" else cfg).pop(p.name, None)
    cfg["model_config"] = model_cfg
    cfg["text_encoder"] = encoder_label(base.text_encoder)
    return {"base_config": cfg, "data_sha256_16": dataset_key(data_path), "space": [p.describe() for p in space],
            "metric": SELECTION_METRIC[base.task]}


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): d}


def check_settings(study: Any, settings: dict[str, Any], storage_shown: str) -> None:
    """Store the settings in a new study; refuse to add trials with other settings to an old one."""
    ours = json_normal(settings)
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored is None:
        study.set_user_attr(SETTINGS_ATTR, ours)
        return
    if stored == ours:
        return
    a, b = _flatten(stored), _flatten(ours)
    diffs = [f"{k}: {a.get(k, '-')} in the study, {b.get(k, '-')} here" for k in sorted(set(a) | set(b))
             if a.get(k) != b.get(k)]
    raise TuneError(f"study '{study.study_name}' in {storage_shown} was created with other settings "
                    f"({'; '.join(diffs[:4])}{' ...' if len(diffs) > 4 else ''}); "
                    "use the same settings or another --study")


def _trials_frame(study: Any) -> Any:
    import pandas as pd

    attrs = ("number", "state", "value", "duration", "params", "user_attrs")
    df = study.trials_dataframe(attrs=attrs)
    if df.empty:
        return pd.DataFrame(columns=["number", "state", "value", "duration_s"])
    if "duration" in df:
        df["duration_s"] = df.pop("duration").dt.total_seconds().round(2)
    df = df.rename(columns=lambda c: c.replace("user_attrs_", ""))
    for c in df.columns:
        if c.startswith("params_") and df[c].dtype.kind == "f":
            df[c] = df[c].round(6)
    first = [c for c in ("number", "state", "value", "duration_s") if c in df]
    params = [c for c in df.columns if c.startswith("params_")]
    return df[first + params + [c for c in df.columns if c not in first and c not in params]]


def best_trial(study: Any) -> Any:
    """The COMPLETE trial with the highest value (lowest number on ties), or None."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None and math.isfinite(t.value)]
    return max(done, key=lambda t: (t.value, -t.number)) if done else None


def write_outputs(study: Any, base: TrainConfig, out_dir: Path, space: Sequence[Param], n_trials: int,
                  storage_shown: str) -> Any:
    """Rewrite trials.csv, best_config.json and tuning.json (atomically); return the best trial."""
    buf = io.StringIO()
    _trials_frame(study).to_csv(buf, index=False)
    atomic_write_text(out_dir / TRIALS_CSV, buf.getvalue())
    best = best_trial(study)
    census = take_census(study, space)
    summary: dict[str, Any] = {
        "study": study.study_name, "storage": storage_shown, "metric": f"val_{SELECTION_METRIC[base.task]}",
        "direction": "maximize", "requested_trials": n_trials, "finished_trials": census.done,
        "search_space": [p.describe() for p in space], "best": None,
    }
    if best is not None:
        cfg = apply_params(base, best.params, space)
        atomic_write_json(out_dir / BEST_CONFIG, cfg.to_dict())
        summary["best"] = {"trial": best.number, "value": best.value, "params": clean_params(best.params, space),
                           "run_dir": best.user_attrs.get("run_dir"), "host": best.user_attrs.get("host")}
    atomic_write_json(out_dir / SUMMARY, summary)
    return best


# --------------------------------------------------------------------------- one trial


class _Heartbeat:
    """Record the trial's heartbeat every ``interval`` seconds in a background thread."""

    def __init__(self, storage: Any, trial_id: int, interval: int) -> None:
        self._storage, self._trial_id, self._interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{trial_id}", daemon=True)

    def _beat(self) -> None:
        while True:
            try:
                self._storage.record_heartbeat(self._trial_id)
            except Exception:  # a lost connection: try again next time, the trial goes on
                pass
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> "_Heartbeat":
        self._storage.record_heartbeat(self._trial_id)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def _tell(study: Any, trial: Any, log: Callable[[str], None], **kwargs: Any) -> bool:
    """``study.tell`` that survives a trial already closed by another worker (its heartbeat was late)."""
    from optuna.trial import TrialState

    try:
        study.tell(trial, **kwargs)
        return True
    except (ValueError, RuntimeError) as exc:
        stored = [t for t in study.get_trials(deepcopy=False) if t.number == trial.number]
        if not stored or stored[0].state == TrialState.RUNNING:
            raise
        log(f"trial {trial.number}: could not record its result ({exc}); another worker marked it "
            f"{stored[0].state.name} (heartbeat missed?) and re-queued its parameters")
        return False


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else str(value)


@dataclass
class _Context:
    study: Any
    storage: Any
    study_id: int
    base: TrainConfig
    data: Any
    data_path: Path
    out_dir: Path
    space: Sequence[Param]
    n_trials: int
    encoder: Any
    progress: bool
    heartbeat_interval: int
    log: Callable[[str], None]
    on_epoch: Optional[Callable[[int, int, dict], None]]
    storage_shown: str


def _run_trial(ctx: _Context, trial: Any) -> Optional[str]:
    """Run one asked trial to its end; return its outcome (None when it was skipped silently)."""
    import optuna
    from optuna.trial import TrialState

    from cider_mer.training.trainer import train

    study, number = ctx.study, trial.number
    trial_id = ctx.storage.get_trial_id_from_study_id_trial_number(ctx.study_id, number)
    with _Heartbeat(ctx.storage, trial_id, ctx.heartbeat_interval):
        try:
            census = take_census(study, ctx.space)
            before = census.done + sum(1 for t in census.running + census.waiting if t.number < number)
            if before >= ctx.n_trials:  # another worker took the last place at the same moment
                trial.set_user_attr("skipped", "surplus")
                _tell(study, trial, ctx.log, state=TrialState.FAIL)
                return None
            params = {p.name: p.suggest(trial) for p in ctx.space}
            key = params_key(params, ctx.space)
            same = [t for t in census.finished if params_key(t.params, ctx.space) == key and t.number != number]
            if same:
                orig = same[0]
                trial.set_user_attr("duplicate_of", orig.number)
                if orig.state == TrialState.COMPLETE:
                    _tell(study, trial, ctx.log, values=orig.value)
                else:
                    if orig.intermediate_values:
                        step = max(orig.intermediate_values)
                        trial.report(orig.intermediate_values[step], step)
                    _tell(study, trial, ctx.log, state=TrialState.PRUNED)
                return "duplicate"
            twin = [t for t in census.running if t.number < number and params_key(t.params, ctx.space) == key]
            if twin:
                trial.set_user_attr("skipped", "duplicate_running")
                trial.set_user_attr("duplicate_of", twin[0].number)
                _tell(study, trial, ctx.log, state=TrialState.FAIL)
                return "duplicate_running"

            cfg = apply_params(ctx.base, params, ctx.space)
            run_dir = (ctx.out_dir / TRIALS_DIR / f"trial_{number}").resolve()
            if run_dir.exists():
                trial.set_user_attr("skipped", "folder_taken")
                _tell(study, trial, ctx.log, state=TrialState.FAIL)
                raise TuneError(f"{run_dir} already exists but belongs to no trial of study '{study.study_name}' "
                                f"in {ctx.storage_shown}: use a fresh --out for a new study "
                                "(or the original --storage)")
            trial.set_user_attr("run_dir", str(run_dir))
            trial.set_user_attr("host", socket.gethostname())
            metric = SELECTION_METRIC[cfg.task]
            seen: dict[str, float] = {"best": -math.inf, "epoch": 0, "last": 0}

            def on_epoch(epoch: int, row: dict) -> None:
                value = float(row[f"val_{metric}"])
                seen["last"] = epoch
                if value > seen["best"]:
                    seen.update(best=value, epoch=epoch)
                trial.report(value, epoch)
                if ctx.on_epoch is not None:
                    ctx.on_epoch(number, epoch, row)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {epoch} (val {metric} {value:.2f})")

            try:
                result = train(cfg, ctx.data, ctx.data_path, run_dir, progress=ctx.progress,
                               encoder=ctx.encoder if cfg.freeze_text_encoder else None, epoch_callback=on_epoch)
            except optuna.TrialPruned:
                trial.set_user_attr("best_value", seen["best"])
                trial.set_user_attr("best_epoch", seen["epoch"])
                trial.set_user_attr("epochs_run", seen["last"])
                _tell(study, trial, ctx.log, state=TrialState.PRUNED)
                return "pruned"
            trial.set_user_attr("best_value", result.best_value)
            trial.set_user_attr("best_epoch", result.best_epoch)
            trial.set_user_attr("epochs_run", result.epochs_run)
            trial.set_user_attr("seconds", round(result.seconds, 1))
            if not math.isfinite(result.best_value):
                trial.set_user_attr("error", "no finite validation value")
                _tell(study, trial, ctx.log, state=TrialState.FAIL)
                return "failed"
            # Two workers may have trained the same set at once: the later one is the duplicate.
            census = take_census(study, ctx.space)
            same = [t for t in census.finished if params_key(t.params, ctx.space) == key and t.number != number]
            if same:
                trial.set_user_attr("duplicate_of", same[0].number)
            return "complete" if _tell(study, trial, ctx.log, values=result.best_value) else "lost"
        except TuneError:
            raise
        except BaseException as exc:
            frozen = ctx.storage.get_trial(trial_id)
            if frozen.state == TrialState.RUNNING:
                interrupted = isinstance(exc, KeyboardInterrupt)
                trial.set_user_attr("error", "interrupted (Ctrl-C or SIGTERM); parameters re-queued" if interrupted
                                    else f"{type(exc).__name__}: {str(exc)[:300]}")
                _tell(study, trial, ctx.log, state=TrialState.FAIL)
                if interrupted:  # not broken: queue the same parameters again, like a crashed worker's
                    RetryCrashedTrial()(study, frozen)
            raise


# --------------------------------------------------------------------------- the search


def tune(base: TrainConfig, data_path: str | Path, out_dir: str | Path, n_trials: int,
         storage: Optional[str] = None, study_name: Optional[str] = None, timeout: Optional[float] = None,
         space: Sequence[Param] = TABLE_II, pruning: bool = True, prune_warmup: int = 3,
         n_startup_trials: int = 10, heartbeat_interval: int = 60, grace_period: Optional[int] = None,
         progress: bool = False, log: Callable[[str], None] = print, encoder: Any = None,
         on_epoch: Optional[Callable[[int, int, dict], None]] = None) -> TuneResult:
    """Run (or continue) a study until it holds ``n_trials`` finished distinct parameter sets.

    ``base`` gives every setting that is not searched, including the training seed (every trial
    uses it) and the sampler's seed. ``storage`` is an SQLAlchemy URL (default: SQLite in
    ``out_dir``). ``timeout`` (seconds) stops starting new trials. ``progress`` shows the trainer's
    per-epoch lines; ``log`` gets one line per finished trial. ``encoder`` is a loaded frozen
    TextEncoder to share among trials (loaded here once when ``base.freeze_text_encoder``;
    fine-tuning trials each load a fresh one). ``on_epoch(trial_number, epoch, row)`` is called
    after each epoch (it may raise to stop).
    """
    import optuna

    from cider_mer.data.dataset import load_dataset

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
    out_dir = Path(out_dir)
    data_path = Path(data_path)
    data = load_dataset(data_path)
    apply_params(base, {}, space)  # the base config itself must be valid
    out_dir.mkdir(parents=True, exist_ok=True)
    url = storage or default_storage_url(out_dir)
    shown = mask_url(url)
    heartbeat_interval = max(1, int(heartbeat_interval))
    rdb = open_storage(url, heartbeat_interval, grace_period)
    name = study_name or default_study_name(data_path, base.task)
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=max(0, prune_warmup))
              if pruning else optuna.pruners.NopPruner())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # We run the trials ourselves (ask/tell) and keep their heartbeats (_Heartbeat).
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        try:
            study = optuna.create_study(storage=rdb, study_name=name, direction="maximize",
                                        sampler=make_sampler(base.seed, n_startup_trials), pruner=pruner,
                                        load_if_exists=True)
        except ValueError as exc:
            raise TuneError(f"study '{name}' in {shown}: {exc}") from None
        if study.direction != optuna.study.StudyDirection.MAXIMIZE:
            raise TuneError(f"study '{name}' in {shown} minimises; expected a study created by `cider tune`")
        check_settings(study, _settings(base, data_path, space), shown)
        if encoder is None and base.freeze_text_encoder:
            from cider_mer.training.trainer import load_encoder

            encoder = load_encoder(base)
        ctx = _Context(study, rdb, rdb.get_study_id_from_name(name), base, data, data_path, out_dir, space, n_trials,
                       encoder, progress, heartbeat_interval, log, on_epoch, shown)
        metric = SELECTION_METRIC[base.task]
        deadline = None if timeout is None else time.monotonic() + timeout
        trained, timed_out, waiting_said, repeats, failures = 0, False, False, 0, 0
        census = take_census(study, space)
        log(f"study '{name}' in {shown}: {census.done}/{n_trials} finished, {len(census.running)} running elsewhere; "
            f"maximising val {metric}")
        while True:
            optuna.storages.fail_stale_trials(study)
            census = take_census(study, space)
            if census.done >= n_trials:
                break
            if deadline is not None and time.monotonic() >= deadline:
                timed_out = True
                break
            if census.claimed >= n_trials and not census.waiting:
                if not waiting_said:
                    log(f"waiting for {len(census.running)} trial(s) running elsewhere "
                        f"({', '.join(str(t.number) for t in census.running)}); a crashed one will be taken over")
                    waiting_said = True
                time.sleep(min(5.0, heartbeat_interval))
                continue
            waiting_said = False
            trial = study.ask()
            try:
                outcome = _run_trial(ctx, trial)
                if outcome in ("complete", "pruned"):
                    failures = 0
            except TuneError:
                raise
            except Exception as exc:  # the trial is recorded as FAIL; a few in a row mean a real problem
                failures += 1
                write_outputs(study, base, out_dir, space, n_trials, shown)
                log(f"trial {trial.number:3d} failed: {type(exc).__name__}: {str(exc).strip()[:200]}")
                if failures >= MAX_FAILURES:
                    raise
                continue
            repeats = repeats + 1 if outcome in ("duplicate", "duplicate_running") else 0
            if repeats >= MAX_REPEATS:
                log(f"stopping: the sampler proposed {repeats} finished parameter sets in a row "
                    "(the space is nearly exhausted)")
                break
            if outcome is None or outcome == "duplicate_running":
                continue
            trained += outcome in ("complete", "pruned", "failed")
            best = write_outputs(study, base, out_dir, space, n_trials, shown)
            frozen = rdb.get_trial(rdb.get_trial_id_from_study_id_trial_number(ctx.study_id, trial.number))
            _log_trial(log, trial.number, outcome, frozen, space, best, take_census(study, space).done, n_trials,
                       metric)
        best = write_outputs(study, base, out_dir, space, n_trials, shown)
        census = take_census(study, space)
    return TuneResult(name, shown, out_dir, n_trials, census.done, trained,
                      None if best is None else best.number, None if best is None else best.value,
                      {} if best is None else clean_params(best.params, space),
                      None if best is None else best.user_attrs.get("run_dir"), timed_out)


def _log_trial(log: Callable[[str], None], number: int, outcome: str, frozen: Any, space: Sequence[Param],
               best: Any, done: int, n_trials: int, metric: str) -> None:
    params = clean_params(frozen.params, space) if frozen is not None else {}
    shown = " ".join(f"{k}={v}" for k, v in params.items())
    attrs = frozen.user_attrs if frozen is not None else {}
    if outcome == "complete":
        what = f"val {metric} {_fmt(frozen.value)} (epoch {attrs.get('best_epoch')}, {attrs.get('seconds', 0):.0f}s)"
    elif outcome == "pruned":
        what = f"pruned after epoch {attrs.get('epochs_run')} (best val {metric} {_fmt(attrs.get('best_value'))})"
    elif outcome == "duplicate":
        what = f"same parameters as trial {attrs.get('duplicate_of')}: not retrained, not counted"
    else:
        what = f"{outcome} ({attrs.get('error', '')})"
    best_txt = "none yet" if best is None else f"{_fmt(best.value)} (trial {best.number})"
    log(f"trial {number:3d} {what} | {shown} | best {best_txt} | {done}/{n_trials} finished")
