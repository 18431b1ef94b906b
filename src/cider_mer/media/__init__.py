"""Offline feature extraction from a user's own recordings (``cider features extract``).

Audio and video files become the importer's ``.npz`` feature files (``ids`` (M,), ``features``
(M, T, d) float32 zero-padded, ``lengths`` (M,) int64; see :mod:`cider_mer.data.import_csv`).
The id of a file is its name without extension.

Descriptor sets (``docs/media.md`` lists every dimension):

- audio ``librosa`` (default, ISC licence): 32 values per 10 ms frame (100 frames/s) of the
  signal mixed to mono and resampled to 16 kHz -- MFCC 0-12, their deltas, log energy, F0 in
  semitones, voicing probability, zero-crossing rate, spectral centroid and flatness;
- audio ``egemaps`` (opt-in ``media-research`` extra; openSMILE, research/non-commercial
  licence): the 25 eGeMAPS v02 low-level descriptors at 100 frames/s;
- video ``facemesh`` (default; MediaPipe 0.10.14, Apache-2.0): 24 facial-geometry values per
  video frame from the 478-point face mesh; frames without a face are rows of zeros.

The heavy libraries live in the ``media`` extra and are imported only when extraction runs.
"""

from __future__ import annotations

from cider_mer.errors import CiderError


class MediaError(CiderError):
    """A media file cannot be used (unreadable, empty, no face...); the message names the file."""


AUDIO_KINDS = ("librosa", "egemaps", "none")
VIDEO_KINDS = ("facemesh", "none")

__all__ = ["MediaError", "AUDIO_KINDS", "VIDEO_KINDS", "extract_features", "write_features"]


def extract_features(*args, **kwargs):
    """See :func:`cider_mer.media.extract.extract_features`."""
    from cider_mer.media.extract import extract_features as _extract

    return _extract(*args, **kwargs)


def write_features(*args, **kwargs):
    """See :func:`cider_mer.media.extract.write_features`."""
    from cider_mer.media.extract import write_features as _write

    return _write(*args, **kwargs)
