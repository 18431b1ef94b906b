"""Reading media files without a system FFmpeg: audio to 16 kHz mono float32, video to RGB frames.

Audio files that libsndfile reads (WAV, FLAC, OGG, AIFF) go through ``soundfile``; everything
else, and the audio track of video files, through PyAV (``av``), whose wheels carry their own
FFmpeg libraries. Channels are averaged to mono, then the signal is resampled to 16 kHz with
``soxr`` (high quality). Errors name the file.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from cider_mer.media import MediaError

SAMPLE_RATE = 16000
AUDIO_EXTS = (".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".mp3", ".m4a", ".aac", ".opus", ".wma")
VIDEO_EXTS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp")
_SNDFILE_EXTS = (".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff")


class NoStreamError(MediaError):
    """The container has no stream of the requested kind (e.g. a video without sound)."""


def require(module: str, extra: str = "media"):
    """Import an optional dependency or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MediaError(
            f"feature extraction needs the '{extra}' extra ({module} is not importable: {exc}); "
            f"install it with: pip install \"cider-mer[{extra}]\""
        ) from None


def media_kind(path: Path) -> Optional[str]:
    """``"audio"``, ``"video"`` or None from the file extension."""
    ext = path.suffix.lower()
    if ext in AUDIO_EXTS:
        return "audio"
    if ext in VIDEO_EXTS:
        return "video"
    return None


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise MediaError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: empty file (0 bytes)")


def _to_mono_16k(data: np.ndarray, rate: int, path: Path) -> np.ndarray:
    """(n, channels) float -> (n',) float32 mono at 16 kHz."""
    if data.size == 0 or data.shape[0] == 0:
        raise MediaError(f"{path}: no audio samples")
    mono = data.astype(np.float32).mean(axis=1)
    if rate != SAMPLE_RATE:
        soxr = require("soxr")
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    if mono.size == 0:
        raise MediaError(f"{path}: no audio samples")
    if not np.isfinite(mono).all():
        raise MediaError(f"{path}: audio samples are not finite")
    return np.ascontiguousarray(mono)


def _open_container(path: Path):
    av = require("av")
    try:
        return av.open(str(path))
    except Exception as exc:  # PyAV raises many error types for unreadable data
        raise MediaError(f"{path}: cannot read as media ({_short(exc)})") from None


def _short(exc: BaseException) -> str:
    """A short reason: FFmpeg's own message when there is one (without errno and path)."""
    text = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
    return str(text).splitlines()[0][:200]


def _decode_audio_av(path: Path) -> tuple[np.ndarray, int]:
    av = require("av")
    with _open_container(path) as container:
        if not container.streams.audio:
            raise NoStreamError(f"{path}: no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp")  # float planar; layout and rate as the source
        chunks: list[np.ndarray] = []
        rate = None
        try:
            for frame in container.decode(stream):
                rate = rate or frame.sample_rate
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray())
        except Exception as exc:
            raise MediaError(f"{path}: cannot decode audio ({_short(exc)})") from None
    if not chunks or rate is None:
        raise MediaError(f"{path}: no audio samples")
    channels = min(c.shape[0] for c in chunks)
    data = np.concatenate([c[:channels] for c in chunks], axis=1).T  # (n, channels)
    return data, int(rate)


def load_audio(path: str | os.PathLike) -> np.ndarray:
    """The file's audio as float32 mono at 16 kHz (a video's first audio track).

    Raises :class:`MediaError` naming the file when it is empty, unreadable or silent of samples,
    and :class:`NoStreamError` when a container has no audio stream.
    """
    p = Path(path)
    _check_file(p)
    if p.suffix.lower() in _SNDFILE_EXTS:
        sf = require("soundfile")
        try:
            data, rate = sf.read(str(p), dtype="float32", always_2d=True)
        except Exception as exc:
            try:
                data, rate = _decode_audio_av(p)
            except NoStreamError:
                raise
            except MediaError:
                raise MediaError(f"{p}: cannot read as audio ({_short(exc)})") from None
        return _to_mono_16k(data, int(rate), p)
    data, rate = _decode_audio_av(p)
    return _to_mono_16k(data, rate, p)


class VideoReader:
    """RGB frames of a file's first video stream, optionally subsampled to at most ``fps``.

    Use as a context manager; :attr:`rate` is the rate of the frames yielded (the native rate,
    or ``fps`` when subsampling).
    """

    def __init__(self, path: str | os.PathLike, fps: Optional[float] = None) -> None:
        self.path = Path(path)
        _check_file(self.path)
        self.container = _open_container(self.path)
        if not self.container.streams.video:
            self.container.close()
            raise NoStreamError(f"{self.path}: no video stream")
        self.stream = self.container.streams.video[0]
        native = self.stream.average_rate or self.stream.guessed_rate or Fraction(30)
        self.native_rate = float(native)
        if fps is not None and fps <= 0:
            raise MediaError(f"video frame rate must be positive, got {fps}")
        self.step = None if fps is None or fps >= self.native_rate else float(fps)
        self.rate = self.step or self.native_rate

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.container.close()

    def frames(self) -> Iterator[np.ndarray]:
        """Yield (H, W, 3) uint8 RGB frames in presentation order."""
        index = 0
        next_k = 0
        try:
            for frame in self.container.decode(self.stream):
                t = frame.time if frame.time is not None else index / self.native_rate
                index += 1
                if self.step is not None:
                    if t + 1e-6 < next_k / self.step:
                        continue
                    next_k = int(np.floor(t * self.step + 1e-6)) + 1
                yield frame.to_ndarray(format="rgb24")
        except MediaError:
            raise
        except Exception as exc:
            raise MediaError(f"{self.path}: cannot decode video ({_short(exc)})") from None


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence what native libraries (TFLite, glog) print on file descriptor 2 meanwhile.

    Python-level errors are unaffected (they are raised, not printed). ``CIDER_DEBUG=1`` keeps
    the native messages.
    """
    if os.environ.get("CIDER_DEBUG"):
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
