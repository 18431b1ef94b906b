"""Frame-level acoustic descriptors of a 16 kHz mono signal.

``librosa`` (default): 100 frames/s (hop 160 samples), frames centred on ``k * 10 ms`` so a
signal of ``n`` samples gives ``1 + n // 160`` frames. Window 25 ms (400 samples, Hann) in a
512-point FFT; 40 mel bands from 0 to 8 kHz. See :data:`LIBROSA_NAMES` for the 32 values.
Pitch comes from probabilistic YIN (60-500 Hz, 64 ms window); unvoiced frames have F0 = 0.

``egemaps`` (``media-research`` extra, openSMILE, research/non-commercial licence): the 25
eGeMAPS v02 low-level descriptors, 100 frames/s, about ``100 * seconds - 4`` frames (windows of
20-60 ms, no centring). Values openSMILE leaves undefined are 0.
"""

from __future__ import annotations

import warnings

import numpy as np

from cider_mer.media import MediaError
from cider_mer.media.decode import SAMPLE_RATE, require

FRAME_RATE = 100.0
HOP = SAMPLE_RATE // 100
WIN = 400
N_FFT = 512
N_MFCC = 13
F0_MIN, F0_MAX = 60.0, 500.0
F0_FRAME = 1024

LIBROSA_NAMES = tuple(
    [f"mfcc{i}" for i in range(N_MFCC)]
    + [f"mfcc{i}_delta" for i in range(N_MFCC)]
    + ["log_energy_db", "f0_semitones_from_27.5hz", "voicing_prob", "zero_crossing_rate",
       "spectral_centroid_khz", "spectral_flatness"]
)


def librosa_frames(n_samples: int) -> int:
    """Frames the ``librosa`` set gives for a signal of ``n_samples`` at 16 kHz."""
    return 1 + n_samples // HOP


def librosa_features(y: np.ndarray) -> np.ndarray:
    """(T, 32) float32 descriptors of a 16 kHz mono signal (T = 1 + len(y) // 160)."""
    librosa = require("librosa")
    y = np.asarray(y, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "n_fft too large" on very short signals
        spec = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP, win_length=WIN, window="hann", center=True)) ** 2
        mel = librosa.feature.melspectrogram(S=spec, sr=SAMPLE_RATE, n_mels=40, fmin=0.0, fmax=SAMPLE_RATE / 2)
        mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel, amin=1e-10, top_db=None), n_mfcc=N_MFCC)
        t = mfcc.shape[1]
        width = 9 if t >= 9 else (t if t % 2 == 1 else t - 1)
        delta = librosa.feature.delta(mfcc, width=width, mode="nearest") if width >= 3 else np.zeros_like(mfcc)
        rms = librosa.feature.rms(y=y, frame_length=WIN, hop_length=HOP, center=True)[0]
        energy = 20.0 * np.log10(np.maximum(rms, 1e-5))
        f0, _, vprob = librosa.pyin(y, fmin=F0_MIN, fmax=F0_MAX, sr=SAMPLE_RATE, frame_length=F0_FRAME,
                                    hop_length=HOP, center=True)
        semitones = np.where(np.isfinite(f0), 12.0 * np.log2(np.nan_to_num(f0, nan=27.5) / 27.5), 0.0)
        zcr = librosa.feature.zero_crossing_rate(y, frame_length=WIN, hop_length=HOP, center=True)[0]
        centroid = librosa.feature.spectral_centroid(S=np.sqrt(spec), sr=SAMPLE_RATE)[0] / 1000.0
        flatness = librosa.feature.spectral_flatness(S=np.sqrt(spec))[0]
    cols = [mfcc, delta, energy[None], semitones[None], np.nan_to_num(vprob)[None], zcr[None], centroid[None],
            flatness[None]]
    t = min(c.shape[1] for c in cols)
    feats = np.concatenate([c[:, :t] for c in cols], axis=0).T.astype(np.float32)
    return np.nan_to_num(feats, nan=0.0, posinf=0.0, neginf=0.0)


_SMILE = None


def egemaps_names() -> tuple[str, ...]:
    return tuple(_smile().feature_names)


def _smile():
    global _SMILE
    if _SMILE is None:
        opensmile = require("opensmile", extra="media-research")
        _SMILE = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                                 feature_level=opensmile.FeatureLevel.LowLevelDescriptors)
    return _SMILE


def egemaps_features(y: np.ndarray, path) -> np.ndarray:
    """(T, 25) float32 eGeMAPS v02 low-level descriptors at 100 frames/s (openSMILE)."""
    smile = _smile()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = smile.process_signal(np.asarray(y, dtype=np.float32), SAMPLE_RATE)
    feats = df.to_numpy(dtype=np.float32)
    if feats.shape[0] == 0 or not np.isfinite(feats).any():
        raise MediaError(f"{path}: audio too short for eGeMAPS ({len(y) / SAMPLE_RATE:.3f} s)")
    return np.nan_to_num(feats, nan=0.0, posinf=0.0, neginf=0.0)


def audio_features(y: np.ndarray, kind: str, path) -> tuple[np.ndarray, tuple[str, ...]]:
    """Descriptors of kind ``librosa`` or ``egemaps`` and their names."""
    if kind == "librosa":
        return librosa_features(y), LIBROSA_NAMES
    if kind == "egemaps":
        feats = egemaps_features(y, path)
        return feats, egemaps_names()
    raise MediaError(f"unknown audio kind '{kind}'; expected librosa, egemaps or none")
