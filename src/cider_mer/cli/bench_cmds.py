"""``cider benchmark``: the paper's Tables IV and VI over the model zoo in one command (resumable)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

console = Console(width=200)


def benchmark_cmd(
    iid: Path = typer.Option(..., "--iid", help="Dataset file whose test split is the IID test (train/valid too)."),
    ood: Path = typer.Option(..., "--ood", help="Dataset file whose test split is the OOD test. When its "
                                                "train/valid equal the IID file's, every run is trained once."),
    out: Path = typer.Option(..., "--out", help="Benchmark folder: runs/ and benchmark.{md,csv,json,png}. "
                                                "Re-running with the same --out continues it."),
    task: Optional[str] = typer.Option(None, "--task", help="binary (Acc2/F1/Acc3), seven (Acc7/F1) or regression "
                                                            "(MAE/Corr/Acc2, no MACI). Default: the --config's "
                                                            "task, else binary."),
    models: str = typer.Option(",".join(("cider", "dlf", "mplmm", "lnln", "emt_dlfr", "mult")), "--models",
                               help="Comma list of registered models (see `cider models`)."),
    maci_plugins: Optional[str] = typer.Option(None, "--maci-plugins",
                                               help="Baselines that get an extra row with MACI on, e.g. dlf,mplmm."),
    seeds: int = typer.Option(3, "--seeds", help="Training seeds per row: base seed, base seed+1, ..."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Maximum epochs (default 10 with the built-in base; "
                                                                "overrides the --config's epochs)."),
    eval_seeds: str = typer.Option("0,1,2", "--eval-seeds", help="Evaluation seeds (missingness masks)."),
    rates: str = typer.Option("0:1:0.1", "--rates", help="Missing rates, start:stop:step or a list; must hold 0."),
    config: Optional[Path] = typer.Option(None, "--config", help="Run-level base settings (JSON TrainConfig or a "
                                                                 "run's config.json). Default: the `cider demo` "
                                                                 "settings (frozen MiniLM, cached features)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:1 ..."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars or per-epoch lines."),
    results: Optional[Path] = typer.Option(None, "--results", help="Also put the tables into this Markdown file, "
                                                                    "between <!-- benchmark:begin/end --> markers "
                                                                    "(e.g. docs/results.md)."),
    results_tag: str = typer.Option("benchmark", "--results-tag", help="Marker name in --results: the tables go "
                                                                        "between <!-- TAG:begin/end -->."),
) -> None:
    """Train and evaluate each model (Table IV: RMFM on IID, complete and RMFM on OOD) and measure its
    cost (Table VI: parameters, peak memory, seconds per epoch); one set of tables."""
    from cider_mer.ablation.run import DEFAULT_EPOCHS
    from cider_mer.benchmark.render import results_section, results_table
    from cider_mer.benchmark.suite import default_base_config, run_benchmark
    from cider_mer.cli.options import command_line, parse_rates, parse_seeds
    from cider_mer.config import compose_config

    if seeds < 1:
        raise typer.BadParameter(f"--seeds must be >= 1, got {seeds}")
    if epochs is not None and epochs < 1:
        raise typer.BadParameter(f"--epochs must be >= 1, got {epochs}")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", results_tag):
        raise typer.BadParameter(f"--results-tag must be letters, digits, '-' or '_', got '{results_tag}'")
    default = None if config else default_base_config(task or "binary", epochs or DEFAULT_EPOCHS)
    no_maci = {"head": "linear", "counterfactual": False} if task == "regression" else {}
    cfg = compose_config(config, default, epochs=epochs, task=task, device=device, **no_maci)
    command = command_line("cider benchmark", {
        "--iid": iid, "--ood": ood, "--task": cfg.task, "--models": models.replace(" ", ""),
        "--maci-plugins": maci_plugins, "--seeds": seeds, "--out": out, "--epochs": epochs,
        "--eval-seeds": eval_seeds, "--rates": rates, "--config": config, "--device": device, "--quiet": quiet,
        "--results": results,
        "--results-tag": results_tag if results_tag != "benchmark" else None})
    table = run_benchmark(cfg, iid, ood, out, models=models, maci_plugins=maci_plugins, n_seeds=seeds,
                          eval_seeds=parse_seeds(eval_seeds), rates=parse_rates(rates), progress=not quiet,
                          log=lambda msg: console.print(msg, markup=False, highlight=False), command=command)
    if results is not None:
        from cider_mer.io_utils import update_marked_section

        update_marked_section(results, results_tag, results_section(table))
    console.print("\n" + results_table(table), markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """Add the command to the ``cider`` app."""
    app.command("benchmark")(benchmark_cmd)
