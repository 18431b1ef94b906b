"""``cider tune``: hyper-parameter search on the validation split (Optuna TPE, Table II space)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def tune_cmd(
    data: Path = typer.Option(..., "--data", help="Dataset file (train and valid splits are used; never test)."),
    out: Path = typer.Option(..., "--out", help="Tuning folder: study.db (default storage), trials/, trials.csv, "
                                                 "best_config.json."),
    trials: int = typer.Option(..., "--trials", help="TOTAL finished trials wanted in the study; re-running with a "
                                                     "larger number continues it."),
    task: Optional[str] = typer.Option(None, "--task", help="a task of the file's label convention, e.g. binary, "
                                       "seven, sims_binary or emotion (default: the config's, else binary)."),
    storage: Optional[str] = typer.Option(None, "--storage", help="SQLAlchemy URL of the study database, e.g. "
                                          "postgresql://user:pw@host:5432/db to share one study among many workers "
                                          "(default sqlite:///OUT/study.db)."),
    study: Optional[str] = typer.Option(None, "--study", help="Study name (default: <data file stem>-<task>)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Seconds after which no new trial is started."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Training seed of every trial and seed of the sampler "
                                                           "(default 1111)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Maximum epochs per trial (default 200)."),
    patience: Optional[int] = typer.Option(None, "--patience", help="Early-stopping patience (default 10)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    config: Optional[Path] = typer.Option(None, "--config", help="Base JSON settings; the searched ones are "
                                                                  "overridden per trial."),
    text_encoder: Optional[str] = typer.Option(None, "--text-encoder",
                                               help="all-MiniLM-L6-v2 (default, offline), a local HF dir or a hub id."),
    freeze_text_encoder: Optional[bool] = typer.Option(None, "--freeze-text-encoder/--finetune-text-encoder",
                                                       help="Frozen encoder, loaded once, cached features (fast)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:1 ..."),
    pruning: bool = typer.Option(True, "--pruning/--no-pruning", help="MedianPruner on the per-epoch validation "
                                                                     "metric."),
    prune_warmup: int = typer.Option(3, "--prune-warmup", help="Epochs before a trial may be pruned."),
    heartbeat: int = typer.Option(60, "--heartbeat", help="Seconds between heartbeats of a running trial; a trial "
                                                          "silent for twice as long is failed and re-queued."),
    verbose: bool = typer.Option(False, "--verbose", help="Show each trial's per-epoch lines."),
) -> None:
    """Search the paper's Table II space with TPE, maximising the VALIDATION selection metric."""
    import signal

    import optuna

    from cider_mer.cli.options import above, at_least, settings_from_options
    from cider_mer.tuning.search import tune

    at_least(trials, 1, "--trials")
    above(timeout, 0, "--timeout")
    at_least(heartbeat, 1, "--heartbeat")
    at_least(prune_warmup, 0, "--prune-warmup")
    base = settings_from_options(config, task=task, seed=seed, epochs=epochs, patience=patience,
                                 batch_size=batch_size, text_encoder=text_encoder,
                                 freeze_text_encoder=freeze_text_encoder, device=device)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def on_term(signum: int, frame: object) -> None:  # a scheduler's SIGTERM: close the trial, re-queue it
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        res = tune(base, data, out, trials, storage=storage, study_name=study, timeout=timeout, pruning=pruning,
                   prune_warmup=prune_warmup, heartbeat_interval=heartbeat, progress=verbose,
                   log=lambda line: print(line, flush=True))
    finally:
        signal.signal(signal.SIGTERM, old)
    state = "stopped by --timeout" if res.timed_out else "done"
    print(f"{state}: {res.n_finished}/{res.n_requested} finished trials in study '{res.study_name}' ({res.storage}); "
          f"{res.trials_trained_here} trained here")
    if res.best_trial is None:
        print("no completed trial yet")
        return
    print(f"best: trial {res.best_trial}, val {res.best_value:.2f}, {res.best_params}")
    print(f"best config: {res.best_config_path} (cider train --config {res.best_config_path} ...); "
          f"its run: {res.best_run_dir}; all trials: {res.trials_csv_path}")


def register(app: typer.Typer) -> None:
    """Add the command to the ``cider`` app."""
    app.command("tune")(tune_cmd)
