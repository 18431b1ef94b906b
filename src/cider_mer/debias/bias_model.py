"""The bias-only view of a sample: the bag of its bias-vocabulary word-pieces, and a model on it.

The bias vocabulary is MACI's (:func:`cider_mer.maci.counterfactual.build_bias_vocabulary`,
training split only). :func:`bag_of_bias_words` counts its K word-pieces in a text; it is
model-agnostic (it reads token ids only), so every registered model can use it.

:class:`BiasOnlyModel` is a seeded multinomial logistic regression (scikit-learn) on those counts,
fitted on the TRAINING split. Its right/wrong answers split the validation samples into the
bias-aligned and bias-conflicting groups of :mod:`cider_mer.debias.selection`. The trained bias
branch of :mod:`cider_mer.debias.poe` reads the same bag.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cider_mer.data.dataset import Split
from cider_mer.data.labels import num_classes

ABSENT_CLASS_LOGIT = -1e4  # a class without training samples is never predicted


def bag_of_bias_words(text_ids: torch.Tensor, text_mask: torch.Tensor, vocab_ids: torch.Tensor) -> torch.Tensor:
    """(B, L) ids and padding mask, (K,) vocabulary ids -> (B, K) float counts of each bias word-piece.

    Missing tokens are ``[UNK]`` and the vocabulary holds no special token, so a dropped word is
    not counted.
    """
    hits = (text_ids.unsqueeze(-1) == vocab_ids.to(text_ids.device)) & text_mask.bool().unsqueeze(-1)
    return hits.sum(dim=1).float()


@dataclass
class BiasOnlyModel:
    """Logistic regression on the bag of bias word-pieces: scores = counts @ coef.T + intercept."""

    token_ids: np.ndarray  # (K,) int64, the bias vocabulary
    coef: np.ndarray  # (C, K)
    intercept: np.ndarray  # (C,)

    def logits(self, text_ids: np.ndarray | torch.Tensor, text_mask: np.ndarray | torch.Tensor) -> np.ndarray:
        """(N, L) ids and mask -> (N, C) scores (argmax = the bias-only prediction)."""
        counts = bag_of_bias_words(torch.as_tensor(text_ids).long(), torch.as_tensor(text_mask),
                                   torch.as_tensor(self.token_ids)).cpu().numpy().astype(np.float64)
        return counts @ self.coef.T + self.intercept[None, :]

    def predict(self, text_ids: np.ndarray | torch.Tensor, text_mask: np.ndarray | torch.Tensor) -> np.ndarray:
        """(N,) predicted class ids."""
        return self.logits(text_ids, text_mask).argmax(axis=1)

    def to_dict(self) -> dict:
        return {"token_ids": self.token_ids.tolist(), "coef": self.coef.tolist(), "intercept": self.intercept.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "BiasOnlyModel":
        return cls(np.asarray(d["token_ids"], dtype=np.int64), np.asarray(d["coef"], dtype=np.float64),
                   np.asarray(d["intercept"], dtype=np.float64))


def fit_bias_model(train: Split, token_ids: np.ndarray, task: str, seed: int = 0) -> BiasOnlyModel:
    """Fit the bias-only model on the TRAINING split's complete text (L2, lbfgs, seeded)."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    if train.name != "train":
        raise ValueError(f"the bias-only model is fitted on the training split only, got '{train.name}'")
    c = num_classes(task)
    labels = train.labels(task)
    token_ids = np.asarray(token_ids, dtype=np.int64)
    counts = bag_of_bias_words(torch.as_tensor(train.text_ids).long(), torch.as_tensor(train.text_mask),
                               torch.as_tensor(token_ids)).numpy()
    coef = np.zeros((c, token_ids.size))
    intercept = np.full(c, ABSENT_CLASS_LOGIT)
    present = np.unique(labels)
    if present.size == 1 or token_ids.size == 0:  # nothing to learn: the majority class
        intercept[np.bincount(labels, minlength=c).argmax()] = 0.0
        return BiasOnlyModel(token_ids, coef, intercept)
    clf = LogisticRegression(max_iter=2000, random_state=seed)
    with threadpool_limits(limits=1):  # tiny problem; BLAS threads only contend
        clf.fit(counts, labels)
    if present.size == 2:  # scikit-learn's binary form: one row for the second class
        coef[present[1]], intercept[present] = clf.coef_[0], (0.0, float(clf.intercept_[0]))
    else:
        coef[present], intercept[present] = clf.coef_, clf.intercept_
    return BiasOnlyModel(token_ids, coef, intercept)
