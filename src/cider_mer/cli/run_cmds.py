"""``cider train``, ``cider eval`` and ``cider demo``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from cider_mer.cli.options import above, at_least, parse_rates, parse_seeds, settings_from_options

console = Console(width=160)


def train_cmd(
    data: Path = typer.Option(..., "--data", help="Dataset file (train and valid splits are used)."),
    out: Path = typer.Option(..., "--out", help="Run directory to create (or continue with --resume); one "
                                                "process at a time writes it."),
    task: Optional[str] = typer.Option(None, "--task",
                                       help="binary (3-class training), seven or regression (MOSI-style scores); "
                                       "sims_binary or sims_regression (CH-SIMS files); emotion (class-named "
                                       "files). Default binary."),
    model: Optional[str] = typer.Option(None, "--model", help="Registered model (see `cider models`). Default cider."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Maximum epochs (default: TrainConfig.epochs)."),
    patience: Optional[int] = typer.Option(None, "--patience", help="Early-stopping patience on validation (default: TrainConfig.patience)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    eval_batch_size: Optional[int] = typer.Option(None, "--eval-batch-size",
                                                  help="Batch size of validation and cached features."),
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
    resume: bool = typer.Option(False, "--resume", help="Continue a run from its last completed epoch, with its "
                                "stored settings; only --epochs, --patience, --device, --eval-batch-size (and "
                                "--quiet) may change, any other difference is refused."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Train a model (CIDer: MSSD; baselines: their own objective); the checkpoint is selected on the
    validation split only. The run folder also gets train.log (appended on --resume)."""
    from cider_mer.data.dataset import load_dataset
    from cider_mer.io_utils import ensure_writable_dir
    from cider_mer.runs import CONFIG_FILE, check_cache_dir
    from cider_mer.training.trainer import train

    ensure_writable_dir(out, "--out")
    model_cfg = {k: v for k, v in (("layers", layers), ("heads", heads)) if v is not None}
    overrides = dict(task=task, model=model, epochs=epochs, patience=patience, batch_size=batch_size,
                     eval_batch_size=eval_batch_size, seed=seed,
                     text_encoder=text_encoder, freeze_text_encoder=freeze_text_encoder, device=device,
                     precision=precision, encoder_precision=encoder_precision, length_buckets=length_buckets,
                     model_config=model_cfg or None)
    if no_maci:
        overrides.update(head="linear", counterfactual=False)
    stored = out / CONFIG_FILE
    # Resuming without --config: the run's stored settings with the options given on top.
    cfg = settings_from_options(stored if resume and config is None and stored.is_file() else config, **overrides)
    check_cache_dir(cfg, data)
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
    """Evaluate a run under missing modalities: per-rate metrics, AUILC, tables and a plot. The
    report's four files are replaced as one set."""
    from cider_mer.data.dataset import load_dataset
    from cider_mer.evaluation.protocol import evaluate
    from cider_mer.evaluation.report import CONSOLE_METRICS, check_report_dir, markdown_table, write_report
    from cider_mer.runs import Run, check_cache_dir

    rate_list, seed_list = parse_rates(rates, per_modality=True), parse_seeds(seeds)
    check_report_dir(out)
    loaded = Run.load(run, device=device)
    check_cache_dir(loaded.cfg, data)
    results = evaluate(loaded, load_dataset(data), split=split, mode=missing_mode,
                       rates=rate_list, seeds=seed_list, oracle_tau=oracle_tau, progress=not quiet)
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
    from cider_mer.io_utils import ensure_writable_dir
    from cider_mer.runs import CACHE_WHAT
    from cider_mer.text.cache import cache_dir_for

    at_least(epochs, 1, "--epochs")
    at_least(seed, 0, "--seed")
    above(scale, 0, "--scale")
    eval_seed_list = parse_seeds(eval_seeds, "--eval-seeds")
    ensure_writable_dir(out, "--out")
    ensure_writable_dir(cache_dir_for(out / "data" / "synth_mosi.pkl"), CACHE_WHAT)
    run_demo(out, epochs=epochs, seed=seed, eval_seeds=eval_seed_list, scale=scale, progress=not quiet,
             console=console)


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    app.command("eval")(eval_cmd)
    app.command("demo")(demo_cmd)

