"""``cider plot embeddings`` and ``cider plot maci``; ``cider maci vocab``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console(width=160)
plot_app = typer.Typer(no_args_is_help=True)
maci_app = typer.Typer(no_args_is_help=True)


@plot_app.command("embeddings")
def embeddings_cmd(
    run: Path = typer.Option(..., "--run", help="Run directory."),
    data: Path = typer.Option(..., "--data", help="Dataset file."),
    rates: str = typer.Option("0.1,0.3,0.5", "--rates", help="RMFM missing rates, one panel each."),
    split: str = typer.Option("test", "--split"),
    method: str = typer.Option("tsne", "--method", help="tsne or pca."),
    seed: int = typer.Option(0, "--seed", help="Mask and projection seed."),
    out: Optional[Path] = typer.Option(None, "--out", help="PNG path (default RUN/embeddings.png)."),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """Joint representations under missing data, coloured by class (the paper's Fig. 8)."""
    from cider_mer.cli.options import at_least, parse_rates
    from cider_mer.data.dataset import load_dataset
    from cider_mer.io_utils import ensure_writable_file
    from cider_mer.plots.embeddings import plot_embeddings
    from cider_mer.runs import Run

    rate_list = parse_rates(rates)
    at_least(seed, 0, "--seed")
    out = ensure_writable_file(out or run / "embeddings.png", "--out")
    path = plot_embeddings(Run.load(run, device=device), load_dataset(data), rate_list, out, split, method, seed)
    console.print(f"wrote {path}")


@plot_app.command("maci")
def maci_plot_cmd(
    run: Path = typer.Option(..., "--run", help="Run directory."),
    data: Path = typer.Option(..., "--data", help="Dataset file."),
    index: int = typer.Option(..., "--index", help="Sample index within the split."),
    split: str = typer.Option("test", "--split"),
    out: Optional[Path] = typer.Option(None, "--out", help="PNG path (default RUN/maci_<split>_<index>.png)."),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """Class probabilities of one sample: biased, after MCM, after counterfactual (the paper's Fig. 9)."""
    from cider_mer.data.dataset import load_dataset
    from cider_mer.io_utils import ensure_writable_file
    from cider_mer.plots.maci import plot_maci
    from cider_mer.runs import Run

    out = ensure_writable_file(out or run / f"maci_{split}_{index}.png", "--out")
    loaded = Run.load(run, device=device)
    path, steps = plot_maci(loaded, load_dataset(data), index, out, split)
    names = loaded.class_names
    for key in ("biased", "after_mcm", "after_cf"):
        console.print(f"{key:>10}: " + "  ".join(f"{n} {100 * p:5.1f}%" for n, p in zip(names, getattr(steps, key))))
    console.print(f"true class: {names[steps.label]}; tau {steps.tau:.1f}; wrote {path}")


@maci_app.command("vocab")
def vocab_cmd(
    data: Path = typer.Option(..., "--data", help="Dataset file (its training split is read)."),
    task: str = typer.Option("binary", "--task"),
    top_k: int = typer.Option(100, "--top-k", help="How many frequent biased word-pieces to keep."),
    cv_threshold: float = typer.Option(0.1, "--cv", help="Coefficient-of-variation threshold."),
    text_encoder: Optional[str] = typer.Option(None, "--text-encoder", help="Tokenizer to print words with."),
    show: int = typer.Option(100, "--show", help="Rows to print."),
) -> None:
    """Print the biased word-pieces MACI's counterfactual text keeps, with their class frequencies."""
    from cider_mer.cli.options import at_least
    from cider_mer.data.dataset import load_dataset
    from cider_mer.maci.counterfactual import build_bias_vocabulary
    from cider_mer.text.encoder import load_tokenizer

    at_least(top_k, 1, "--top-k")
    at_least(cv_threshold, 0, "--cv")
    at_least(show, 0, "--show")
    ds = load_dataset(data)
    vocab = build_bias_vocabulary(ds["train"], task, top_k=top_k, cv_threshold=cv_threshold)
    words = load_tokenizer(text_encoder).convert_ids_to_tokens(vocab.token_ids.tolist())
    names = ds.convention.names_for(task)
    table = Table(title=f"{len(words)} biased word-pieces of {data.name} (train split, task {task})")
    for col in ("rank", "word", "total", *[f"{n} (per 1k)" for n in names], "CV"):
        table.add_column(col, justify="right")
    for i, (w, counts, freq, cv) in enumerate(zip(words, vocab.class_counts, vocab.class_frequencies, vocab.cv)):
        if i >= show:
            break
        table.add_row(str(i + 1), w, str(int(counts.sum())), *[f"{1000 * f:.2f}" for f in freq], f"{cv:.2f}")
    console.print(table)
