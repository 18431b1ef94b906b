"""A trained bias branch combined with the main model during training (Clark et al., 2019).

The bias expert is Linear(K, C) over the bag of the input text's K bias-vocabulary word-pieces
(:func:`~cider_mer.debias.bias_model.bag_of_bias_words`): it reads token ids only, so it works
with every registered model. With ``b`` its log-softmax, ``m`` the main head's log-probabilities
(B, C) and ``y`` the label, the training loss of a pass is

- product of experts (``poe``): ``NLL(log_softmax(m + sg(b)), y) + CE(b, y)``;
- learned-mixin (``learned_mixin``): ``NLL(log_softmax(m + g(z) sg(b)), y) + CE(b, y)
  [+ w_H * H(softmax(g(z) sg(b)))]`` with ``g(z) = softplus(w . z + c)`` on the joint
  representation z (B, J) and the optional entropy penalty ``w_H`` (``debias_entropy_weight``);

``sg`` is stop-gradient: the bias expert learns from its own CE only. At test the branch is
dropped and the training log-prior is added back: ``log p(y|x) = log_softmax(m + log pi_train)``
(the bias expert absorbed the label prior during training, so the main expert alone is
prior-free). The branch lives on the model as ``model.bias_branch`` (its weights and the prior
travel in the checkpoint); there is no tau to choose.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cider_mer.debias.bias_model import bag_of_bias_words

BRANCH_ATTRIBUTE = "bias_branch"
MODES = ("poe", "learned_mixin")


class BiasBranch(nn.Module):
    """Bias expert (and learned-mixin gate) trained beside a model; dropped at test."""

    def __init__(self, vocab_ids: torch.Tensor, log_prior: torch.Tensor, joint_dim: int, mode: str,
                 entropy_weight: float = 0.0):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got '{mode}'")
        self.mode, self.entropy_weight = mode, float(entropy_weight)
        self.register_buffer("vocab_ids", torch.as_tensor(vocab_ids, dtype=torch.long).clone())
        self.register_buffer("log_prior", torch.as_tensor(log_prior, dtype=torch.float32).clone())  # (C,)
        self.expert = nn.Linear(int(self.vocab_ids.numel()), int(self.log_prior.numel()))
        self.gate = nn.Linear(joint_dim, 1) if mode == "learned_mixin" else None

    def bias_logits(self, text_ids: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) ids and mask -> (B, C) bias-expert logits."""
        return self.expert(bag_of_bias_words(text_ids, text_mask, self.vocab_ids))

    def training_loss(self, main_log_probs: torch.Tensor, joint: torch.Tensor, text_ids: torch.Tensor,
                      text_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The combined task loss of one pass plus the bias expert's own CE (see the module docstring)."""
        logits = self.bias_logits(text_ids, text_mask)
        own = F.cross_entropy(logits, labels)
        bias = torch.log_softmax(logits, dim=-1).detach()
        gate = None if self.gate is None else F.softplus(self.gate(joint.float()))  # (B, 1)
        loss = F.nll_loss(combine(main_log_probs.float(), bias, gate), labels) + own
        if gate is not None and self.entropy_weight > 0:
            scaled = torch.log_softmax(gate * bias, dim=-1)
            loss = loss + self.entropy_weight * -(scaled.exp() * scaled).sum(dim=-1).mean()
        return loss


def combine(main_log_probs: torch.Tensor, bias_log_probs: torch.Tensor,
            gate: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B, C) training-time log-probabilities: log_softmax(m + b) (PoE) or log_softmax(m + g b) (learned-mixin)."""
    return torch.log_softmax(main_log_probs + (bias_log_probs if gate is None else gate * bias_log_probs), dim=-1)


def inference_log_probs(main_log_probs: np.ndarray, log_prior: np.ndarray) -> np.ndarray:
    """(N, C) test-time log-probabilities: the branch dropped, the training log-prior added back."""
    z = main_log_probs + np.asarray(log_prior, dtype=main_log_probs.dtype)[None, :]
    return z - np.logaddexp.reduce(z, axis=1, keepdims=True)



def bias_branch_of(model: nn.Module) -> Optional[BiasBranch]:
    """The model's trained bias branch, or None."""
    branch = getattr(model, BRANCH_ATTRIBUTE, None)
    return branch if isinstance(branch, BiasBranch) else None


def attach_bias_branch(model: nn.Module, branch: BiasBranch) -> None:
    """Register ``branch`` on ``model`` (so the optimizer, checkpoints and ``.to`` see it)."""
    model.add_module(BRANCH_ATTRIBUTE, branch)


def training_log_prior(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(C,) log of the training class frequencies (a class without samples gets log(1e-8))."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    return np.log(np.maximum(counts / max(counts.sum(), 1.0), 1e-8)).astype(np.float32)
