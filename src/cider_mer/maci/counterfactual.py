"""MACI's fine-grained counterfactual text (SPEC §5), from the TRAINING split only.

Biased vocabulary: count every word-piece (special tokens excluded) per class on the training
split and turn counts into per-class *relative* frequencies (count / all word-pieces of that
class), so class imbalance does not masquerade as bias. The coefficient of variation
(population std / mean) of those frequencies marks a word as biased when >= 0.1. For the
``binary`` task the CV is taken over the negative and positive classes (neutral is tiny and
noisy), as the authors do; for every other class task (``seven``, ``sims_binary``, ``emotion`` with
its C classes) over every class that has word-pieces. Of the biased
words, the ``top_k`` = 100 most frequent overall (ties: lower id first) are kept.

Counterfactual text: special tokens and biased word-pieces stay, every other real token becomes
``[MASK]`` (the paper) or, with ``fill="unk"``, ``[UNK]`` (what training missingness uses, so the
counterfactual is an input the model has seen); padding, attention mask and segment ids are
unchanged. Applied to the *incomplete* text, missing tokens stay ``[UNK]``.

Given bias words: where the confound is known (``TrainConfig.bias_words``, e.g. topic words), the
vocabulary is their word-pieces instead of the statistical rule above, which also keeps genuine
sentiment words (a frequency ratio of 1.22 between classes already passes CV >= 0.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cider_mer.data.dataset import Split
from cider_mer.text.encoder import MASK_ID, SPECIAL_IDS, UNK_ID

CF_FILL_IDS = {"mask": MASK_ID, "unk": UNK_ID}


@dataclass
class BiasVocabulary:
    token_ids: np.ndarray  # (K,) int64, most frequent first
    class_counts: np.ndarray  # (K, C) raw counts per class
    class_frequencies: np.ndarray  # (K, C) relative frequencies per class
    cv: np.ndarray  # (K,)
    task: str

    def to_dict(self) -> dict:
        return {"task": self.task, "token_ids": self.token_ids.tolist(), "class_counts": self.class_counts.tolist(),
                "class_frequencies": self.class_frequencies.tolist(), "cv": self.cv.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "BiasVocabulary":
        return cls(np.asarray(d["token_ids"], dtype=np.int64), np.asarray(d["class_counts"], dtype=np.int64),
                   np.asarray(d["class_frequencies"], dtype=np.float64), np.asarray(d["cv"], dtype=np.float64),
                   d["task"])


def _class_statistics(train: Split, task: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Per word-piece id of the training text: (V, C) counts, (V, C) relative frequencies, (V,) CV,
    and whether the CV has at least two classes to compare."""
    if train.name != "train":
        raise ValueError(f"the counterfactual vocabulary comes from the training split only, got '{train.name}'")
    c = train.num_classes(task)
    labels = train.labels(task)
    ids = train.text_ids
    valid = train.text_mask.astype(bool) & ~np.isin(ids, SPECIAL_IDS)
    tok = ids[valid]
    cls = np.broadcast_to(labels[:, None], ids.shape)[valid]
    vocab = int(ids.max()) + 1 if ids.size else 1
    counts = np.zeros((vocab, c), dtype=np.int64)
    np.add.at(counts, (tok, cls), 1)
    per_class_total = counts.sum(axis=0).astype(np.float64)
    cv_classes = [0, 2] if task == "binary" else [k for k in range(c) if per_class_total[k] > 0]
    cv_classes = [k for k in cv_classes if per_class_total[k] > 0]
    freq = counts / np.maximum(per_class_total, 1.0)[None, :]
    f = freq[:, cv_classes]
    mean = f.mean(axis=1)
    cv = np.where(mean > 0, f.std(axis=1) / np.where(mean > 0, mean, 1.0), 0.0)
    return counts, freq, cv, len(cv_classes) >= 2


def build_bias_vocabulary(train: Split, task: str, top_k: int = 100, cv_threshold: float = 0.1) -> BiasVocabulary:
    """Biased word-pieces of the training split (see the module docstring)."""
    counts, freq, cv, comparable = _class_statistics(train, task)
    total = counts.sum(axis=1)
    candidates = np.flatnonzero((total > 0) & (cv >= cv_threshold) & comparable)
    order = candidates[np.lexsort((candidates, -total[candidates]))][:top_k]
    return BiasVocabulary(order.astype(np.int64), counts[order], freq[order], cv[order], task)


def word_piece_ids(words: list[str], tokenizer) -> np.ndarray:
    """(K,) unique word-piece ids of ``words`` (specials excluded), in order of first appearance.

    Raises ``ValueError`` naming a word that has no word-piece but ``[UNK]``."""
    ids: dict[int, None] = {}  # insertion-ordered set
    for word in words:
        pieces = [i for i in tokenizer(word, add_special_tokens=False)["input_ids"] if i not in SPECIAL_IDS]
        if not pieces:
            raise ValueError(f"bias word '{word}' has no word-piece in the text encoder's vocabulary (only [UNK])")
        ids.update(dict.fromkeys(pieces))
    return np.asarray(list(ids), dtype=np.int64)


def given_bias_vocabulary(train: Split, task: str, piece_ids: np.ndarray) -> BiasVocabulary:
    """The bias vocabulary of given word-pieces (a known confound), with their training-split statistics;
    most frequent first (ties: lower id first), pieces absent from the training text included."""
    counts, freq, cv, _ = _class_statistics(train, task)
    piece_ids = np.asarray(piece_ids, dtype=np.int64)
    seen = piece_ids < counts.shape[0]
    c = counts.shape[1]
    k_counts = np.zeros((piece_ids.size, c), dtype=np.int64)
    k_freq, k_cv = np.zeros((piece_ids.size, c)), np.zeros(piece_ids.size)
    k_counts[seen], k_freq[seen], k_cv[seen] = counts[piece_ids[seen]], freq[piece_ids[seen]], cv[piece_ids[seen]]
    order = np.lexsort((piece_ids, -k_counts.sum(axis=1)))
    return BiasVocabulary(piece_ids[order], k_counts[order], k_freq[order], k_cv[order], task)


def counterfactual_ids(text_ids: torch.Tensor, text_mask: torch.Tensor, vocab_ids: torch.Tensor,
                       fill: str = "mask") -> torch.Tensor:
    """(B, L) ids -> counterfactual ids: specials and biased ids kept, other real tokens ``[MASK]``
    (``fill="mask"``, the paper) or ``[UNK]`` (``fill="unk"``)."""
    if fill not in CF_FILL_IDS:
        raise ValueError(f"fill must be one of {tuple(CF_FILL_IDS)}, got '{fill}'")
    keep = torch.isin(text_ids, vocab_ids) | torch.isin(text_ids, torch.tensor(SPECIAL_IDS, device=text_ids.device))
    real = text_mask.bool()
    return torch.where(real & ~keep, torch.full_like(text_ids, CF_FILL_IDS[fill]), text_ids)
