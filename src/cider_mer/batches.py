"""Splits held as tensors on the training device; batches are index gathers (no per-sample Python)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch

from cider_mer.data.dataset import Split
from cider_mer.data.labels import is_regression
from cider_mer.models.interface import ModelInputs


def _frame_mask(lengths: np.ndarray, steps: int) -> torch.Tensor:
    return torch.from_numpy((np.arange(steps)[None, :] < lengths[:, None]).astype(np.float32))


@dataclass
class DeviceSplit:
    """One split on a device: N samples of token ids, masks, frames and labels."""

    name: str
    text_ids: torch.Tensor  # (N, L) long
    text_mask: torch.Tensor  # (N, L) float
    text_segment: torch.Tensor  # (N, L) long
    audio: torch.Tensor  # (N, T_a, d_a)
    audio_mask: torch.Tensor  # (N, T_a)
    vision: torch.Tensor  # (N, T_v, d_v)
    vision_mask: torch.Tensor  # (N, T_v)
    labels: torch.Tensor  # (N,) long class ids for the run's task; float scores for regression
    text_features: Optional[torch.Tensor] = None  # (N, L, D_t) frozen-encoder states of the complete text

    @classmethod
    def from_split(cls, split: Split, task: str, device: torch.device | str,
                   text_features: Optional[np.ndarray] = None) -> "DeviceSplit":
        t = lambda a, dtype=None: torch.as_tensor(a, dtype=dtype).to(device)  # noqa: E731
        return cls(
            name=split.name,
            text_ids=t(split.text_ids, torch.long),
            text_mask=t(split.text_mask, torch.float32),
            text_segment=t(split.text_segment, torch.long),
            audio=t(split.audio),
            audio_mask=_frame_mask(split.audio_lengths, split.audio.shape[1]).to(device),
            vision=t(split.vision),
            vision_mask=_frame_mask(split.vision_lengths, split.vision.shape[1]).to(device),
            labels=t(split.labels(task), torch.float32 if is_regression(task) else torch.long),
            text_features=None if text_features is None else t(text_features, torch.float32),
        )

    @property
    def n(self) -> int:
        return int(self.text_ids.shape[0])

    @property
    def device(self) -> torch.device:
        return self.text_ids.device

    def inputs(self, idx: Optional[torch.Tensor] = None) -> ModelInputs:
        """ModelInputs of the samples at ``idx`` (all samples when None)."""
        if idx is None:
            idx = torch.arange(self.n, device=self.device)
        pick = lambda a: None if a is None else a.index_select(0, idx)  # noqa: E731
        return ModelInputs(
            text_ids=pick(self.text_ids), text_mask=pick(self.text_mask), text_segment=pick(self.text_segment),
            audio=pick(self.audio), audio_mask=pick(self.audio_mask), vision=pick(self.vision),
            vision_mask=pick(self.vision_mask), text_features=pick(self.text_features),
        )

    def subset(self, idx: torch.Tensor) -> "DeviceSplit":
        """The samples at ``idx`` as a new split (tensors gathered on the same device)."""
        pick = lambda a: None if a is None else a.index_select(0, idx)  # noqa: E731
        return DeviceSplit(self.name, *(pick(getattr(self, f)) for f in (
            "text_ids", "text_mask", "text_segment", "audio", "audio_mask", "vision", "vision_mask", "labels",
            "text_features")))

    def padding_masks(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.text_mask, self.audio_mask, self.vision_mask


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator, device) -> Iterator[torch.Tensor]:
    """Index tensors of a fresh random permutation, cut into batches (the last may be smaller)."""
    perm = torch.randperm(n, generator=generator).to(device)
    for start in range(0, n, batch_size):
        yield perm[start:start + batch_size]


def bucketed_batches(lengths: torch.Tensor, batch_size: int, generator: torch.Generator, device,
                     window_batches: int = 32) -> Iterator[torch.Tensor]:
    """Training batches of similar text length, in random order (a speed option).

    A fresh random permutation is cut into windows of ``window_batches`` batches; each window is
    sorted by text length (ties keep the random order) and cut into batches; all batches are then
    shuffled. With batches trimmed to their longest text this removes most padded computation.
    """
    perm = torch.randperm(len(lengths), generator=generator)
    batches: list[torch.Tensor] = []
    window = batch_size * window_batches
    for start in range(0, len(perm), window):
        chunk = perm[start:start + window]
        chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    for k in torch.randperm(len(batches), generator=generator).tolist():
        yield batches[k].to(device)


def length_sorted_batches(split: DeviceSplit, batch_size: int) -> list[torch.Tensor]:
    """Evaluation batches of samples with similar text length (the encoder trims each batch)."""
    order = torch.argsort(split.text_mask.sum(dim=1), stable=True)
    return [order[i:i + batch_size] for i in range(0, split.n, batch_size)]
