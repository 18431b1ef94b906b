"""``cider ablate``: the paper's Table V ablation suite in one command (resumable)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

console = Console(width=160)


def list_variants() -> None:
    from rich.table import Table

    from cider_mer.ablation.variants import changes_text, describe_variants

    table = Table(show_header=True, header_style="bold")
    for col in ("variant", "Table V row", "changes", "what it removes"):
        table.add_column(col)
    for row in describe_variants():
        table.add_row(row["name"], row["label"], changes_text(row["changes"]), row["description"])
    console.print(table)


def ablate_cmd(
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset file (train/valid for training, test for evaluation)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Suite folder: runs/ and ablation.{md,csv,json,png}. "
                                                          "Re-running with the same --out continues it."),
    task: Optional[str] = typer.Option(None, "--task", help="binary (Acc2/F1/Acc3) or seven (Acc7/F1). Default: "
                                                            "the --config's task, else binary."),
    seeds: int = typer.Option(3, "--seeds", help="Training seeds per variant: base seed, base seed+1, ..."),
    variants: str = typer.Option("all", "--variants", help="Comma list of variants (see --list-variants) or 'all'."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Maximum epochs (default 10 with the built-in base; "
                                                                "overrides the --config's epochs)."),
    eval_seeds: str = typer.Option("0,1,2", "--eval-seeds", help="Evaluation seeds (missingness masks)."),
    rates: str = typer.Option("0:1:0.1", "--rates", help="Missing rates, start:stop:step or a list."),
    config: Optional[Path] = typer.Option(None, "--config", help="Base settings (JSON TrainConfig or a run's "
                                                                 "config.json). Default: the `cider demo` settings."),
    text_encoder: Optional[str] = typer.Option(None, "--text-encoder", help="all-MiniLM-L6-v2 (default, offline), a "
                                                                             "local HF dir or a hub id."),
    freeze_text_encoder: Optional[bool] = typer.Option(None, "--freeze-text-encoder/--finetune-text-encoder",
                                                       help="Frozen encoder with cached features (default with the "
                                                            "built-in base), loaded once for the whole suite."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:1 ..."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars or per-epoch lines."),
    results: Optional[Path] = typer.Option(None, "--results", help="Also put the table into this Markdown file, "
                                                                    "between <!-- ablation:begin/end --> markers "
                                                                    "(e.g. docs/results.md)."),
    show_variants: bool = typer.Option(False, "--list-variants", help="Print the variants and exit."),
) -> None:
    """Train and evaluate every ablation variant (Table V) over several training seeds; one table."""
    if show_variants:
        list_variants()
        return
    from cider_mer.cli.options import (OptionError, at_least, command_line, parse_rates, parse_seeds,
                                       settings_from_options)

    if data is None or out is None:
        raise OptionError("--data and --out are required (or use --list-variants)")
    from cider_mer.ablation.render import results_section, summary_table
    from cider_mer.ablation.run import DEFAULT_EPOCHS
    from cider_mer.ablation.suite import default_base_config, run_ablation
    from cider_mer.ablation.variants import parse_variants

    at_least(seeds, 1, "--seeds")
    at_least(epochs, 1, "--epochs")
    eval_seed_list, rate_list = parse_seeds(eval_seeds, "--eval-seeds"), parse_rates(rates)
    names = parse_variants(variants)
    default = None if config else default_base_config(task or "binary", epochs or DEFAULT_EPOCHS)
    cfg = settings_from_options(config, default, epochs=epochs, task=task, text_encoder=text_encoder,
                                freeze_text_encoder=freeze_text_encoder, device=device)
    command = command_line("cider ablate", {
        "--data": data, "--out": out, "--task": cfg.task, "--seeds": seeds, "--variants": ",".join(names),
        "--epochs": epochs, "--eval-seeds": eval_seeds, "--rates": rates, "--config": config,
        "--text-encoder": text_encoder, "--freeze-text-encoder": freeze_text_encoder, "--device": device,
        "--quiet": quiet, "--results": results})
    table = run_ablation(cfg, data, out, variants=names, n_seeds=seeds, eval_seeds=eval_seed_list,
                         rates=rate_list, progress=not quiet,
                         log=lambda msg: console.print(msg, markup=False, highlight=False), command=command)
    if results is not None:
        from cider_mer.io_utils import update_marked_section

        update_marked_section(results, "ablation", results_section(table))
    console.print("\n" + summary_table(table), markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """Add the command to the ``cider`` app."""
    app.command("ablate")(ablate_cmd)
