"""``cider data ...``: synth, check, convert, import-csv, ood-split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from cider_mer.data.dataset import MerDataset, load_dataset

app = typer.Typer(no_args_is_help=True)
console = Console(width=160)


def _priors(values: list[float]) -> str:
    return " / ".join(f"{p:.3f}" for p in values) if len(values) <= 3 else " ".join(f"{p:.2f}" for p in values)


def print_summary(ds: MerDataset) -> None:
    """The label convention, and a table of splits, sizes, lengths and label priors per class task."""
    s = ds.summary()
    kind = "aligned" if s["aligned"] else "unaligned"
    console.print(
        f"[bold]{s['file']}[/bold]: {kind}; text length {s['text_len']}, audio {s['audio_len']}x{s['audio_dim']}, "
        f"vision {s['vision_len']}x{s['vision_dim']}"
    )
    console.print(f"label convention: {ds.convention.describe()}", highlight=False)
    tasks = list(next(iter(s["splits"].values()))["priors"])
    table = Table(show_header=True, header_style="bold")
    for col in ("split", "N", "text len min/mean/max", "audio len", "vision len",
                *[f"{t} priors {'/'.join(ds.convention.names_for(t))}" for t in tasks], "raw text"):
        table.add_column(col)
    for name, info in s["splits"].items():
        fmt = lambda d: f"{d['min']}/{d['mean']:.1f}/{d['max']}"  # noqa: E731
        table.add_row(
            name, str(info["n"]), fmt(info["text_length"]), fmt(info["audio_length"]), fmt(info["vision_length"]),
            *[_priors(info["priors"][t]) for t in tasks],
            "yes" if info["has_raw_text"] else "no",
        )
    console.print(table)


@app.command("check")
def check(file: Path = typer.Argument(..., help="Dataset file (pickle or joblib) or mapped dataset directory."),
          json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON.")) -> None:
    """Validate a dataset file safely and print its summary (exit 2 with one line if invalid)."""
    ds = load_dataset(file)
    if json_out:
        print(json.dumps(ds.summary(), indent=2))
    else:
        print_summary(ds)


@app.command("convert")
def convert(
    file: Path = typer.Argument(..., help="Dataset file (pickle or joblib) to convert."),
    out: Path = typer.Option(..., "--out", help="Directory to write (memory-mappable .npy arrays + dataset.json)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing mapped dataset at --out."),
) -> None:
    """Write a dataset as memory-mapped arrays: every command that takes a dataset accepts the
    directory, and training/evaluation gather batches from it instead of holding it in memory."""
    from cider_mer.data.mapped import convert_dataset, read_manifest

    ds = convert_dataset(file, out, force=force)
    console.print(f"wrote {out} (content key {read_manifest(out)['content_sha256'][:16]})", highlight=False)
    print_summary(ds)


@app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", help="Where to write the synthetic dataset file."),
    aligned: bool = typer.Option(False, "--aligned", help="Aligned variant (all sequences 50 steps)."),
    ood: bool = typer.Option(False, "--ood", help="Test split breaks the planted language bias."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    scale: float = typer.Option(1.0, "--scale", help="Multiply the MOSI split sizes 1284/229/686."),
) -> None:
    """Write the embedded default dataset: synthetic, MOSI-shaped, with a planted language bias."""
    from cider_mer.cli.options import above, at_least
    from cider_mer.data.synth import write_synthetic
    from cider_mer.io_utils import ensure_writable_file

    above(scale, 0, "--scale")
    at_least(seed, 0, "--seed")
    ensure_writable_file(out, "--out")
    ds = write_synthetic(out, seed=seed, scale=scale, aligned=aligned, ood=ood)
    print_summary(ds)


@app.command("import-csv")
def import_csv_cmd(
    csv: Path = typer.Argument(..., help="CSV with id,text,label,mode or video_id,clip_id,text,label,mode."),
    out: Path = typer.Option(..., "--out", help="Dataset file to write."),
    convention: Optional[str] = typer.Option(None, "--convention",
                                             help="Labels: mosi (scores in [-3, 3]), sims (scores in [-1, 1]) or "
                                                  "categorical (class names such as joy, anger). Default: mosi for "
                                                  "scores, categorical for names."),
    text_encoder: Optional[str] = typer.Option(None, "--text-encoder",
                                               help="Tokenizer source: default all-MiniLM-L6-v2, a local dir or hub id."),
    max_len: int = typer.Option(50, "--max-len", help="Token sequence length (with [CLS]/[SEP])."),
    audio_features: Optional[Path] = typer.Option(None, "--audio-features", help=".npz with ids, features, lengths."),
    vision_features: Optional[Path] = typer.Option(None, "--vision-features", help=".npz with ids, features, lengths."),
    media_dir: Optional[Path] = typer.Option(None, "--media-dir",
                                             help="Extract features from the audio/video files here (id = file "
                                                  "name without extension); needs the media extra."),
    audio_kind: str = typer.Option("librosa", "--audio-kind", help="With --media-dir: librosa, egemaps or none."),
    video_kind: str = typer.Option("facemesh", "--video-kind", help="With --media-dir: facemesh or none."),
    features_dir: Optional[Path] = typer.Option(None, "--features-dir",
                                                help="With --media-dir: also keep audio.npz/video.npz here."),
    video_fps: Optional[float] = typer.Option(None, "--video-fps",
                                              help="With --media-dir: subsample video to at most this rate."),
) -> None:
    """Import real transcripts (and optional features or recordings) into a dataset file."""
    from cider_mer.cli.options import above, at_least
    from cider_mer.data.import_csv import import_csv
    from cider_mer.io_utils import ensure_writable_dir, ensure_writable_file

    at_least(max_len, 3, "--max-len")  # [CLS], one token, [SEP]
    above(video_fps, 0, "--video-fps")
    ensure_writable_file(out, "--out")
    if features_dir is not None:
        ensure_writable_dir(features_dir, "--features-dir")
    ds = import_csv(csv, out, text_encoder=text_encoder, max_len=max_len, convention=convention,
                    audio_features=audio_features, vision_features=vision_features,
                    media_dir=media_dir, audio_kind=audio_kind, video_kind=video_kind, features_dir=features_dir,
                    video_fps=video_fps, note=lambda msg: console.print(f"note: {msg}", highlight=False))
    print_summary(ds)


@app.command("ood-split")
def ood_split_cmd(
    file: Path = typer.Argument(..., help="Dataset file with raw text."),
    out: Path = typer.Option(..., "--out", help="Re-partitioned dataset file to write (plus OUT.manifest.json)."),
    task: str = typer.Option("binary", "--task", help="binary or seven."),
    seed: int = typer.Option(0, "--seed"),
    group_by_video: bool = typer.Option(False, "--group-by-video", help="Keep all clips of a video in one split."),
    report: bool = typer.Option(False, "--report", help="Measure the shift with a bag-of-words classifier."),
    prior_shift: bool = typer.Option(False, "--prior-shift",
                                     help="Do not stratify the test quota by class: test also carries a "
                                          "label-prior shift (not with --group-by-video)."),
) -> None:
    """Re-split a dataset so that word-label correlations in test differ from train/valid."""
    from cider_mer.data.ood_split import format_summary, write_ood_split

    manifest = write_ood_split(file, out, task=task, seed=seed, group_by_video=group_by_video, report=report,
                               prior_shift=prior_shift)
    console.print(f"wrote {out} and {out}.manifest.json")
    console.print(format_summary(manifest))
