"""MCT, the multimodal composite transformer, and its attention MCA.

The fused sequence is the time-concatenation of three modality blocks [text; audio; vision]
(block sizes ``sizes``). MCA computes the logits A = QK^T once and derives seven attention
branches from them, each restricted to a set of modalities: ``tri`` (L, A, V), ``la``, ``lv``,
``av``, ``l``, ``a``, ``v``. In a branch, a query of a member modality attends to the valid keys of
the member modalities only; each branch has its own output projection. Every position then
summarises the four branches that contain its modality (Linear(4E, E) per modality) and a final
Linear(E, E) mixes the result.

Rather than materialising seven (B, H, S, S) softmaxes, each key block's exponentials are
computed once with their own row maximum, and a branch's softmax is the rescaled sum of its
member blocks (the log-sum-exp merge of flash attention). This is exact up to rounding and
takes one (B, H, S, S) working set instead of seven, which matters for long unaligned sequences.

Masks are bool, True = valid position. Padding keys are excluded from every branch; a query whose
branch has no valid key gets a zero vector.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from cider_mer.models.layers.pooling import masked_softmax
from cider_mer.models.layers.positional import SinusoidalPositions

MODALITIES = ("l", "a", "v")
# Branch name -> indices (into MODALITIES) of the modalities it attends over.
BRANCHES: dict[str, tuple[int, ...]] = {
    "tri": (0, 1, 2),
    "la": (0, 1),
    "lv": (0, 2),
    "av": (1, 2),
    "l": (0,),
    "a": (1,),
    "v": (2,),
}
# Modality -> the four branches its positions summarise, in concatenation order.
SUMMARY_BRANCHES: dict[str, tuple[str, ...]] = {
    "l": ("tri", "la", "lv", "l"),
    "a": ("tri", "la", "av", "a"),
    "v": ("tri", "lv", "av", "v"),
}


def _blocks(sizes: Sequence[int]) -> list[slice]:
    """Time slices of the modality blocks of a fused sequence with block sizes ``sizes``."""
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [slice(start, start + size) for start, size in zip(starts, sizes)]


def _xavier_linear(dim_in: int, dim_out: int) -> nn.Linear:
    layer = nn.Linear(dim_in, dim_out)
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _merge_blocks(
    members: Sequence[int],
    rows: slice,
    maxima: Sequence[torch.Tensor],
    sums: Sequence[torch.Tensor],
    values: Sequence[torch.Tensor],
) -> torch.Tensor:
    """Softmax attention over the union of the ``members`` key blocks for query ``rows``: (B, H, n, E/H).

    Each block's terms are rescaled to the common maximum. The normaliser is >= 1 whenever some
    key is allowed (the maximal key contributes exp(0) = 1) and exactly 0 otherwise, so clamping
    it at 1 changes nothing but turns the empty case 0/0 into a zero vector.
    """
    top = torch.stack([maxima[m][:, :, rows] for m in members]).amax(dim=0)
    total = torch.zeros_like(top)
    mixed = torch.zeros_like(values[members[0]][:, :, rows])
    for m in members:
        scale = torch.exp(maxima[m][:, :, rows] - top)
        total = total + sums[m][:, :, rows] * scale
        mixed = mixed + values[m][:, :, rows] * scale
    return mixed / total.clamp_min(1.0)


class _MultiHeadLogits(nn.Module):
    """Joint Q/K/V in-projection (xavier, zero bias), head split and the logits A = Q K^T."""

    def __init__(self, dim: int, heads: int, attn_dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention heads ({heads}) must divide the hidden size ({dim})")
        self.dim = dim
        self.heads = heads
        self.head_dim = dim // heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        nn.init.xavier_uniform_(self.in_proj_weight)
        self.attn_dropout = nn.Dropout(attn_dropout)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, E) -> (B, H, S, E/H)."""
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)

    def _merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, S, E/H) -> (B, S, E)."""
        return x.transpose(1, 2).flatten(2)

    def _logits_and_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, S, E) -> logits (B, H, S, S) with Q scaled by head_dim^-0.5, values (B, H, S, E/H)."""
        query, key, value = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        query = self._split_heads(query) * self.head_dim**-0.5
        logits = query @ self._split_heads(key).transpose(-1, -2)
        return logits, self._split_heads(value)


class MultimodalCompositeAttention(_MultiHeadLogits):
    """MCA: seven modality-restricted branches sharing one QK^T; 23E^2 + 14E parameters."""

    def __init__(self, dim: int, heads: int, attn_dropout: float = 0.0):
        super().__init__(dim, heads, attn_dropout)
        self.out_proj = nn.ModuleDict({name: _xavier_linear(dim, dim) for name in BRANCHES})
        self.summarize = nn.ModuleDict({name: nn.Linear(4 * dim, dim) for name in MODALITIES})
        self.final_out_proj = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, valid: torch.Tensor, sizes: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, S, E), valid (B, S) bool, sizes = (L, T_a, T_v) -> (out (B, S, E), logits (B, H, S, S))."""
        logits, value = self._logits_and_values(x)
        blocks = _blocks(sizes)
        drop_tri = self.training and self.attn_dropout.p > 0
        # Per key block: detached row maxima (B,H,S,1), sums of shifted exponentials (B,H,S,1) and
        # exponential-weighted values (B,H,S,E/H); ``tri_values`` carry the tri branch's dropout.
        maxima, sums, values, tri_values = [], [], [], []
        for block in blocks:
            allowed = valid[:, None, None, block]
            scores = logits[..., block].masked_fill(~allowed, torch.finfo(logits.dtype).min)
            row_max = scores.amax(dim=-1, keepdim=True).detach()
            weights = torch.exp(scores - row_max) * allowed.to(logits.dtype)
            maxima.append(row_max)
            sums.append(weights.sum(dim=-1, keepdim=True))
            values.append(weights @ value[:, :, block])
            tri_values.append(self.attn_dropout(weights) @ value[:, :, block] if drop_tri else values[-1])

        summaries = []
        for rows, modality in zip(blocks, MODALITIES):
            parts = []
            for branch in SUMMARY_BRANCHES[modality]:
                branch_values = tri_values if branch == "tri" else values
                mixed = _merge_blocks(BRANCHES[branch], rows, maxima, sums, branch_values)
                parts.append(self.out_proj[branch](self._merge_heads(mixed)))
            summaries.append(self.summarize[modality](torch.cat(parts, dim=-1)))
        return self.final_out_proj(torch.cat(summaries, dim=1)), logits


class VanillaSelfAttention(_MultiHeadLogits):
    """Plain multi-head self-attention over the whole fused sequence (the w/o-MCT ablation); 4E^2 + 4E."""

    def __init__(self, dim: int, heads: int, attn_dropout: float = 0.0):
        super().__init__(dim, heads, attn_dropout)
        self.out_proj = _xavier_linear(dim, dim)

    def forward(
        self, x: torch.Tensor, valid: torch.Tensor, sizes: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Same contract as MCA; ``sizes`` is not needed since every query sees every valid key."""
        logits, value = self._logits_and_values(x)
        weights = self.attn_dropout(masked_softmax(logits, valid[:, None, None, :]))
        return self.out_proj(self._merge_heads(weights @ value)), logits


class FusionLayer(nn.Module):
    """Pre-LN block: y = x + drop(attn(LN(x))); out = y + drop(fc2(drop(relu(fc1(LN(y))))))."""

    def __init__(self, attention: nn.Module, dim: int, relu_dropout: float, res_dropout: float):
        super().__init__()
        self.attention = attention
        self.attn_norm = nn.LayerNorm(dim)
        self.ffn_norm = nn.LayerNorm(dim)
        self.fc1 = _xavier_linear(dim, 4 * dim)
        self.fc2 = _xavier_linear(4 * dim, dim)
        self.relu_dropout = nn.Dropout(relu_dropout)
        self.res_dropout = nn.Dropout(res_dropout)

    def forward(
        self, x: torch.Tensor, valid: torch.Tensor, sizes: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, S, E) -> (out (B, S, E), attention logits (B, H, S, S))."""
        attended, logits = self.attention(self.attn_norm(x), valid, sizes)
        x = x + self.res_dropout(attended)
        hidden = self.relu_dropout(F.relu(self.fc1(self.ffn_norm(x))))
        return x + self.res_dropout(self.fc2(hidden)), logits


class MultimodalCompositeTransformer(nn.Module):
    """MCT: time positions + embedding dropout, ``layers`` pre-LN blocks, final LayerNorm.

    ``composite=False`` swaps MCA for :class:`VanillaSelfAttention` (the w/o-MCT ablation) and keeps
    everything else: width, depth, feed-forward, norms.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        layers: int,
        attn_dropout: float = 0.0,
        embed_dropout: float = 0.0,
        relu_dropout: float = 0.0,
        res_dropout: float = 0.0,
        composite: bool = True,
    ):
        super().__init__()
        attention_cls = MultimodalCompositeAttention if composite else VanillaSelfAttention
        self.positions = SinusoidalPositions(dim)
        self.embed_dropout = nn.Dropout(embed_dropout)
        self.layers = nn.ModuleList(
            FusionLayer(attention_cls(dim, heads, attn_dropout), dim, relu_dropout, res_dropout)
            for _ in range(layers)
        )
        self.final_norm = nn.LayerNorm(dim)

    def forward(
        self, x: torch.Tensor, valid: torch.Tensor, sizes: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, S, E) = [text; audio; vision] with block sizes ``sizes``, valid (B, S) bool.

        Each block gets the position codes of its own time steps 0 .. size-1. Returns the fused
        states (B, S, E) and the last layer's raw logits QK^T (B, H, S, S).
        """
        if sum(sizes) != x.shape[1]:
            raise ValueError(f"block sizes {tuple(sizes)} do not add up to the fused length {x.shape[1]}")
        positions = torch.cat([self.positions(size) for size in sizes]).to(x.dtype)
        x = self.embed_dropout(x + positions)
        for layer in self.layers:
            x, logits = layer(x, valid, sizes)
        return self.final_norm(x), logits
