"""WSAM, word-level self-aligned attention: aligns a long audio/vision sequence to the words.

The projected text is the query and the projected frames are key and value (one head), so the
output has one step per text token. Only real *words* query: the rows of [CLS] (position 0),
[SEP] (position length-1) and padding get zero attention weights, so their output is the output
projection's bias alone. Padding frames are never attended.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from cider_mer.models.layers.pooling import masked_softmax


def word_positions(text_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) float/bool text mask -> (B, L) bool, True at real words (not [CLS], [SEP], padding)."""
    valid = text_mask > 0
    steps = torch.arange(valid.shape[1], device=valid.device)
    lengths = valid.sum(dim=1, keepdim=True)
    return valid & (steps > 0) & (steps < lengths - 1)


class WordAlignedAttention(nn.Module):
    """Single-head attention from text queries (B, L, E) to frames (B, T, E) -> (B, L, E)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.xavier_uniform_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(
        self, text: torch.Tensor, frames: torch.Tensor, text_mask: torch.Tensor, frame_valid: torch.Tensor
    ) -> torch.Tensor:
        """text (B, L, E), frames (B, T, E), text_mask (B, L), frame_valid (B, T) bool -> (B, L, E)."""
        e = self.dim
        query = F.linear(text, self.in_proj_weight[:e], self.in_proj_bias[:e]) * e**-0.5
        key, value = F.linear(frames, self.in_proj_weight[e:], self.in_proj_bias[e:]).chunk(2, dim=-1)
        scores = query @ key.transpose(1, 2)  # (B, L, T)
        allowed = word_positions(text_mask)[:, :, None] & frame_valid[:, None, :]
        return self.out_proj(masked_softmax(scores, allowed) @ value)
