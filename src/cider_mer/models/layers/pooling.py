"""Masked softmax and attention pooling over time (the authors' ``NaiveAttention``, masked)."""

from __future__ import annotations

import torch
from torch import nn


def masked_softmax(scores: torch.Tensor, allowed: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax of ``scores`` over the ``allowed`` entries along ``dim``; other entries get 0.

    ``allowed`` is a bool tensor broadcastable to ``scores``. A slice with no allowed entry gets
    all-zero weights (never NaN), and so do its gradients.
    """
    filled = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    return torch.softmax(filled, dim=dim) * allowed.to(scores.dtype)


class AttentionPooling(nn.Module):
    """score_t = w^T tanh(W h_t + b) + c; g = sum_t softmax_t(score) h_t over valid steps only."""

    def __init__(self, dim: int):
        super().__init__()
        self.hidden = nn.Linear(dim, dim)
        self.score = nn.Linear(dim, 1)

    def forward(self, states: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """states (B, T, E), valid (B, T) bool -> (B, E); zeros for a sample with no valid step."""
        scores = self.score(torch.tanh(self.hidden(states))).squeeze(-1)  # (B, T)
        weights = masked_softmax(scores, valid)
        return torch.einsum("bt,bte->be", weights, states)
