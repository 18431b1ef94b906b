"""Batched inference over a device split, and MACI's inference glue in one place.

:func:`predict` runs a model over a split (optionally with missing positions applied and a second,
counterfactual pass). :class:`Debiaser` is everything debiasing adds at inference: the counterfactual
input of the incomplete one, tau chosen on validation predictions by the run's criterion (plain or
group-balanced, :mod:`cider_mer.debias.selection`), the debiased scores, and for a run trained with
a bias branch the training log-prior added back; it carries the run's autocast setting, so
selection and testing always run at the same precision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from cider_mer.batches import DeviceSplit, length_sorted_batches
from cider_mer.errors import CiderError
from cider_mer.debias.bias_model import BiasOnlyModel
from cider_mer.debias.poe import inference_log_probs
from cider_mer.debias.selection import SelectionResult, select_value
from cider_mer.maci.counterfactual import counterfactual_ids
from cider_mer.maci.tau import debias, select_tau
from cider_mer.missing import apply_missing
from cider_mer.models.interface import KeepMasks, MerModel, ModelInputs

InputsMap = Callable[[ModelInputs], ModelInputs]


class NonFiniteOutputError(CiderError):
    """The model's outputs hold NaN or inf: its weights are broken; no metric is computed from them."""


@dataclass
class Predictions:
    """Model outputs over a split, in the split's sample order."""

    log_probs: np.ndarray  # (N, C) factual log-probabilities ((N, 1) scores for regression)
    cf_log_probs: Optional[np.ndarray]  # (N, C) with counterfactual text, when asked
    joint: Optional[np.ndarray] = None  # (N, J), when asked
    bias_pred: Optional[np.ndarray] = None  # (N,) the bias-only model's class (complete text), when the run has one


@torch.no_grad()
def predict(model: MerModel, split: DeviceSplit, keep: Optional[KeepMasks] = None,
            counterfactual: Optional[InputsMap] = None, batch_size: int = 256, return_joint: bool = False,
            autocast_dtype: Optional[torch.dtype] = None) -> Predictions:
    """Run ``model`` (in eval mode) over ``split`` with missing positions ``keep`` applied.

    With ``counterfactual`` (a map of a batch's *incomplete* inputs to their counterfactual), a
    second pass gives ``cf_log_probs``. Raises :class:`NonFiniteOutputError` when an output is NaN or inf.
    """
    was_training = model.training
    model.eval()
    n = split.n
    log_probs: Optional[np.ndarray] = None
    cf: Optional[np.ndarray] = None
    joint: Optional[np.ndarray] = None
    device = split.device
    for idx in length_sorted_batches(split, batch_size):
        inputs = split.inputs(idx)
        if device.type == "cpu":  # length-sorted batches: cut padding (exact; GPUs skip the host sync)
            inputs = inputs.trim_text()
        if keep is not None:
            batch_keep = keep.index(idx.to(keep.text.device)).to(device)
            inputs = apply_missing(inputs, batch_keep.trim_text(inputs.text_ids.shape[1]))
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            out = model(inputs)
            cf_out = model(counterfactual(inputs)) if counterfactual is not None else None
        lp = out.log_probs.float().cpu().numpy()
        cf_lp = cf_out.log_probs.float().cpu().numpy() if cf_out is not None else None
        for name, values in (("outputs", lp), ("counterfactual outputs", cf_lp)):
            if values is not None and not np.isfinite(values).all():
                bad = int((~np.isfinite(values)).any(axis=1).sum())
                raise NonFiniteOutputError(
                    f"the model produced non-finite {name} (NaN or inf) for {bad} of {len(values)} samples of a "
                    "batch: its weights are broken (training diverged, or the checkpoint is corrupted)")
        if log_probs is None:
            log_probs = np.zeros((n, lp.shape[1]), dtype=np.float32)
            cf = np.zeros_like(log_probs) if counterfactual is not None else None
            joint = np.zeros((n, out.joint.shape[1]), dtype=np.float32) if return_joint else None
        i = idx.cpu().numpy()
        log_probs[i] = lp
        if cf_lp is not None:
            cf[i] = cf_lp
        if return_joint:
            joint[i] = out.joint.float().cpu().numpy()
    model.train(was_training)
    return Predictions(log_probs, cf, joint)


@dataclass
class Debiaser:
    """Debiasing at inference: scores = log p(y|x) - tau * (log p(y|x_cf) - centre), tau chosen on validation.

    ``bias_ids`` (K,) are the bias vocabulary's token ids on the model's device; ``None`` means no
    counterfactual text (tau is then always 0). The counterfactual keeps the bias words and fills
    the other tokens with ``cf_fill`` ([MASK] or [UNK]); ``cf_other_modalities="absent"`` also zeroes
    audio and vision in that pass (missing, as training drops frames). ``cf_centre`` (C,) is the mean
    counterfactual log-probability over the training inputs (None: not centred, the paper).
    ``log_prior`` (C,) is added back to the model's log-probabilities of a run trained with a bias
    branch. ``bias_model`` gives the validation groups of the ``selection`` criterion.
    """

    task: str
    bias_ids: Optional[torch.Tensor]
    batch_size: int = 256
    autocast_dtype: Optional[torch.dtype] = None
    cf_fill: str = "mask"
    cf_other_modalities: str = "keep"
    cf_centre: Optional[np.ndarray] = None
    log_prior: Optional[np.ndarray] = None
    bias_model: Optional[BiasOnlyModel] = None
    selection: str = "plain"
    selection_min_group: int = 20

    @property
    def active(self) -> bool:
        return self.bias_ids is not None

    def counterfactual(self, inputs: ModelInputs) -> ModelInputs:
        """The same batch with the bias words kept and every other real token filled (re-encoded);
        audio/vision zeroed when ``cf_other_modalities`` is ``absent``."""
        cf = inputs.replace(text_ids=counterfactual_ids(inputs.text_ids, inputs.text_mask, self.bias_ids, self.cf_fill),
                            text_features=None)
        if self.cf_other_modalities == "absent":
            cf = cf.replace(audio=torch.zeros_like(cf.audio), vision=torch.zeros_like(cf.vision))
        return cf

    def predict(self, model: MerModel, split: DeviceSplit, keep: Optional[KeepMasks] = None,
                return_joint: bool = False) -> Predictions:
        """Factual (and, when active, counterfactual) predictions at the run's precision, with the
        training log-prior added back and the bias-only predictions when the run has them."""
        pred = predict(model, split, keep, self.counterfactual if self.active else None, self.batch_size,
                       return_joint, self.autocast_dtype)
        if self.log_prior is not None:
            pred.log_probs = inference_log_probs(pred.log_probs, self.log_prior)
            if pred.cf_log_probs is not None:
                pred.cf_log_probs = inference_log_probs(pred.cf_log_probs, self.log_prior)
        if self.bias_model is not None:
            pred.bias_pred = self.bias_model.predict(split.text_ids, split.text_mask)
        return pred

    def select(self, scores: np.ndarray, pred: Predictions, labels: np.ndarray, warn: bool = True) -> SelectionResult:
        """The validation criterion of (N, C) ``scores`` (``pred`` carries the bias-only predictions)."""
        aligned = None if pred.bias_pred is None else pred.bias_pred == labels
        return select_value(self.task, scores, labels, aligned, self.selection, self.selection_min_group, warn)

    def choose_tau(self, valid: Predictions, labels: np.ndarray) -> float:
        """tau on validation predictions by the run's criterion (0 when inactive)."""
        if not self.active:
            return 0.0
        tau, _ = select_tau(self.task, valid.log_probs, valid.cf_log_probs, labels, centre=self.cf_centre,
                            criterion=lambda scores: self.select(scores, valid, labels, warn=False).value)
        return tau

    def tune(self, model: MerModel, valid: DeviceSplit, keep: Optional[KeepMasks] = None) -> tuple[float, Predictions]:
        """Predict on the validation split (with ``keep`` applied) and choose tau there."""
        pred = self.predict(model, valid, keep)
        return self.choose_tau(pred, valid.labels.cpu().numpy()), pred

    def scores(self, pred: Predictions, tau: float) -> np.ndarray:
        """(N, C) debiased scores."""
        return debias(pred.log_probs, pred.cf_log_probs, tau, self.cf_centre)

    def training_centre(self, model: MerModel, train: DeviceSplit) -> np.ndarray:
        """(C,) mean counterfactual log-probability over the complete TRAINING inputs (label-free)."""
        if not self.active:
            raise ValueError("the counterfactual centre needs counterfactual text (bias_ids)")
        plain = Debiaser(self.task, self.bias_ids, self.batch_size, self.autocast_dtype, self.cf_fill,
                         self.cf_other_modalities, log_prior=self.log_prior)
        return plain.predict(model, train).cf_log_probs.mean(axis=0)
