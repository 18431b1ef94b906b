"""From media files to the importer's feature files (``audio.npz``, ``video.npz``).

Each id (a file name without extension) gets audio features from its audio file, or else from
its video file's sound track, and video features from its video file. Every file is processed
even when others fail; :class:`ExtractionReport` lists the failures, and :func:`raise_failures`
turns them into one :class:`~cider_mer.media.MediaError` whose first line names the file.

The ``.npz`` files hold ``ids`` (M,) str, ``features`` (M, T, d) float32 zero-padded to the
longest file, ``lengths`` (M,) int64, plus ``frame_rate`` (M,) float64, ``feature_names`` (d,)
str and ``kind`` (a str); ``video.npz`` also holds ``present`` (M, T) bool (a face was found)
and ``face_rate`` (M,) float64. They load with ``allow_pickle=False``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, Sequence, TypeVar

import numpy as np

from cider_mer.io_utils import atomic_path
from cider_mer.media import AUDIO_KINDS, VIDEO_KINDS, MediaError
from cider_mer.media.decode import AUDIO_EXTS, VIDEO_EXTS, NoStreamError, media_kind

MMSA_SEP = "$_$"


@dataclass
class Job:
    """What to extract for one id."""

    id: str
    audio: Optional[Path] = None  # file whose sound gives the audio features
    video: Optional[Path] = None  # file whose frames give the video features


T = TypeVar("T")


@dataclass
class Failure:
    path: Path
    modality: str
    reason: str


@dataclass
class ModalityFeatures:
    """One modality's features for M ids, in the importer's layout."""

    kind: str
    ids: np.ndarray  # (M,) str
    features: np.ndarray  # (M, T, d) float32, zero-padded
    lengths: np.ndarray  # (M,) int64
    frame_rate: np.ndarray  # (M,) float64
    feature_names: tuple[str, ...]
    present: Optional[np.ndarray] = None  # (M, T) bool, video only

    def table(self) -> dict[str, tuple[np.ndarray, int]]:
        """{id: (features (T, d), length)} as :func:`cider_mer.data.import_csv.read_feature_file` returns."""
        return {str(i): (self.features[k], int(self.lengths[k])) for k, i in enumerate(self.ids)}

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"ids": self.ids.astype(str), "features": self.features, "lengths": self.lengths,
               "frame_rate": self.frame_rate, "feature_names": np.array(self.feature_names, dtype=str),
               "kind": np.array(self.kind)}
        if self.present is not None:
            out["present"] = self.present
            out["face_rate"] = self.present.sum(axis=1) / np.maximum(self.lengths, 1)
        return out


@dataclass
class ExtractionReport:
    audio: Optional[ModalityFeatures] = None
    video: Optional[ModalityFeatures] = None
    failures: list[Failure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    n_files: int = 0
    seconds: float = 0.0

    def failed_paths(self) -> list[Path]:
        seen: dict[Path, None] = {}
        for f in self.failures:
            seen.setdefault(f.path, None)
        return list(seen)


def check_kinds(audio: str, video: str) -> tuple[str, str]:
    audio, video = (audio or "none").lower(), (video or "none").lower()
    if audio not in AUDIO_KINDS:
        raise MediaError(f"unknown audio kind '{audio}'; expected one of {', '.join(AUDIO_KINDS)}")
    if video not in VIDEO_KINDS:
        raise MediaError(f"unknown video kind '{video}'; expected one of {', '.join(VIDEO_KINDS)}")
    if audio == "none" and video == "none":
        raise MediaError("nothing to extract: both --audio and --video are 'none'")
    return audio, video


def expand_media(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given, and the media files inside given folders (recursively, sorted)."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and media_kind(f) is not None)
            if not found:
                raise MediaError(f"{p}: no media files in this folder (extensions {', '.join(AUDIO_EXTS + VIDEO_EXTS)})")
            out.extend(found)
        elif not p.exists():
            raise MediaError(f"{p}: no such file")
        elif media_kind(p) is None:
            raise MediaError(f"{p}: unsupported extension '{p.suffix}'; expected one of "
                             f"{', '.join(AUDIO_EXTS + VIDEO_EXTS)}")
        else:
            out.append(p)
    return out


def plan_jobs(files: Sequence[Path] | Mapping[str, Sequence[Path]], audio: str = "librosa",
              video: str = "facemesh") -> list[Job]:
    """One job per id. ``files`` is a list (id = file stem) or a mapping id -> files."""
    groups: dict[str, list[Path]] = {}
    if isinstance(files, Mapping):
        for i, fs in files.items():
            groups.setdefault(str(i), []).extend(Path(f) for f in fs)
    else:
        for f in files:
            groups.setdefault(Path(f).stem, []).append(Path(f))
    jobs = []
    for i, fs in groups.items():
        fs = list(dict.fromkeys(fs))
        by_kind: dict[str, list[Path]] = {"audio": [], "video": []}
        for f in fs:
            kind = media_kind(f)
            if kind is None:
                raise MediaError(f"{f}: unsupported extension '{f.suffix}'")
            by_kind[kind].append(f)
        for kind, lst in by_kind.items():
            if len(lst) > 1:
                raise MediaError(f"{lst[0]} and {lst[1]}: two {kind} files for the id '{i}'; keep one")
        a_file = by_kind["audio"][0] if by_kind["audio"] else None
        v_file = by_kind["video"][0] if by_kind["video"] else None
        job = Job(id=i, audio=(a_file or v_file) if audio != "none" else None,
                  video=v_file if video != "none" else None)
        if job.audio or job.video:
            jobs.append(job)
    return jobs


def match_media_dir(media_dir: str | os.PathLike, ids: Sequence[str]) -> tuple[dict[str, list[Path]], int]:
    """Media files under ``media_dir`` matched to ``ids`` by name without extension.

    A file ``VIDEO/CLIP.mp4`` also matches the MMSA-style id ``VIDEO$_$CLIP``. Returns
    {id: files} and the number of media files that matched no id.
    """
    root = Path(media_dir)
    if not root.is_dir():
        raise MediaError(f"{root}: no such folder")
    wanted = set(map(str, ids))
    matched: dict[str, list[Path]] = {}
    unmatched = 0
    for f in sorted(root.rglob("*")):
        if not f.is_file() or media_kind(f) is None:
            continue
        candidates = [f.stem, f"{f.parent.name}{MMSA_SEP}{f.stem}"]
        hit = next((c for c in candidates if c in wanted), None)
        if hit is None:
            unmatched += 1
        else:
            matched.setdefault(hit, []).append(f)
    return matched, unmatched


def _stack(kind: str, ids: list[str], seqs: list[np.ndarray], rates: list[float], names: Sequence[str],
           masks: Optional[list[np.ndarray]] = None) -> Optional[ModalityFeatures]:
    if not ids:
        return None
    t_max = max(s.shape[0] for s in seqs)
    d = len(names)
    feats = np.zeros((len(ids), t_max, d), dtype=np.float32)
    lengths = np.zeros(len(ids), dtype=np.int64)
    present = np.zeros((len(ids), t_max), dtype=bool) if masks is not None else None
    for k, s in enumerate(seqs):
        feats[k, : s.shape[0]] = s
        lengths[k] = s.shape[0]
        if present is not None:
            present[k, : s.shape[0]] = masks[k]
    return ModalityFeatures(kind=kind, ids=np.array(ids, dtype=str), features=feats, lengths=lengths,
                            frame_rate=np.array(rates, dtype=np.float64), feature_names=tuple(names),
                            present=present)


def _reason(exc: BaseException, path: Optional[Path] = None) -> str:
    """The first line of an error, without the leading ``PATH: `` that media errors carry."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if path is not None and msg.startswith(f"{path}: "):
        msg = msg[len(f"{path}: "):]
    return msg


def _attempt(report: ExtractionReport, path: Path, modality: str, debug: bool,
             extract: Callable[[], T]) -> tuple[Optional[T], bool]:
    """``(extract(), False)``; a file without that stream is a note and gives ``(None, False)``; any other
    error is recorded in ``report.failures`` and gives ``(None, True)`` (with ``CIDER_DEBUG``, a
    non-media error is raised instead)."""
    try:
        return extract(), False
    except NoStreamError as exc:
        report.notes.append(f"{_reason(exc)}: its {modality} is treated as missing")
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # decoders raise many types for a corrupt file: each is that file's failure
        if debug and not isinstance(exc, MediaError):
            raise
        report.failures.append(Failure(path, modality, _reason(exc, path)))
        return None, True
    return None, False


def run_jobs(jobs: Sequence[Job], audio: str = "librosa", video: str = "facemesh", video_fps: Optional[float] = None,
             progress: bool = True) -> ExtractionReport:
    """Extract every job; failures are collected, not raised (see :func:`raise_failures`)."""
    import time

    from tqdm.auto import tqdm

    audio, video = check_kinds(audio, video)
    # A missing or wrong optional library is one error up front, not one failure per file.
    if audio != "none":
        from cider_mer.media.audio import FRAME_RATE, audio_features
        from cider_mer.media.decode import load_audio, require

        if any(j.audio is not None for j in jobs):
            require("av")
            if audio == "librosa":
                require("librosa")
            else:
                from cider_mer.media.audio import _smile

                _smile()
    if video != "none":
        from cider_mer.media.video import FACEMESH_NAMES, _mediapipe, facemesh_features

        if any(j.video is not None for j in jobs):
            _mediapipe()
    debug = bool(os.environ.get("CIDER_DEBUG"))
    report = ExtractionReport(n_files=len({p for j in jobs for p in (j.audio, j.video) if p is not None}))
    a_ids, a_seqs, a_rates, a_names = [], [], [], ()
    v_ids, v_seqs, v_rates, v_masks = [], [], [], []
    start = time.perf_counter()
    bar = tqdm(jobs, desc="extracting features", unit="id", disable=not progress or None, file=sys.stderr)
    for job in bar:
        audio_failed = False
        if job.audio is not None:
            out, audio_failed = _attempt(report, job.audio, "audio", debug,
                                         lambda: audio_features(load_audio(job.audio), audio, job.audio))
            if out is not None:
                feats, a_names = out
                a_ids.append(job.id)
                a_seqs.append(feats)
                a_rates.append(FRAME_RATE)
        if job.video is not None and not (audio_failed and job.video == job.audio):
            out, _ = _attempt(report, job.video, "video", debug, lambda: facemesh_features(job.video, fps=video_fps))
            if out is not None:
                feats, mask, rate = out
                v_ids.append(job.id)
                v_seqs.append(feats)
                v_rates.append(rate)
                v_masks.append(mask)
    bar.close()
    report.seconds = time.perf_counter() - start
    if audio != "none":
        report.audio = _stack(audio, a_ids, a_seqs, a_rates, a_names)
    if video != "none":
        report.video = _stack(video, v_ids, v_seqs, v_rates, FACEMESH_NAMES, masks=v_masks)
    return report


def extract_features(media: Sequence[str | os.PathLike] | Mapping[str, Sequence[str | os.PathLike]],
                     audio: str = "librosa", video: str = "facemesh", video_fps: Optional[float] = None,
                     progress: bool = True) -> ExtractionReport:
    """Extract features from media files (or folders of them); ids are file names without extension.

    Returns an :class:`ExtractionReport`; files that fail are listed in ``report.failures`` and
    the others are extracted all the same.
    """
    audio, video = check_kinds(audio, video)
    if isinstance(media, Mapping):
        jobs = plan_jobs({k: [Path(p) for p in v] for k, v in media.items()}, audio, video)
    else:
        jobs = plan_jobs(expand_media(media), audio, video)
    if not jobs:
        raise MediaError("no file to extract: audio kinds need audio or video files, video kinds need video files")
    return run_jobs(jobs, audio=audio, video=video, video_fps=video_fps, progress=progress)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())


def write_features(report: ExtractionReport, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``audio.npz`` and/or ``video.npz`` (atomically) into ``out_dir``; returns what was written."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise MediaError(f"{out}: exists and is not a folder")
    written: dict[str, Path] = {}
    for name, feats in (("audio", report.audio), ("video", report.video)):
        if feats is not None:
            path = out / f"{name}.npz"
            _save_npz(path, feats.arrays())
            written[name] = path
    return written


def failure_lines(report: ExtractionReport) -> list[str]:
    """One line per failed file: ``PATH (modality): reason``."""
    return [f"{f.path} ({f.modality}): {f.reason}" for f in report.failures]


def raise_failures(report: ExtractionReport, written_to: Optional[str | os.PathLike] = None) -> None:
    """Raise one :class:`MediaError` when files failed; its first line names the (first) file."""
    if not report.failures:
        return
    first = report.failures[0]
    paths = report.failed_paths()
    msg = f"{first.path}: {first.reason}"
    if len(paths) > 1:
        more = ", ".join(str(p) for p in paths[1:4]) + (" ..." if len(paths) > 4 else "")
        msg += f"; {len(paths) - 1} more file(s) failed: {more}"
    if written_to is not None and (report.audio is not None or report.video is not None):
        msg += f" ({len(paths)} of {report.n_files} files failed; the others' features were written to {written_to})"
    raise MediaError(msg + "\n" + "\n".join(failure_lines(report)))


def summary_rows(report: ExtractionReport) -> list[dict]:
    """Per modality: ids, frames (min/max), dims, rate and, for video, the share of frames with a face."""
    rows = []
    for name, f in (("audio", report.audio), ("video", report.video)):
        if f is None:
            continue
        row = {"modality": name, "kind": f.kind, "ids": len(f.ids), "frames_min": int(f.lengths.min()),
               "frames_max": int(f.lengths.max()), "dims": f.features.shape[2],
               "rate": sorted(set(np.round(f.frame_rate, 3).tolist()))}
        if f.present is not None:
            row["face_rate"] = float(f.present.sum() / max(int(f.lengths.sum()), 1))
        rows.append(row)
    return rows


def media_for_import(media_dir: str | os.PathLike, ids: Sequence[str], csv_path: str | os.PathLike,
                     audio: str = "librosa", video: str = "facemesh", video_fps: Optional[float] = None,
                     progress: bool = True, note: Optional[Callable[[str], None]] = None) -> ExtractionReport:
    """Extraction for ``cider data import-csv --media-dir``: match, extract, and raise on failures."""
    audio, video = check_kinds(audio, video)
    matched, unmatched_files = match_media_dir(media_dir, ids)
    if not matched:
        example = next(iter(ids), "?")
        raise MediaError(f"{csv_path}: none of its {len(ids)} ids matches a media file in {media_dir} "
                         f"(a file's id is its name without extension, e.g. '{example}.mp4')")
    report = run_jobs(plan_jobs(matched, audio, video), audio=audio, video=video, video_fps=video_fps,
                      progress=progress)
    raise_failures(report)
    if note is not None:
        missing = len(ids) - len(matched)
        if missing:
            note(f"{missing} of {len(ids)} ids in {csv_path} have no media file in {media_dir}: their audio and "
                 f"video are missing")
        if unmatched_files:
            note(f"{unmatched_files} media file(s) in {media_dir} match no id in {csv_path} and were skipped")
        for n in report.notes:
            note(n)
    return report
