"""Missing-modality simulation (SPEC §2): one vectorised, explicitly seeded module.

Masks are *keep* masks (True = kept, False = missing), always ANDed with the padding masks.
:func:`apply_missing` turns a missing text token into ``[UNK]`` (attention mask unchanged) and a
missing frame into zeros; lengths never change. ``[CLS]`` (position 0) and ``[SEP]``
(position len-1) are always kept. Rate 0 is an exact no-op.

Evaluation modes, at rate r:

========== ========================================================================================
RMFM       every valid position of [text, audio, vision] dropped i.i.d. with probability r
RMFM_same  per-modality rates (r_l, r_a, r_v), i.i.d. within each modality ("traditional RMFM");
           with equal rates and the same seed it gives exactly the RMFM masks (same distribution).
           The only mode that takes per-modality points (``--rates 0.1/0.5/0.7``, MissBench's
           imbalanced missingness): RMFM and RMM define one rate for all modalities, TMFM/STMFM
           share one time mask across modalities, and SMM's subsets are points of their own
RMM        each modality of each sample dropped whole with probability r
TMFM       one time mask shared by all three modalities (aligned data only)
STMFM      one contiguous block of round((len-2)*r) steps shared by all modalities (aligned only)
SMM        a fixed set of modalities missing for every sample (rate ignored); see SMM_SUBSETS
========== ========================================================================================

:class:`EvalMissingness` draws its uniforms once per split from a seed, so masks are
reproducible on any device and nested across rates (what is missing at 0.3 is missing at 0.5).
Training uses :func:`sample_training_keep` with a fresh draw per batch.
"""

from __future__ import annotations

from typing import Sequence

import torch

from cider_mer.config import TRAIN_SCHEMES
from cider_mer.errors import CiderError
from cider_mer.models.interface import KeepMasks, ModelInputs
from cider_mer.text.encoder import UNK_ID

MODES = ("RMFM", "RMFM_same", "RMM", "TMFM", "STMFM", "SMM")
ALIGNED_ONLY = frozenset({"TMFM", "STMFM"})
# SMM: name = the modalities that are PRESENT; the rest are missing for every sample.
SMM_SUBSETS = ("L", "A", "V", "LA", "LV", "AV")


class MissingModeError(CiderError):
    pass


def _boundary(text_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) bool: the [CLS] and [SEP] positions of each text."""
    length = text_mask.sum(dim=1).long()
    pos = torch.arange(text_mask.shape[1], device=text_mask.device)
    return (pos[None, :] == 0) | (pos[None, :] == (length - 1)[:, None])


def _finish(text_keep, audio_keep, vision_keep, text_mask, audio_mask, vision_mask) -> KeepMasks:
    tv, av, vv = text_mask.bool(), audio_mask.bool(), vision_mask.bool()
    text_keep = (text_keep | _boundary(text_mask)) & tv
    return KeepMasks(text_keep, audio_keep & av, vision_keep & vv)


def _check_rate(rate: float, what: str = "rate") -> float:
    rate = float(rate)
    if not 0.0 <= rate <= 1.0:
        raise MissingModeError(f"missing {what} must be in [0, 1], got {rate}")
    return rate


def check_mode(mode: str, aligned: bool) -> str:
    if mode not in MODES:
        raise MissingModeError(f"unknown missing mode '{mode}': expected one of {', '.join(MODES)}")
    if mode in ALIGNED_ONLY and not aligned:
        raise MissingModeError(
            f"missing mode {mode} needs aligned data (one time axis shared by text, audio and vision); "
            "this dataset is unaligned (it has audio_lengths/vision_lengths). Use RMFM, RMFM_same, RMM or SMM."
        )
    return mode


PER_MODALITY_MODES = frozenset({"RMFM_same"})


def check_modality_rates(mode: str, rates: Sequence[float]) -> tuple[float, float, float]:
    """A per-modality point (r_l, r_a, r_v) of ``mode``: three rates in [0, 1], RMFM_same only."""
    if mode not in PER_MODALITY_MODES:
        raise MissingModeError(f"per-modality rates (text/audio/vision, e.g. 0.1/0.5/0.7) are defined for "
                               f"{', '.join(sorted(PER_MODALITY_MODES))} only, not for {mode}: its masks use one "
                               "rate for all modalities")
    if len(rates) != 3:
        raise MissingModeError(f"per-modality rates need three values (text/audio/vision), got {len(rates)}")
    return tuple(_check_rate(r, "rate") for r in rates)  # type: ignore[return-value]


def point_label(point: float | Sequence[float] | str) -> str:
    """How reports name an evaluation point: ``0.3``, ``t0.1/a0.5/v0.7`` or an SMM subset."""
    if isinstance(point, str):
        return point
    if isinstance(point, (int, float)):
        return str(float(point))
    rl, ra, rv = point
    return f"t{float(rl):g}/a{float(ra):g}/v{float(rv):g}"


def smm_rates(subset: str) -> tuple[float, float, float]:
    """Per-modality missing rates (text, audio, vision) of an SMM subset such as ``"LA"``."""
    if subset not in SMM_SUBSETS + ("LAV",):
        raise MissingModeError(f"unknown SMM subset '{subset}': expected one of {', '.join(SMM_SUBSETS)} (or LAV)")
    return tuple(0.0 if m in subset else 1.0 for m in "LAV")  # type: ignore[return-value]


class EvalMissingness:
    """Reproducible, rate-nested missing masks for one split.

    Args:
        mode: one of :data:`MODES`.
        text_mask, audio_mask, vision_mask: (N, L), (N, T_a), (N, T_v) padding masks.
        seed: the evaluation seed; all uniforms are drawn on the CPU from it, so a seed gives the
            same masks on every device.
        aligned: whether the data is aligned (TMFM/STMFM refuse unaligned data).
    """

    def __init__(self, mode: str, text_mask, audio_mask, vision_mask, seed: int, aligned: bool):
        self.mode = check_mode(mode, aligned)
        self.text_mask = text_mask.cpu()
        self.audio_mask = audio_mask.cpu()
        self.vision_mask = vision_mask.cpu()
        g = torch.Generator(device="cpu").manual_seed(int(seed))
        n = self.text_mask.shape[0]
        if self.mode in ("RMFM", "RMFM_same", "SMM"):
            # One uniform matrix over the concatenated [text | audio | vision] positions.
            total = self.text_mask.shape[1] + self.audio_mask.shape[1] + self.vision_mask.shape[1]
            u = torch.rand(n, total, generator=g)
            lt, la = self.text_mask.shape[1], self.audio_mask.shape[1]
            self.u_text, self.u_audio, self.u_vision = u[:, :lt], u[:, lt:lt + la], u[:, lt + la:]
        elif self.mode == "RMM":
            self.u_modality = torch.rand(n, 3, generator=g)
        elif self.mode == "TMFM":
            self.u_time = torch.rand(n, self.text_mask.shape[1], generator=g)
        elif self.mode == "STMFM":
            self.u_start = torch.rand(n, generator=g)

    def masks(self, rate: float | Sequence[float] | str) -> KeepMasks:
        """Keep masks at ``rate``: a float, an (r_l, r_a, r_v) triple (RMFM_same), or an SMM subset."""
        tm, am, vm = self.text_mask, self.audio_mask, self.vision_mask
        mode = self.mode
        if mode == "SMM" or (mode == "RMFM_same" and isinstance(rate, str)):
            rate = smm_rates(str(rate))
            mode = "RMFM_same"
        if mode == "RMFM_same":
            rl, ra, rv = (rate, rate, rate) if isinstance(rate, (int, float)) else tuple(rate)
            rl, ra, rv = (_check_rate(r, "rate") for r in (rl, ra, rv))
            return _finish(self.u_text >= rl, self.u_audio >= ra, self.u_vision >= rv, tm, am, vm)
        r = _check_rate(rate)  # type: ignore[arg-type]
        if mode == "RMFM":
            return _finish(self.u_text >= r, self.u_audio >= r, self.u_vision >= r, tm, am, vm)
        if mode == "RMM":
            keep = self.u_modality >= r  # (N, 3)
            text_keep = keep[:, :1].expand_as(tm)
            return _finish(text_keep, keep[:, 1:2].expand_as(am), keep[:, 2:3].expand_as(vm), tm, am, vm)
        if mode == "TMFM":
            keep = (self.u_time >= r) | _boundary(tm)
            return _finish(keep, keep, keep, tm, am, vm)
        # STMFM: one contiguous block of round((len - 2) * r) words, starting after [CLS].
        length = tm.sum(dim=1).long()
        block = torch.round((length - 2).clamp(min=0).double() * r).long()  # half to even, like numpy
        span = (length - block - 1).clamp(min=1)
        start = 1 + torch.floor(self.u_start.double() * span.double()).long().clamp(max=span - 1)
        pos = torch.arange(tm.shape[1])[None, :]
        keep = ~((pos >= start[:, None]) & (pos < (start + block)[:, None]))
        return _finish(keep, keep, keep, tm, am, vm)


def sample_training_keep(
    text_mask: torch.Tensor,
    audio_mask: torch.Tensor,
    vision_mask: torch.Tensor,
    generator: torch.Generator,
    scheme: str = "per_sample",
) -> KeepMasks:
    """Fresh RMFM keep masks for one training batch, on the generator's device.

    ``per_sample`` (the paper): each sample draws a rate r ~ U[0, 1) and drops every valid position
    with probability r. ``per_position`` (the authors' code): every position is dropped with
    probability 0.5.
    """
    if scheme not in TRAIN_SCHEMES:
        raise MissingModeError(f"unknown training missing scheme '{scheme}': expected one of {TRAIN_SCHEMES}")
    dev = generator.device
    b = text_mask.shape[0]
    total = text_mask.shape[1] + audio_mask.shape[1] + vision_mask.shape[1]
    u = torch.rand(b, total, generator=generator, device=dev)
    if scheme == "per_sample":
        r = torch.rand(b, 1, generator=generator, device=dev)
    else:
        r = torch.full((b, 1), 0.5, device=dev)
    keep = u >= r
    lt, la = text_mask.shape[1], audio_mask.shape[1]
    return _finish(keep[:, :lt], keep[:, lt:lt + la], keep[:, lt + la:], text_mask, audio_mask, vision_mask)


def apply_missing(inputs: ModelInputs, keep: KeepMasks) -> ModelInputs:
    """Inputs with missing tokens set to [UNK] and missing frames zeroed (masks/lengths unchanged).

    Precomputed ``text_features`` survive only when no token was dropped (they describe the
    complete text); otherwise they are cleared so the backbone re-encodes the incomplete text.
    """
    dropped_text = inputs.text_mask.bool() & ~keep.text
    text_ids = torch.where(dropped_text, torch.full_like(inputs.text_ids, UNK_ID), inputs.text_ids)
    features = inputs.text_features
    if features is not None and bool(dropped_text.any()):
        features = None
    return inputs.replace(
        text_ids=text_ids,
        audio=inputs.audio * keep.audio.unsqueeze(-1).to(inputs.audio.dtype),
        vision=inputs.vision * keep.vision.unsqueeze(-1).to(inputs.vision.dtype),
        text_features=features,
    )


def dropped_masks(inputs: ModelInputs, keep: KeepMasks) -> KeepMasks:
    """Boolean masks of the positions that were dropped (valid and not kept): the recon targets."""
    return KeepMasks(
        inputs.text_mask.bool() & ~keep.text,
        inputs.audio_mask.bool() & ~keep.audio,
        inputs.vision_mask.bool() & ~keep.vision,
    )
