"""Batched inference over a device split, and MACI's inference glue in one place.

:func:`predict` runs a model over a split (optionally with missing positions applied and a second,
counterfactual pass). :class:`Debiaser` is everything MACI adds at inference: the counterfactual
text of the incomplete input, tau chosen on validation predictions, and the debiased scores; it
carries the run's autocast setting, so selection and testing always run at the same precision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from cider_mer.batches import DeviceSplit, length_sorted_batches
from cider_mer.errors import CiderError
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
    """MACI at inference: prediction = log p(y|x) - tau * log p(y|x_cf), tau chosen on validation.

    ``bias_ids`` (K,) are the bias vocabulary's token ids on the model's device; ``None`` means no
    counterfactual text (tau is then always 0).
    """

    task: str
    bias_ids: Optional[torch.Tensor]
    batch_size: int = 256
    autocast_dtype: Optional[torch.dtype] = None

    @property
    def active(self) -> bool:
        return self.bias_ids is not None

    def counterfactual(self, inputs: ModelInputs) -> ModelInputs:
        """The same batch with the bias words kept and every other real token masked (re-encoded)."""
        return inputs.replace(text_ids=counterfactual_ids(inputs.text_ids, inputs.text_mask, self.bias_ids),
                              text_features=None)

    def predict(self, model: MerModel, split: DeviceSplit, keep: Optional[KeepMasks] = None,
                return_joint: bool = False) -> Predictions:
        """Factual (and, when active, counterfactual) predictions at the run's precision."""
        return predict(model, split, keep, self.counterfactual if self.active else None, self.batch_size,
                       return_joint, self.autocast_dtype)

    def choose_tau(self, valid: Predictions, labels: np.ndarray) -> float:
        """tau on validation predictions by the task's selection metric (0 when inactive)."""
        if not self.active:
            return 0.0
        tau, _ = select_tau(self.task, valid.log_probs, valid.cf_log_probs, labels)
        return tau

    def tune(self, model: MerModel, valid: DeviceSplit, keep: Optional[KeepMasks] = None) -> tuple[float, Predictions]:
        """Predict on the validation split (with ``keep`` applied) and choose tau there."""
        pred = self.predict(model, valid, keep)
        return self.choose_tau(pred, valid.labels.cpu().numpy()), pred

    @staticmethod
    def scores(pred: Predictions, tau: float) -> np.ndarray:
        """(N, C) debiased scores."""
        return debias(pred.log_probs, pred.cf_log_probs, tau)
