"""The fairseq-style transformer encoder shared by MulT, DLF and MPLMM (notes mult_dlf.md §1).

MulT (Tsai et al. 2019), its MMSA port and DLF (Wang et al. 2025) each carry a copy of the same
encoder; this is one batch-first re-implementation of it, with the same parameter layout.

``CrossmodalEncoder(d, h, N)`` maps a query sequence (B, T_q, d) -- and, for cross-modal attention,
a source sequence (B, T_k, d) that supplies keys and values -- to (B, T_q, d):

1. Embedding. The query is scaled by sqrt(d), gets the sinusoidal position code (when
   ``positions``) and dropout(``embed_dropout``). The source gets the same scaling and positions,
   then dropout is applied twice, independently: once for the key copy and once for the value copy.
   The embedded source is fixed: every layer attends to it (it is not updated layer by layer).
2. N pre-LN layers:
   x = x + drop_res(Attn(LN0(x), LN0(key), LN0(value)))   (self-attention: key = value = x)
   x = x + drop_res(fc2(drop_relu(ReLU(fc1(LN1(x))))))      fc1: d -> 4d, fc2: 4d -> d
   One LN0 per layer is shared by the query and both source copies.
3. A final LayerNorm(d).

Attention: one packed in-projection (3d x d weight, 3d bias), head dim d/h, q scaled by (d/h)^-0.5
after its projection, an additive mask, softmax in float32, dropout(``attn_dropout``) on the
weights, out_proj Linear(d, d). No bias_k / bias_v, no zero-attention.

Parameters per encoder: E(d, N) = N (12 d^2 + 13 d) + 2 d, independent of h and the lengths.

Initialisation as the original: in-projection, out_proj, fc1, fc2 weights Xavier-uniform with
zero biases; LayerNorms PyTorch defaults.

Position codes (no parameters): channel i < d/2 holds sin(p w_i), channel d/2 + i holds cos(p w_i),
with w_i = exp(-i ln(10000) / (d/2 - 1)); positions p run 1..T; a zero column is appended for odd
d. As in the original, a time step whose *first input channel is exactly 0* counts as padding and
gets the zero code (computed from the unscaled input). Zero (missing) frames projected by a
bias-free convolution hit this rule, as they do in the original.

Causal mask (``causal``): query i may not see key j when j >= i + 1 + |T_k - T_q|. For
self-attention this is the usual causal mask; for cross-modal pairs of very different lengths it
hides little or nothing (the original's behaviour).

Key padding (an addition; the originals attend everywhere): ``source_padding`` (B, T_k) bool,
True = padded key, excludes those keys from every query; in self-attention it masks the query
sequence's own keys. A query row whose keys are all excluded (fully padded source, or padding
combined with the causal mask) gets attention output zero -- never NaN -- and zero gradients.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from cider_mer.models.layers.pooling import masked_softmax


def sinusoidal_codes(first_channel: Tensor, dim: int) -> Tensor:
    """fairseq sinusoidal position codes for a batch-first sequence.

    ``first_channel`` (B, T) is the first feature channel of the unscaled input; steps where it is
    exactly 0 are padding and get the zero code. Returns (B, T, dim) in ``first_channel``'s dtype.
    """
    length = first_channel.shape[1]
    half = dim // 2
    rate = math.log(10000.0) / max(half - 1, 1)
    frequencies = torch.exp(torch.arange(half, dtype=torch.float32, device=first_channel.device) * -rate)
    steps = torch.arange(1, length + 1, dtype=torch.float32, device=first_channel.device)[:, None]
    angles = steps * frequencies[None, :]  # (T, half)
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)  # (T, 2*half)
    if dim % 2 == 1:
        table = F.pad(table, (0, 1))
    real = (first_channel != 0).to(torch.float32)[..., None]  # (B, T, 1)
    return (table[None] * real).to(first_channel.dtype)


def _xavier_linear(dim_in: int, dim_out: int) -> nn.Linear:
    layer = nn.Linear(dim_in, dim_out)
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def causal_mask(query_len: int, key_len: int, device: Optional[torch.device] = None) -> Tensor:
    """(T_q, T_k) bool, True = hidden: key j is hidden from query i when j >= i + 1 + |T_k - T_q|."""
    ones = torch.ones(query_len, key_len, dtype=torch.bool, device=device)
    return torch.triu(ones, diagonal=1 + abs(key_len - query_len))


class MultiheadAttention(nn.Module):
    """fairseq multi-head attention: packed in-projection (3d x d + 3d), out_proj Linear(d, d)."""

    def __init__(self, dim: int, heads: int, attn_dropout: float = 0.0):
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"dim {dim} is not divisible by {heads} heads")
        self.dim = dim
        self.heads = heads
        self.head_dim = dim // heads
        self.scaling = self.head_dim ** -0.5
        self.attn_dropout = attn_dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = _xavier_linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, hidden: Optional[Tensor] = None) -> Tensor:
        """query (B, T_q, d), key / value (B, T_k, d); ``hidden`` bool broadcastable to
        (B, 1, T_q, T_k), True = the key is not attended. Returns (B, T_q, d)."""
        w, b, d = self.in_proj_weight, self.in_proj_bias, self.dim
        q = F.linear(query, w[:d], b[:d]) * self.scaling
        k = F.linear(key, w[d:2 * d], b[d:2 * d])
        v = F.linear(value, w[2 * d:], b[2 * d:])
        batch, t_q, t_k = query.shape[0], query.shape[1], key.shape[1]
        q = q.view(batch, t_q, self.heads, self.head_dim).transpose(1, 2)  # (B, h, T_q, d/h)
        k = k.view(batch, t_k, self.heads, self.head_dim).transpose(1, 2)
        v = v.view(batch, t_k, self.heads, self.head_dim).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-1, -2)).float()  # (B, h, T_q, T_k)
        if hidden is None:
            weights = torch.softmax(scores, dim=-1)
        else:
            allowed = ~hidden.expand(batch, 1, t_q, t_k)
            weights = masked_softmax(scores, allowed)
        weights = F.dropout(weights.to(v.dtype), p=self.attn_dropout, training=self.training)
        mixed = torch.matmul(weights, v).transpose(1, 2).reshape(batch, t_q, d)
        return self.out_proj(mixed)


class CrossmodalLayer(nn.Module):
    """One pre-LN layer: attention block then FFN block, each with a residual."""

    def __init__(self, dim: int, heads: int, attn_dropout: float, relu_dropout: float, res_dropout: float):
        super().__init__()
        self.self_attn = MultiheadAttention(dim, heads, attn_dropout)
        self.relu_dropout = relu_dropout
        self.res_dropout = res_dropout
        self.fc1 = _xavier_linear(dim, 4 * dim)
        self.fc2 = _xavier_linear(4 * dim, dim)
        # [0]: LN0 before attention (shared by query, key and value copies); [1]: LN1 before the FFN.
        self.layer_norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(2)])

    def forward(self, x: Tensor, key: Optional[Tensor], value: Optional[Tensor],
                hidden: Optional[Tensor]) -> Tensor:
        """x (B, T_q, d); key / value (B, T_k, d) or None (self-attention); -> (B, T_q, d)."""
        residual = x
        x = self.layer_norms[0](x)
        if key is None:
            x = self.self_attn(x, x, x, hidden)
        else:
            x = self.self_attn(x, self.layer_norms[0](key), self.layer_norms[0](value), hidden)
        x = residual + F.dropout(x, p=self.res_dropout, training=self.training)
        residual = x
        x = F.relu(self.fc1(self.layer_norms[1](x)))
        x = F.dropout(x, p=self.relu_dropout, training=self.training)
        x = F.dropout(self.fc2(x), p=self.res_dropout, training=self.training)
        return residual + x


class CrossmodalEncoder(nn.Module):
    """The fairseq-style TransformerEncoder of MulT/DLF/MPLMM (notes mult_dlf.md §1)."""

    def __init__(self, dim: int, heads: int, layers: int, attn_dropout: float = 0.0,
                 relu_dropout: float = 0.0, res_dropout: float = 0.0, embed_dropout: float = 0.0,
                 causal: bool = False, positions: bool = True):
        super().__init__()
        if layers < 1:
            raise ValueError(f"an encoder needs at least one layer, got {layers}")
        self.dim = dim
        self.heads = heads
        self.embed_scale = math.sqrt(dim)
        self.embed_dropout = embed_dropout
        self.causal = causal
        self.positions = positions
        self.layers = nn.ModuleList(
            [CrossmodalLayer(dim, heads, attn_dropout, relu_dropout, res_dropout) for _ in range(layers)])
        self.layer_norm = nn.LayerNorm(dim)

    def _embed(self, x: Tensor) -> Tensor:
        """sqrt(d) x + position codes (of the unscaled x); no dropout. (B, T, d) -> (B, T, d)."""
        out = self.embed_scale * x
        if self.positions:
            out = out + sinusoidal_codes(x[:, :, 0], self.dim)
        return out

    def forward(self, query: Tensor, source: Optional[Tensor] = None,
                source_padding: Optional[Tensor] = None) -> Tensor:
        """query (B, T_q, d); source (B, T_k, d) for cross-modal attention (None: self-attention);
        source_padding (B, T_k) bool, True = padded key (None: attend everywhere, as the originals do).
        Returns (B, T_q, d)."""
        x = F.dropout(self._embed(query), p=self.embed_dropout, training=self.training)
        key = value = None
        if source is not None:
            embedded = self._embed(source)
            key = F.dropout(embedded, p=self.embed_dropout, training=self.training)
            value = F.dropout(embedded, p=self.embed_dropout, training=self.training)
        t_q = query.shape[1]
        t_k = t_q if source is None else source.shape[1]
        hidden = None
        if self.causal:
            hidden = causal_mask(t_q, t_k, query.device)[None, None]  # (1, 1, T_q, T_k)
        if source_padding is not None:
            if source_padding.shape != (query.shape[0], t_k):
                raise ValueError(f"source_padding {tuple(source_padding.shape)} does not match "
                                 f"(B, T_k) = {(query.shape[0], t_k)}")
            padded = source_padding.bool()[:, None, None, :]  # (B, 1, 1, T_k)
            hidden = padded if hidden is None else hidden | padded
        for layer in self.layers:
            x = layer(x, key, value, hidden)
        return self.layer_norm(x)
