"""Batched inference over a device split: factual and counterfactual log-probabilities."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from cider_mer.maci.counterfactual import counterfactual_ids
from cider_mer.missing import KeepMasks, apply_missing
from cider_mer.models.interface import MerModel
from cider_mer.training.batches import DeviceSplit, length_sorted_batches


@dataclass
class Predictions:
    log_probs: np.ndarray  # (N, C) factual
    cf_log_probs: Optional[np.ndarray]  # (N, C) with counterfactual text, when asked
    joint: Optional[np.ndarray] = None  # (N, J), when asked


@torch.no_grad()
def predict(model: MerModel, split: DeviceSplit, keep: Optional[KeepMasks] = None,
            cf_vocab: Optional[torch.Tensor] = None, batch_size: int = 256, return_joint: bool = False,
            autocast_dtype: Optional[torch.dtype] = None) -> Predictions:
    """Run ``model`` (in eval mode) over ``split`` with missing positions ``keep`` applied.

    With ``cf_vocab`` (biased token ids), a second pass feeds the counterfactual of the
    *incomplete* text with the same (incomplete) audio and vision.
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
            cf_out = None
            if cf_vocab is not None:
                cf_inputs = inputs.replace(
                    text_ids=counterfactual_ids(inputs.text_ids, inputs.text_mask, cf_vocab), text_features=None)
                cf_out = model(cf_inputs)
        lp = out.log_probs.float().cpu().numpy()
        if log_probs is None:
            log_probs = np.zeros((n, lp.shape[1]), dtype=np.float32)
            cf = np.zeros_like(log_probs) if cf_vocab is not None else None
            joint = np.zeros((n, out.joint.shape[1]), dtype=np.float32) if return_joint else None
        i = idx.cpu().numpy()
        log_probs[i] = lp
        if cf_out is not None:
            cf[i] = cf_out.log_probs.float().cpu().numpy()
        if return_joint:
            joint[i] = out.joint.float().cpu().numpy()
    model.train(was_training)
    return Predictions(log_probs, cf, joint)
