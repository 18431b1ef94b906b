"""``cider features extract``: audio/video files to the importer's feature files, offline."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True)
console = Console(width=160)


@app.command("extract")
def extract_cmd(
    media: List[Path] = typer.Argument(..., metavar="MEDIA...", help="Audio/video files or folders of them; a file's id is its name "
                                                  "without extension."),
    out: Path = typer.Option(..., "--out", help="Folder for audio.npz and/or video.npz."),
    audio: str = typer.Option("librosa", "--audio",
                              help="librosa (MFCC/pitch/energy, 32 dims, 100/s), egemaps (openSMILE, "
                                   "non-commercial licence, extra media-research) or none."),
    video: str = typer.Option("facemesh", "--video",
                              help="facemesh (MediaPipe face geometry, 24 dims, every frame) or none."),
    video_fps: Optional[float] = typer.Option(None, "--video-fps",
                                              help="Subsample video to at most this many frames per second."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Extract frame-level audio and facial features into DIR/audio.npz and DIR/video.npz.

    Every file is processed; files that fail are listed at the end and the command exits 2.
    """
    from cider_mer.media.extract import extract_features, failure_lines, raise_failures, summary_rows, write_features

    report = extract_features(media, audio=audio, video=video, video_fps=video_fps, progress=progress)
    written = write_features(report, out)
    table = Table(show_header=True, header_style="bold")
    for col in ("file", "kind", "ids", "frames min/max", "dims", "frames/s", "face found"):
        table.add_column(col)
    for row in summary_rows(report):
        table.add_row(str(written[row["modality"]]), row["kind"], str(row["ids"]),
                      f"{row['frames_min']}/{row['frames_max']}", str(row["dims"]),
                      ", ".join(f"{r:g}" for r in row["rate"]),
                      f"{row['face_rate']:.1%} of frames" if "face_rate" in row else "")
    if written:
        console.print(table)
        console.print(f"{report.n_files} file(s) in {report.seconds:.1f} s")
    for note in report.notes:
        console.print(f"note: {note}", highlight=False)
    if report.failures:
        if report.n_files > 1:  # the summary; the error line below names the first failed file
            print(f"{len(report.failed_paths())} of {report.n_files} file(s) failed:", file=sys.stderr)
            for line in failure_lines(report):
                print(f"  {line}", file=sys.stderr)
        raise_failures(report, written_to=out if written else None)


def register(root: typer.Typer) -> None:
    """Add the ``features`` command group to the root ``cider`` app."""
    root.add_typer(app, name="features", help="Extract audio and facial features from your own recordings.")
