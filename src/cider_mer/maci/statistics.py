"""MCM statistics from the TRAINING split only: class priors and class-mean features.

- priors: (C,) training class frequencies of the task's labels (C from the split's labels, so
  ``emotion`` gets the dataset's classes);
- class means: (C, D_t + d_a + d_v), for each class the mean over its training samples of
  [mean frozen pre-trained encoder state over the sample's valid tokens | mean audio frame over
  valid frames | mean vision frame over valid frames]. A class without training samples gets
  zeros (its prior is 0 too). A sample without valid frames contributes zeros for that modality.

At evaluation the MCM head uses uniform priors and the average of these training class means,
so no label of the evaluated split is ever read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from cider_mer.data.dataset import Split
from cider_mer.data.labels import class_priors


@dataclass
class ClassStatistics:
    priors: np.ndarray  # (C,)
    class_means: np.ndarray  # (C, D)


def _masked_mean(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(N, T, d) values and (N, T) 0/1 mask -> (N, d) mean over valid steps (0 when none)."""
    counts = mask.sum(axis=1, keepdims=True)
    return (x * mask[..., None]).sum(axis=1) / np.maximum(counts, 1.0)


def sample_features(split: Split, text_states: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """(N, D) per-sample feature vectors [text | audio | vision] used for the class means, computed
    ``chunk`` samples at a time (memory-mapped inputs are never held whole; rows are independent,
    so the result does not depend on ``chunk``)."""
    from cider_mer.data.mapped import release_pages

    tmask = split.text_mask.astype(np.float32)
    amask = (np.arange(split.audio.shape[1])[None] < split.audio_lengths[:, None]).astype(np.float32)
    vmask = (np.arange(split.vision.shape[1])[None] < split.vision_lengths[:, None]).astype(np.float32)
    parts = []
    for start in range(0, split.n, chunk):
        rows = slice(start, start + chunk)
        parts.append(np.concatenate([
            _masked_mean(text_states[rows], tmask[rows]),
            _masked_mean(split.audio[rows], amask[rows]),
            _masked_mean(split.vision[rows], vmask[rows]),
        ], axis=1).astype(np.float32))
        for arr in (text_states, split.audio, split.vision):
            release_pages(arr, np.arange(start, min(start + chunk, split.n)))
    return np.concatenate(parts, axis=0)


def compute_statistics(train: Split, task: str, text_states: np.ndarray) -> ClassStatistics:
    """Priors and class means of ``train`` (which must be the training split) for ``task``."""
    if train.name != "train":
        raise ValueError(f"MCM statistics come from the training split only, got split '{train.name}'")
    c = train.num_classes(task)
    labels = train.labels(task)
    feats = sample_features(train, text_states)
    means = np.zeros((c, feats.shape[1]), dtype=np.float64)
    for k in range(c):
        sel = labels == k
        if sel.any():
            means[k] = feats[sel].mean(axis=0)
    return ClassStatistics(class_priors(labels, c).astype(np.float32), means.astype(np.float32))


def cached_statistics(data_path: str | Path, train: Split, task: str, encoder_tag: str,
                      text_states_fn, cache_dir: Optional[Path] = None) -> ClassStatistics:
    """Statistics cached next to the dataset, keyed by its content, the encoder and the task.

    ``text_states_fn()`` returns the (N, L, D_t) frozen states of the training split when needed.
    """
    from cider_mer.text.cache import cache_dir_for, dataset_key, read_cache_entry, write_cache_entry

    directory = cache_dir or cache_dir_for(data_path)
    path = directory / f"mcm-{dataset_key(data_path)}-{encoder_tag}-{task}.npz"
    c = train.num_classes(task)

    def load(p: Path) -> ClassStatistics:
        with np.load(p, allow_pickle=False) as z:
            stats = ClassStatistics(z["priors"], z["class_means"])
        if stats.priors.shape != (c,) or stats.class_means.ndim != 2 or stats.class_means.shape[0] != c:
            raise ValueError(f"shapes {stats.priors.shape} and {stats.class_means.shape} do not fit {c} classes")
        return stats

    stats = read_cache_entry(path, load)
    if stats is None:
        stats = compute_statistics(train, task, text_states_fn())
        write_cache_entry(path, lambda f: np.savez(f, priors=stats.priors, class_means=stats.class_means))
    return stats
