"""Splits on the training device; batches are index gathers (no per-sample Python).

A :class:`DeviceSplit` always holds its small tensors (token ids, masks, labels) on the device.
Its large ones (audio and vision frames, cached text-encoder states) are either on the device too
(*resident*) or stay in host arrays, usually memory maps of a mapped dataset, and each batch's
rows are gathered from there (*streamed*): indices sorted for locality, copied into pinned memory
and sent with a non-blocking copy on CUDA, the mapped pages released again (see
:func:`cider_mer.data.mapped.release_pages`). Both give the same batches.

The rule (``TrainConfig.data_on_device``): ``"always"`` resident, ``"never"`` streamed, ``"auto"``
resident when the split's large arrays take at most :data:`RESIDENT_FRACTION` of the memory
available on the device now (free CUDA memory; on the CPU, ``MemAvailable`` of ``/proc/meminfo``).
The CPU fraction is small because streaming from the page cache costs little there, while a
resident copy of a mapped split is anonymous memory that counts against the process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Iterator, Optional, Union

import numpy as np
import torch

from cider_mer.config import DATA_PLACEMENTS
from cider_mer.data.dataset import Split, row_chunks
from cider_mer.data.labels import is_regression
from cider_mer.data.mapped import is_mapped, release_pages
from cider_mer.errors import ConfigError
from cider_mer.models.interface import ModelInputs

RESIDENT_FRACTION = {"cuda": 0.5, "cpu": 0.125}


def _frame_mask(lengths: np.ndarray, steps: int) -> torch.Tensor:
    return torch.from_numpy((np.arange(steps)[None, :] < lengths[:, None]).astype(np.float32))


def available_memory(device: torch.device) -> int:
    """Bytes free for data on ``device`` now (CUDA: free device memory; CPU: MemAvailable)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def keeps_resident(nbytes: int, device: torch.device, placement: str = "auto") -> bool:
    """Whether a split whose large arrays take ``nbytes`` is held whole on ``device`` (see the module)."""
    if placement not in DATA_PLACEMENTS:
        raise ConfigError(f"data_on_device must be one of {DATA_PLACEMENTS}, got '{placement}'")
    if placement != "auto":
        return placement == "always"
    return nbytes <= RESIDENT_FRACTION.get(device.type, RESIDENT_FRACTION["cuda"]) * available_memory(device)


class HostRows:
    """Rows of an (N, ...) float32 host array (in RAM or memory-mapped), gathered batch by batch.

    ``rows`` maps this view's samples to the array's rows (a subset); None is all of them.
    """

    def __init__(self, array: np.ndarray, device: torch.device, rows: Optional[np.ndarray] = None):
        self.array, self.device, self.rows = array, torch.device(device), rows

    def gather(self, idx: np.ndarray) -> torch.Tensor:
        """(B, ...) tensor on the device of samples ``idx`` (in that order)."""
        rows = idx if self.rows is None else self.rows[idx]
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        if len(ordered) and (ordered[0] < 0 or ordered[-1] >= len(self.array)):
            raise IndexError(f"rows {ordered[0]}..{ordered[-1]} outside an array of {len(self.array)}")
        if self.device.type == "cuda":  # into pinned memory, sent without waiting
            host = torch.empty((len(rows), *self.array.shape[1:]), dtype=torch.float32, pin_memory=True)
            np.take(self.array, ordered, axis=0, out=host.numpy(), mode="clip")  # bounds checked above
            out = host.to(self.device, non_blocking=True)
        else:
            out = torch.from_numpy(np.ascontiguousarray(self.array[ordered], dtype=np.float32))
        release_pages(self.array, ordered)
        if not np.array_equal(order, np.arange(len(order))):
            inverse = np.empty_like(order)
            inverse[order] = np.arange(len(order))
            out = out.index_select(0, torch.from_numpy(inverse).to(self.device))
        return out

    def select(self, idx: np.ndarray) -> "HostRows":
        return HostRows(self.array, self.device, idx if self.rows is None else self.rows[idx])


Frames = Union[torch.Tensor, HostRows]


def _on_device(array: np.ndarray, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A tensor of ``array`` on ``device``. A memory-mapped array is copied over in chunks of about
    64 MiB (its pages released after each), so no second host copy of the split is made."""
    if not is_mapped(array):
        return torch.as_tensor(array).to(device=device, dtype=dtype)
    out = torch.empty(array.shape, dtype=dtype, device=device)
    step = row_chunks(len(array), array[0].nbytes if len(array) else 1).step
    for start in range(0, len(array), step):
        stop = min(start + step, len(array))
        out[start:stop] = torch.from_numpy(np.array(array[start:stop])).to(device=device, dtype=dtype)
        release_pages(array, np.arange(start, stop))
    return out


@dataclass
class DeviceSplit:
    """One split for a device: N samples of token ids, masks, frames and labels.

    ``audio``, ``vision`` and ``text_features`` are tensors on the device (resident) or
    :class:`HostRows` gathered per batch (streamed); :meth:`inputs` and :meth:`subset` treat both alike.
    """

    name: str
    text_ids: torch.Tensor  # (N, L) long
    text_mask: torch.Tensor  # (N, L) float
    text_segment: torch.Tensor  # (N, L) long
    audio: Frames  # (N, T_a, d_a)
    audio_mask: torch.Tensor  # (N, T_a)
    vision: Frames  # (N, T_v, d_v)
    vision_mask: torch.Tensor  # (N, T_v)
    labels: torch.Tensor  # (N,) long class ids for the run's task; float scores for regression
    text_features: Optional[Frames] = None  # (N, L, D_t) frozen-encoder states of the complete text

    @classmethod
    def from_split(cls, split: Split, task: str, device: torch.device | str,
                   text_features: Optional[np.ndarray] = None, placement: str = "auto") -> "DeviceSplit":
        """The split on ``device``; ``placement`` (auto/always/never) decides whether the large
        arrays are resident or streamed (see the module docstring)."""
        device = torch.device(device)
        large = [split.audio, split.vision] + ([text_features] if text_features is not None else [])
        resident = keeps_resident(sum(a.nbytes for a in large), device, placement)
        frames = (lambda a: _on_device(a, device, torch.float32)) if resident else (lambda a: HostRows(a, device))
        t = lambda a, dtype=None: torch.as_tensor(a, dtype=dtype).to(device)  # noqa: E731
        return cls(
            name=split.name,
            text_ids=t(split.text_ids, torch.long),
            text_mask=t(split.text_mask, torch.float32),
            text_segment=t(split.text_segment, torch.long),
            audio=frames(split.audio),
            audio_mask=_frame_mask(split.audio_lengths, split.audio.shape[1]).to(device),
            vision=frames(split.vision),
            vision_mask=_frame_mask(split.vision_lengths, split.vision.shape[1]).to(device),
            labels=t(split.labels(task), torch.float32 if is_regression(task) else torch.long),
            text_features=None if text_features is None else frames(text_features),
        )

    @property
    def n(self) -> int:
        return int(self.text_ids.shape[0])

    @property
    def device(self) -> torch.device:
        return self.text_ids.device

    @property
    def resident(self) -> bool:
        """Whether the large arrays are on the device (else gathered per batch)."""
        return not isinstance(self.audio, HostRows)

    def inputs(self, idx: Optional[torch.Tensor] = None) -> ModelInputs:
        """ModelInputs of the samples at ``idx`` (all samples when None)."""
        if idx is None:
            idx = torch.arange(self.n, device=self.device)
        host_idx = None if self.resident else idx.cpu().numpy()

        def pick(a):
            if a is None:
                return None
            return a.gather(host_idx) if isinstance(a, HostRows) else a.index_select(0, idx)
        return ModelInputs(
            text_ids=pick(self.text_ids), text_mask=pick(self.text_mask), text_segment=pick(self.text_segment),
            audio=pick(self.audio), audio_mask=pick(self.audio_mask), vision=pick(self.vision),
            vision_mask=pick(self.vision_mask), text_features=pick(self.text_features),
        )

    def subset(self, idx: torch.Tensor) -> "DeviceSplit":
        """The samples at ``idx`` as a new split (tensors gathered on the same device; streamed
        arrays keep streaming from a row subset)."""
        host_idx = None if self.resident else idx.cpu().numpy()

        def pick(a):
            if a is None:
                return None
            return a.select(host_idx) if isinstance(a, HostRows) else a.index_select(0, idx)
        return DeviceSplit(self.name, *(pick(getattr(self, f.name)) for f in fields(self) if f.name != "name"))

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
