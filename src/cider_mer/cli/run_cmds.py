"""``cider train``, ``cider eval`` and ``cider demo``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from cider_mer.cli.options import parse_rates, parse_seeds

console = Console(width=160)


def train_cmd(
    data: Path = typer.Option(..., "--data", help="Dataset file (train and valid splits are used)."),
    out: Path = typer.Option(..., "--out", help="Run directory to create (or continue with --resume)."),
    task: Optional[str] = typer.Option(None, "--task",
                                       help="binary (3-class training), seven or regression. Default binary."),
    model: Optional[str] = typer.Option(None, "--model", help="Registered model (see `cider models`). Default cider."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Maximum epochs (default: TrainConfig.epochs)."),
    patience: Optional[int] = typer.Option(None, "--patience", help="Early-stopping patience on validation (default: TrainConfig.patience)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    seed: Optional[int] = typer.Option(None, "--seed", help="Training seed (default: TrainConfig.seed)."),
    text_encoder: Optional[str] = typer.Option(None, "--text-encoder",
                                               help="all-MiniLM-L6-v2 (default, offline), a local HF dir or a hub id."),
    freeze_text_encoder: Optional[bool] = typer.Option(None, "--freeze-text-encoder/--finetune-text-encoder",
                                                       help="Frozen encoder with cached features (fast on CPU)."),
    no_maci: bool = typer.Option(False, "--no-maci", help="Plain head and no counterfactual text."),
    layers: Optional[int] = typer.Option(None, "--layers", help="Fusion layers (CIDer: MCT layers)."),
    heads: Optional[int] = typer.Option(None, "--heads"),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:1 ..."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32 or bf16 (CUDA autocast)."),
    encoder_precision: Optional[str] = typer.Option(None, "--encoder-precision",
                                                    help="fp32 or bf16 (text encoder under bf16 autocast)."),
    length_buckets: Optional[bool] = typer.Option(None, "--length-buckets/--random-batches",
                                                  help="Batches of similar text length (much faster on CPU)."),
    config: Optional[Path] = typer.Option(None, "--config", help="JSON settings (e.g. best_config.json from tune)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its last epoch."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Train a model (CIDer: MSSD; baselines: their own objective); the checkpoint is selected on the
    validation split only."""
    from cider_mer.config import compose_config
    from cider_mer.data.dataset import load_dataset
    from cider_mer.runs import CONFIG_FILE
    from cider_mer.training.trainer import train

    model_cfg = {k: v for k, v in (("layers", layers), ("heads", heads)) if v is not None}
    overrides = dict(task=task, model=model, epochs=epochs, patience=patience, batch_size=batch_size, seed=seed,
                     text_encoder=text_encoder, freeze_text_encoder=freeze_text_encoder, device=device,
                     precision=precision, encoder_precision=encoder_precision, length_buckets=length_buckets,
                     model_config=model_cfg or None)
    if no_maci:
        overrides.update(head="linear", counterfactual=False)
    resume_stored = resume and config is None and (out / CONFIG_FILE).is_file()
    cfg = None if resume_stored else compose_config(config, **overrides)
    result = train(cfg, load_dataset(data), out, resume=resume, progress=not quiet)
    console.print(f"best validation {json.dumps(result.best_value)} at epoch {result.best_epoch} "
                  f"({result.epochs_run} epochs, {result.seconds:.0f}s); run in {out}")


def eval_cmd(
    run: Path = typer.Option(..., "--run", help="Run directory written by `cider train`."),
    data: Path = typer.Option(..., "--data", help="Dataset file (may be another dataset with equal dims)."),
    out: Path = typer.Option(..., "--out", help="Report directory."),
    split: str = typer.Option("test", "--split", help="Split to evaluate (tau is chosen on 'valid')."),
    missing_mode: str = typer.Option("RMFM", "--missing-mode", help="RMFM, RMFM_same, RMM, TMFM, STMFM or SMM."),
    rates: str = typer.Option("0:1:0.1", "--rates",
                              help="start:stop:step or a list; RMFM_same also takes text/audio/vision points "
                                   "such as 0.1/0.5/0.7,0.2/0.6/0.8."),
    seeds: str = typer.Option("0,1,2", "--seeds", help="Evaluation seeds (masks)."),
    oracle_tau: bool = typer.Option(False, "--oracle-tau", help="Choose tau on the evaluated labels (labelled)."),
    device: str = typer.Option("auto", "--device"),
    quiet: bool = typer.Option(False, "--quiet"),
) -> None:
    """Evaluate a run under missing modalities: per-rate metrics, AUILC, tables and a plot."""
    from cider_mer.data.dataset import load_dataset
    from cider_mer.evaluation.protocol import evaluate
    from cider_mer.evaluation.report import CONSOLE_METRICS, markdown_table, write_report
    from cider_mer.runs import Run

    results = evaluate(Run.load(run, device=device), load_dataset(data), split=split, mode=missing_mode,
                       rates=parse_rates(rates, per_modality=True), seeds=parse_seeds(seeds), oracle_tau=oracle_tau,
                       progress=not quiet)
    paths = write_report(results, out)
    console.print(markdown_table(results, CONSOLE_METRICS[results.task]))
    console.print(f"tau selection: {results.tau_selection}; report in {paths['md'].parent}")


def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Folder for data, run and report."),
    epochs: int = typer.Option(20, "--epochs", help="Maximum epochs (early stopping on validation)."),
    seed: int = typer.Option(1111, "--seed"),
    eval_seeds: str = typer.Option("0,1,2", "--eval-seeds", help="Mask seeds of the evaluation."),
    scale: float = typer.Option(1.0, "--scale", help="Size of the synthetic dataset (1 = MOSI sizes)."),
    quiet: bool = typer.Option(False, "--quiet"),
) -> None:
    """The main job: synthetic MOSI-shaped data -> CIDer (frozen MiniLM) -> RMFM evaluation."""
    from cider_mer.demo import run_demo

    run_demo(out, epochs=epochs, seed=seed, eval_seeds=parse_seeds(eval_seeds), scale=scale, progress=not quiet,
             console=console)


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    app.command("eval")(eval_cmd)
    app.command("demo")(demo_cmd)

