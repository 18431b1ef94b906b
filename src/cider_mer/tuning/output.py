"""The files a worker rewrites after each trial (trials.csv, best_config.json, tuning.json) and its log line.

Workers of one study may share the tuning folder: each rewrites the three files as one set while
holding the folder's lock (``.cider.lock``, :mod:`cider_mer.locks`; held for a moment, waited for).
A folder belongs to one study: ``tuning.json`` names it, and another study is refused there.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any, Optional
from pathlib import Path

from cider_mer.data.labels import SELECTION_METRIC
from cider_mer.metrics import selection_direction
from cider_mer.io_utils import atomic_write_json, atomic_write_text, read_json, run_record
from cider_mer.locks import LOCK_NAME, locked
from cider_mer.tuning.census import best_trial, take_census
from cider_mer.tuning.settings import TuneError
from cider_mer.tuning.space import apply_params, clean_params
from cider_mer.tuning.trial import Outcome, TrialContext

if TYPE_CHECKING:
    import optuna
    import pandas as pd
    from optuna.trial import FrozenTrial

TRIALS_CSV, BEST_CONFIG, SUMMARY = "trials.csv", "best_config.json", "tuning.json"
LOCK_WAIT_SECONDS = 120.0  # how long a worker waits for another one to finish rewriting the files


def check_folder_study(out_dir: Path, study: str) -> None:
    """Refuse a tuning folder whose ``tuning.json`` belongs to another study (trial folders and
    summaries would mix)."""
    try:
        theirs = read_json(out_dir / SUMMARY)["study"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # no summary yet (or an unreadable one, rewritten by the first trial)
    if theirs != study:
        raise TuneError(f"tuning folder {out_dir}: holds study '{theirs}', not '{study}'; use another --out "
                        f"(or --study {theirs})")


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, value, duration, parameters, then the user attributes."""
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


def write_outputs(ctx: TrialContext) -> Optional[FrozenTrial]:
    """Rewrite trials.csv, best_config.json and tuning.json (atomically, as one set under the
    folder's lock); return the best trial."""
    with locked(ctx.out_dir / LOCK_NAME, f"tuning folder {ctx.out_dir}", wait=LOCK_WAIT_SECONDS):
        return _write_outputs(ctx)


def _write_outputs(ctx: TrialContext) -> Optional[FrozenTrial]:
    from cider_mer.runs import describe_device, resolve_device

    study, space = ctx.study, ctx.space
    buf = io.StringIO()
    trials_frame(study).to_csv(buf, index=False)
    atomic_write_text(ctx.out_dir / TRIALS_CSV, buf.getvalue())
    best = best_trial(study)
    summary: dict[str, Any] = {
        "study": study.study_name, "storage": ctx.storage_shown,
        "metric": f"val_{SELECTION_METRIC[ctx.base.task]}", "direction": selection_direction(ctx.base.task),
        "requested_trials": ctx.n_trials, "finished_trials": take_census(study, space).done,
        "search_space": [p.describe() for p in space], "best": None,
        **run_record(describe_device(resolve_device(ctx.base.device))),
    }
    if best is not None:
        cfg = apply_params(ctx.base, best.params, space)
        atomic_write_json(ctx.out_dir / BEST_CONFIG, cfg.to_dict())
        summary["best"] = {"trial": best.number, "value": best.value, "params": clean_params(best.params, space),
                           "run_dir": best.user_attrs.get("run_dir"), "host": best.user_attrs.get("host")}
    atomic_write_json(ctx.out_dir / SUMMARY, summary)
    return best


def _fmt(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else str(value)


def trial_line(ctx: TrialContext, number: int, outcome: Outcome, best: Optional[FrozenTrial]) -> str:
    """The worker's log line for a finished trial: what became of it, its parameters, the best so far."""
    frozen = ctx.storage.get_trial(ctx.storage.get_trial_id_from_study_id_trial_number(ctx.study_id, number))
    metric = SELECTION_METRIC[ctx.base.task]
    params = " ".join(f"{k}={v}" for k, v in clean_params(frozen.params, ctx.space).items())
    attrs = frozen.user_attrs
    if outcome is Outcome.COMPLETE:
        what = f"val {metric} {_fmt(frozen.value)} (epoch {attrs.get('best_epoch')}, {attrs.get('seconds', 0):.0f}s)"
    elif outcome is Outcome.PRUNED:
        what = f"pruned after epoch {attrs.get('epochs_run')} (best val {metric} {_fmt(attrs.get('best_value'))})"
    elif outcome is Outcome.DUPLICATE:
        what = f"same parameters as trial {attrs.get('duplicate_of')}: not retrained, not counted"
    else:
        what = f"{outcome.value} ({attrs.get('error', '')})"
    best_txt = "none yet" if best is None else f"{_fmt(best.value)} (trial {best.number})"
    done = take_census(ctx.study, ctx.space).done
    return f"trial {number:3d} {what} | {params} | best {best_txt} | {done}/{ctx.n_trials} finished"

