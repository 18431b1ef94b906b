"""``cider predict``: a trained run's predictions on a dataset split, a transcripts CSV (with
feature files) or a folder of recordings, written as CSV or JSON."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from cider_mer.predict import PredictionTable

console = Console(width=160)


def parse_point(text: str) -> Union[float, tuple[float, float, float], str]:
    """``--rate``: a rate (``0.3``), an (r_l, r_a, r_v) triple for RMFM_same (``0.2,0.5,0.5``), or
    the present modalities for SMM (``LA``)."""
    parts = [p.strip() for p in text.split(",")]
    try:
        if len(parts) == 3:
            return tuple(float(p) for p in parts)  # type: ignore[return-value]
        return float(text)
    except ValueError:
        return text.strip()


def metrics_table(table: "PredictionTable") -> str:
    """Markdown rows of ``cider eval``'s console metrics, factual (and debiased)."""
    from cider_mer.evaluation.report import CONSOLE_METRICS, metric_label

    names = CONSOLE_METRICS[table.task]
    lines = ["| predictions | " + " | ".join(metric_label(n) for n in names) + " |", "|---|" + "---|" * len(names)]
    for kind, values in table.metrics().items():
        label = kind if kind == "factual" else f"debiased (tau {table.tau:.1f})"
        lines.append(f"| {label} | " + " | ".join(f"{values[n]:.2f}" for n in names) + " |")
    return "\n".join(lines)


def predict_cmd(
    run: Path = typer.Option(..., "--run", help="Run directory written by `cider train`."),
    out: Path = typer.Option(..., "--out", help="Predictions file: .csv or .json (a list of records)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset file to predict (one split, see --split)."),
    split: Optional[str] = typer.Option(None, "--split",
                                        help="With --data: the split (default test). With --csv/--transcripts: "
                                             "only the rows of this mode."),
    csv: Optional[Path] = typer.Option(None, "--csv", help="Transcripts CSV (id,text[,label][,mode] or the "
                                                            "MMSA layout); labels are optional."),
    audio_features: Optional[Path] = typer.Option(None, "--audio-features", help="With --csv: .npz with ids, "
                                                                                 "features, lengths."),
    vision_features: Optional[Path] = typer.Option(None, "--vision-features", help="With --csv: .npz with ids, "
                                                                                   "features, lengths."),
    media_dir: Optional[Path] = typer.Option(None, "--media-dir", help="Extract features from the recordings here "
                                                                       "(id = file name without extension); needs "
                                                                       "--transcripts and the media extra."),
    transcripts: Optional[Path] = typer.Option(None, "--transcripts", help="With --media-dir: the transcripts CSV."),
    audio_kind: str = typer.Option("librosa", "--audio-kind", help="With --media-dir: librosa, egemaps or none "
                                                                   "(what the run was trained on)."),
    video_kind: str = typer.Option("facemesh", "--video-kind", help="With --media-dir: facemesh or none."),
    video_fps: Optional[float] = typer.Option(None, "--video-fps", help="With --media-dir: subsample video to at "
                                                                        "most this rate."),
    missing_mode: Optional[str] = typer.Option(None, "--missing-mode",
                                               help="What-if: drop inputs with evaluation's masks (RMFM, RMFM_same, "
                                                    "RMM, TMFM, STMFM, SMM)."),
    rate: Optional[str] = typer.Option(None, "--rate", help="With --missing-mode: a rate, r_l,r_a,r_v for RMFM_same, "
                                                            "or the present modalities for SMM (e.g. LA)."),
    seed: int = typer.Option(0, "--seed", help="With --missing-mode: the mask seed."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 ..."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Samples per pass (default: the run's "
                                                                        "eval_batch_size)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Predict classes and probabilities (and MACI's debiased ones) for every sample, with which
    modalities were present; metrics too when the input has labels."""
    from cider_mer.data.dataset import load_dataset
    from cider_mer.predict import (PredictError, WhatIf, output_format, predict_dataset, predict_transcripts,
                                   write_predictions)
    from cider_mer.runs import Run

    output_format(out)
    sources = [name for name, v in (("--data", data), ("--csv", csv), ("--media-dir", media_dir)) if v is not None]
    if len(sources) != 1:
        raise PredictError("give exactly one input: --data FILE, --csv CSV or --media-dir DIR --transcripts CSV"
                           + (f" (got {', '.join(sources)})" if sources else ""))
    if (media_dir is None) != (transcripts is None):
        raise PredictError("--media-dir and --transcripts go together")
    if (audio_features or vision_features) and csv is None:
        raise PredictError("--audio-features/--vision-features go with --csv")
    if (rate is None) != (missing_mode is None):
        raise PredictError("--missing-mode and --rate go together")
    what_if = None if missing_mode is None else WhatIf(missing_mode, parse_point(rate), seed)
    note = lambda msg: console.print(f"note: {escape(msg)}", highlight=False)  # noqa: E731

    loaded = Run.load(run, device=device)
    if data is not None:
        table = predict_dataset(loaded, load_dataset(data), split or "test", batch_size, what_if, progress=not quiet)
    else:
        table = predict_transcripts(loaded, csv or transcripts, audio_features, vision_features, media_dir, split,
                                    audio_kind, video_kind, video_fps, batch_size, what_if, progress=not quiet,
                                    note=note)
    write_predictions(table, out)
    present = ", ".join(f"{m} {int(table.present[:, k].sum())}" for k, m in enumerate(("text", "audio", "vision")))
    console.print(f"{table.n} predictions written to {escape(str(out))} (present: {present} of {table.n})",
                  highlight=False)
    if what_if is not None:
        console.print(f"what-if: {what_if.mode} at {rate} (seed {seed}) applied to the inputs", highlight=False)
    if table.tau is not None:
        console.print(f"debiased with tau {table.tau:.1f}, chosen on the validation split when training",
                      highlight=False)
    if table.labels is not None:
        console.print(metrics_table(table), highlight=False)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_cmd)
