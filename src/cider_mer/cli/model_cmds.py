"""``cider model-info`` and ``cider models``: parameter counts and the registry."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def model_info(
    model: str = typer.Option("cider", "--model", help="Registered model name (see `cider models`)."),
    task: str = typer.Option("binary", "--task", help="binary (3 classes), seven or regression (1 output)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Read dims and lengths from this dataset file."),
    layers: Optional[int] = typer.Option(None, "--layers", help="Fusion layers (CIDer: MCT layers)."),
    hidden: Optional[int] = typer.Option(None, "--hidden", help="Hidden size E."),
    heads: Optional[int] = typer.Option(None, "--heads", help="Attention heads."),
    text_dim: int = typer.Option(384, "--text-dim", help="Text encoder width (384 MiniLM, 768 bert-base)."),
    audio_dim: int = typer.Option(5, "--audio-dim"),
    vision_dim: int = typer.Option(20, "--vision-dim"),
    text_len: int = typer.Option(50, "--text-len"),
    audio_len: int = typer.Option(375, "--audio-len"),
    vision_len: int = typer.Option(500, "--vision-len"),
    aligned: bool = typer.Option(False, "--aligned", help="Aligned data (all lengths = text length)."),
    no_maci: bool = typer.Option(False, "--no-maci", help="Plain linear head instead of MACI's MCM."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Parameter counts of a model for given shapes (the text encoder itself is not built)."""
    from cider_mer.data.labels import num_classes
    from cider_mer.models.interface import DataShapes
    from cider_mer.models.registry import build_model, make_config

    if data is not None:
        from cider_mer.data.dataset import load_dataset
        from cider_mer.runs import shapes_for

        shapes = shapes_for(load_dataset(data), text_dim, task)
    else:
        lengths = (text_len, text_len, text_len) if aligned else (text_len, audio_len, vision_len)
        shapes = DataShapes(text_dim, audio_dim, vision_dim, *lengths, aligned, num_classes(task))
    config = make_config(model, {k: v for k, v in (("layers", layers), ("hidden", hidden), ("heads", heads))
                                 if v is not None})
    m = build_model(model, shapes, config, text_encoder=None, maci=not no_maci)
    counts = m.parameter_counts()
    info = {"model": model, "task": task, "maci": not no_maci, "shapes": shapes.to_dict(),
            "config": dataclasses.asdict(config),
            "params_excluding_text_encoder": counts["params_excluding_text_encoder"],
            "params_maci": counts["params_maci"]}
    if json_out:
        print(json.dumps(info, indent=2))
        return
    table = Table(title=f"{model} ({task}, {'aligned' if shapes.aligned else 'unaligned'})")
    table.add_column("part")
    table.add_column("parameters", justify="right")
    table.add_row("model without text encoder", f"{counts['params_excluding_text_encoder']:,}")
    table.add_row("of which MACI (MCM MLPs + classifiers)", f"{counts['params_maci']:,}")
    for name, n in m.parameter_breakdown().items():
        table.add_row(f"  {name}", f"{n:,}")
    console.print(table)


def list_models() -> None:
    """List registered models with their source papers."""
    from cider_mer.models.registry import available_models

    for name, spec in available_models().items():
        console.print(f"[bold]{name}[/bold]: {spec.description} ({spec.source})")


def register(app: typer.Typer) -> None:
    app.command("model-info")(model_info)
    app.command("models")(list_models)
