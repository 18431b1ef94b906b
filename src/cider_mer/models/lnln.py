"""LNLN (Zhang, Wang, Yu; NeurIPS 2024): Language-dominated Noise-resistant Learning Network.

"Towards Robust Multimodal Sentiment Analysis with Incomplete Data", re-implemented from facts
of the authors' released code (Haoyu-ha/LNLN@80a052c). Every block is a
ViT-style pre-LN transformer with ``dim_head`` fixed at 64 (inner width heads * 64 = 512 at the
defaults, whatever the model width H), three separate LayerNorms for the query, key and value of each
attention, bias-free q/k/v projections, a biased output projection and a GELU feed-forward
(H -> M -> H). H = 128, T = 8 tokens, M = 128, 8 heads at the MOSI defaults.

Forward pass (B batch, L / T_a / T_v text / audio / vision steps, D_t text-encoder width):

1. Unimodal encoders. text states (B, L, D_t) -> Linear(D_t, H) -> prepend T zero "extra" tokens
   -> + positional table (randn, (1, T + L, H)) -> 2 layers -> keep the first T outputs: h_t (B, T, H).
   Audio (B, T_a, d_a) and vision (B, T_v, d_v) likewise give h_a, h_v (B, T, H).
2. Completeness check. h_t -> prepend 1 token -> 2 layers -> token 0 (B, H) -> Linear(H, 64) ->
   LeakyReLU(0.1) -> Linear(64, 1) -> sigmoid: w (B, 1), the estimated intactness of the text.
3. Proxy dominant feature. [h_p (ones, T tokens); h_a; h_v] (B, 3T, H) -> prepend T tokens -> 2 layers
   -> first T outputs -> gradient reversal layer (identity forward, gradient * -1 backward): h_p (B, T, H).
4. Dominant feature h_d = (1 - w) * h_p + w * h_t (B, T, H).
5. DMML. Language encoder (positions only, no extra tokens, 2 layers) on h_d, keeping its input and
   every layer output [d_0, d_1, d_2]. Hyper-modality learning, 3 layers i = 0, 1, 2, starting from
   H_0 = h_hyper (ones, (B, T, H)): H <- LN4(H) + to_out(Attn(LN1(d_i) -> LN2(h_a)) + Attn(LN1(d_i) ->
   LN3(h_v))), heads 8 with dim_head H / 8 (the residual is added to the *normalised* H). Cross
   transformer: one shared zero token prepended to source H and target d_2, separate positional tables,
   2 layers in which the target attends to the source: feat (B, T + 1, H).
6. Joint representation (notes §2.10): the pooled fusion vector mean(feat[:, 1:]) (B, H), J = H = 128.
   The original's last layer ``dmml[3]`` = Linear(H, C) is the toolkit's head.

Training objective (notes §2.7), L = sigma * L_sp + alpha * L_cc + beta * L_adv + gamma * L_rec with
alpha / beta / gamma / sigma = 0.9 / 0.8 / 0.1 / 1.0. L_sp is the trainer's task loss on the head's
output (weight 1, so ``sigma`` must stay 1.0); :meth:`LNLN.objective_terms` returns the others,
weighted, from the incomplete pass and the complete pass (``needs_complete_pass = True``):

- ``aux_completeness`` = alpha * MSE(w, completeness label) (B, 1);
- ``aux_adversarial`` = beta * CE(discriminator(rows of [h_d; clean h_t]), [1] * B*T + [0] * B*T), the
  discriminator being Linear(H, 64) -> LeakyReLU(0.1) -> Linear(64, 2) on each of the 2*B*T tokens; the
  clean text tokens come from the complete pass. Through the GRL the proxy generator is pushed the
  other way;
- ``aux_reconstruction`` = gamma * MSE([rec_a(h_a); rec_v(h_v); rec_t(h_t)], the complete pass's
  [h_a; h_v; h_t]) with three 2-layer reconstructors (positions only). The targets are *not* detached,
  as in the original: gradients reach the encoders from both sides.

The discriminator and the reconstructors run inside ``objective_terms`` (the original runs them in
``forward`` whenever complete inputs are passed); the computation is the same.

Without a complete pass (the trainer's MSSD step provides none) only ``aux_completeness`` is returned,
as in the original's evaluation loss.

``extras`` of a forward pass: ``text_tokens``, ``audio_tokens``, ``vision_tokens`` (h_t, h_a, h_v, each
(B, T, H)), ``proxy`` (h_p after the GRL, (B, T, H)), ``dominant`` (h_d, (B, T, H)), ``completeness``
(w, (B, 1)) and ``fusion_tokens`` (feat, (B, T + 1, H)).

Reproduced oddities of the original:
- ``dim_head`` is 64 for every transformer, whatever H and the head count (inner width 512);
- the extra tokens start at zero, the positional tables are randn, h_hyper and h_p start at ones;
- the hyper residual is added to LayerNorm(H), not to H;
- the reconstruction targets are not detached; the discriminator labels are 1 for h_d and 0 for clean
  text;
- all dropouts are 0 (``dropout`` / ``emb_dropout`` are the original's never-set defaults);
- every parameter trains (nothing is frozen and every block feeds the task loss or an auxiliary term),
  with one start-up quirk: h_hyper starts as ones, so the first hyper layer's LN4 sees a constant
  vector per token, normalises it to exactly 0 and outputs its bias. At initialisation that LayerNorm's
  weight therefore gets a zero gradient, and the gradient reaching h_hyper through it is scaled by
  1 / sqrt(LayerNorm eps) (about 316). After the first optimiser step h_hyper is no longer constant
  and both train normally (LN4 then blows the tiny update up to unit scale).

Deviations from the original code:
- Padding: the original attends padded positions like any other (it ignores ``audio_lengths`` /
  ``vision_lengths``). Here, by default (``mask_padding=True``), padded frames and padded text positions
  are masked as keys in the three unimodal encoders (the extra tokens are always valid, so a sample
  whose modality has no valid frame still gets finite tokens), which makes the outputs independent of
  how far a batch is padded (the trainer trims texts to the batch's longest). ``mask_padding=False``
  reproduces the original's unmasked attention; note that this toolkit's text encoder returns zeros at
  padded positions where BERT returns states.
- The text comes from the toolkit's text encoder (``encode_text``): precomputed states or a re-encode;
  BERT is fine-tuned or not as the toolkit configures it, and its parameters are not counted here.
- Completeness label: the original uses 1 - r_text, the sample's *drawn* missing rate. The toolkit's
  missingness gives no rate, so the label is the realised kept fraction of the sample's valid inner
  text tokens (valid positions other than [CLS] and [SEP], which are always kept), taken from
  ``batch.keep.text`` and the text mask; 1 for a text without inner tokens. Its expectation is 1 - r.
- L_sp is the trainer's task loss (L1 for regression, cross-entropy for classes) instead of the
  original's MSE; the original is regression-only, the head here is widened to C outputs.
- The completeness check takes token 0 as (B, H) at every batch size (the original's ``squeeze()``
  gives (H,) at B = 1; broadcasting made that harmless).
- Missingness is the toolkit's feature-level masking ([UNK] text, zero frames), as in the original but
  drawn by the toolkit's generator and rates instead of LNLN's dataset-level draw.

The original's config lists lengths and widths in the order (language, video, audio), e.g.
``input_length: [50, 500, 375]``; here they come by name from ``DataShapes`` (text / audio / vision).

Parameter count at the MOSI defaults (unaligned 50/375/500, dims 768/5/20, C = 1), without the text
encoder and with the head: 6,483,012 (the notes' measured figure); + 129 per extra output; aligned
50/50/50: 6,383,812.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
from torch import nn
from torch.nn import functional as F

from cider_mer.models.interface import (
    Backbone,
    BackboneOutput,
    DataShapes,
    ModelInputs,
    ObjectiveBatch,
    check_text_width,
)
from cider_mer.models.registry import register_backbone
from cider_mer.validation import (
    ANY_NUMBER,
    AT_LEAST_1,
    FRACTION,
    NON_NEGATIVE,
    Range,
    check_divides,
    each,
    one_of,
    validate_fields,
)

_DEPTHS = ("encoder_depth", "proxy_depth", "completeness_depth", "reconstructor_depth", "language_depth",
           "hyper_depth", "fusion_depth")


@dataclass
class LnlnConfig:
    """LNLN hyper-parameters; defaults from the authors' ``configs/train_mosi.yaml`` (shapes come separately)."""

    dim: int = 128  # H: hidden_dims of the three encoders and the width of every later block (and h_hyper, h_p)
    tokens: int = 8  # T: token_length, the extra tokens each unimodal encoder (and the proxy generator) keeps
    heads: int = 8  # heads of every Transformer / CrossTransformer
    dim_head: int = 64  # per-head width of those attentions: hard-coded 64 in the original
    mlp_dim: int = 128  # M: feed-forward width (no expansion at the defaults)
    encoder_depth: int = 2  # feature_extractor.depth (each of text / audio / vision)
    proxy_depth: int = 2  # dmc.proxy_dominant_feature_generator.depth
    completeness_depth: int = 2  # dmc.completeness_check.depth
    completeness_hidden: int = 64  # hidden width of the completeness MLP (mlp_dim / 2 in the original)
    discriminator_hidden: int = 64  # dmc.effectiveness_discriminator.hidden_dim
    reconstructor_depth: int = 2  # reconstructor.depth (three reconstructors)
    language_depth: int = 2  # dmml.language_encoder.depth
    hyper_depth: int = 3  # dmml.hyper_modality_learning.depth; needs hyper_depth <= language_depth + 1
    hyper_heads: int = 8  # dmml.hyper_modality_learning.heads; dim_head = dim / hyper_heads
    fusion_depth: int = 2  # dmml.fuison_transformer.depth (MOSEI uses 4)
    grl_alpha: float = 1.0  # gradient-reversal factor
    alpha: float = 0.9  # weight of L_cc, the completeness-check MSE
    beta: float = 0.8  # weight of L_adv, the effectiveness discriminator's cross-entropy
    gamma: float = 0.1  # weight of L_rec, the feature-reconstruction MSE
    sigma: float = 1.0  # weight of L_sp, the task loss; the trainer adds it with weight 1, so it must be 1.0
    dropout: float = 0.0  # attention-output and feed-forward dropout (0 in the original)
    emb_dropout: float = 0.0  # dropout after adding the positional tables (0 in the original)
    mask_padding: bool = True  # mask padded frames / tokens as keys in the unimodal encoders (False: original)

    RANGES: ClassVar[dict[str, Range]] = {
        **each(("dim", "tokens", "heads", "dim_head", "mlp_dim", "completeness_hidden", "discriminator_hidden",
                "hyper_heads") + _DEPTHS, AT_LEAST_1),
        **each(("dropout", "emb_dropout"), FRACTION),
        **each(("alpha", "beta", "gamma"), NON_NEGATIVE),
        "grl_alpha": ANY_NUMBER,
        "sigma": one_of(1.0),  # the trainer adds the task loss with weight 1
    }

    def __post_init__(self) -> None:
        validate_fields(self)
        check_divides(self, "hyper_heads", "dim")
        if self.hyper_depth > self.language_depth + 1:
            raise ValueError(
                f"hyper_depth ({self.hyper_depth}) needs one language-encoder state per layer: at most "
                f"language_depth + 1 = {self.language_depth + 1}"
            )


class _GradientReversal(torch.autograd.Function):
    """Identity forward; the backward gradient is multiplied by -alpha."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad.neg() * ctx.alpha, None


def gradient_reversal(x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """x unchanged; gradients flowing back through it are scaled by -alpha."""
    return _GradientReversal.apply(x, alpha)


def _key_mask(valid: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """(B, S) bool key validity -> (B, 1, 1, S) mask for scaled_dot_product_attention (True = attend)."""
    return None if valid is None else valid[:, None, None, :]


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, S, h*d) -> (B, h, S, d)."""
    b, s, _ = x.shape
    return x.view(b, s, heads, -1).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """(B, h, S, d) -> (B, S, h*d)."""
    b, h, s, d = x.shape
    return x.transpose(1, 2).reshape(b, s, h * d)


class _Attention(nn.Module):
    """Multi-head attention: bias-free q/k/v to heads*dim_head, softmax(q k^T / sqrt(dim_head)), biased out."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        # The original drops the output projection only for one head of width dim (never the case here).
        self.to_out = (nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))
                       if not (heads == 1 and dim_head == dim) else nn.Identity())

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                key_valid: Optional[torch.Tensor] = None) -> torch.Tensor:
        """q (B, S_q, H), k / v (B, S_k, H), key_valid (B, S_k) bool or None -> (B, S_q, H)."""
        q, k, v = (_heads(layer(x), self.heads) for layer, x in ((self.to_q, q), (self.to_k, k), (self.to_v, v)))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=_key_mask(key_valid))
        return self.to_out(_merge(out))


class _Layer(nn.Module):
    """Pre-LN layer: x <- Attn(LN_q(x), LN_k(s), LN_v(s)) + x; x <- FF(LN(x)) + x (s = x for self-attention)."""

    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_k = nn.LayerNorm(dim)
        self.norm_v = nn.LayerNorm(dim)
        self.attn = _Attention(dim, heads, dim_head, dropout)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(mlp_dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, source: Optional[torch.Tensor] = None,
                key_valid: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (B, S, H), source (B, S_k, H) or None (self-attention), key_valid (B, S_k) -> (B, S, H)."""
        s = x if source is None else source
        x = self.attn(self.norm_q(x), self.norm_k(s), self.norm_v(s), key_valid) + x
        return self.ff(self.norm_ff(x)) + x


class _TokenTransformer(nn.Module):
    """The original's ``Transformer``: optional T zero extra tokens prepended, a randn positional table
    (1, frames (+ T), H), embedding dropout, pre-LN self-attention layers (no final norm)."""

    def __init__(self, frames: int, tokens: Optional[int], config: LnlnConfig, depth: int):
        super().__init__()
        h = config.dim
        self.tokens = tokens or 0
        self.pos = nn.Parameter(torch.randn(1, frames + self.tokens, h))
        self.extra = nn.Parameter(torch.zeros(1, tokens, h)) if tokens else None
        self.dropout = nn.Dropout(config.emb_dropout)
        self.layers = nn.ModuleList(
            _Layer(h, config.heads, config.dim_head, config.mlp_dim, config.dropout) for _ in range(depth)
        )

    def forward(self, x: torch.Tensor, valid: Optional[torch.Tensor] = None, keep_hidden: bool = False):
        """x (B, n, H), valid (B, n) bool key validity or None -> (B, T + n, H); with ``keep_hidden`` the
        list [input after positions, output of layer 1, ..., output of the last layer]."""
        b, n, _ = x.shape
        if n + self.tokens > self.pos.shape[1]:
            raise ValueError(f"sequence of {n} steps is longer than the {self.pos.shape[1] - self.tokens} "
                             "the model was built for")
        if self.extra is not None:
            x = torch.cat([self.extra.expand(b, -1, -1), x], dim=1)
            if valid is not None:
                valid = torch.cat([valid.new_ones(b, self.tokens), valid], dim=1)
        x = self.dropout(x + self.pos[:, : n + self.tokens])
        hidden = [x]
        for layer in self.layers:
            x = layer(x, key_valid=valid)
            hidden.append(x)
        return hidden if keep_hidden else x


class _CrossTransformer(nn.Module):
    """The original's ``CrossTransformer``: one shared zero token prepended to source and target, separate
    randn positional tables, layers in which the target attends to the (fixed) source."""

    def __init__(self, source_frames: int, target_frames: int, config: LnlnConfig, depth: int):
        super().__init__()
        h = config.dim
        self.pos_source = nn.Parameter(torch.randn(1, source_frames + 1, h))
        self.pos_target = nn.Parameter(torch.randn(1, target_frames + 1, h))
        self.extra = nn.Parameter(torch.zeros(1, 1, h))
        self.dropout = nn.Dropout(config.emb_dropout)
        self.layers = nn.ModuleList(
            _Layer(h, config.heads, config.dim_head, config.mlp_dim, config.dropout) for _ in range(depth)
        )

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """source (B, n_s, H), target (B, n_t, H) -> (B, n_t + 1, H)."""
        b, n_s, _ = source.shape
        n_t = target.shape[1]
        extra = self.extra.expand(b, -1, -1)
        source = self.dropout(torch.cat([extra, source], dim=1) + self.pos_source[:, : n_s + 1])
        target = self.dropout(torch.cat([extra, target], dim=1) + self.pos_target[:, : n_t + 1])
        for layer in self.layers:
            target = layer(target, source=source)
        return target


class _HyperLayer(nn.Module):
    """Hyper-modality learning layer: H' = LN4(H) + to_out(Attn(q, audio) + Attn(q, vision)), with
    q = LN1(dominant), audio = LN2(h_a), vision = LN3(h_v); five bias-free projections, dim_head = H / heads."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm_dominant = nn.LayerNorm(dim)
        self.norm_audio = nn.LayerNorm(dim)
        self.norm_vision = nn.LayerNorm(dim)
        self.norm_hyper = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k_audio = nn.Linear(dim, dim, bias=False)
        self.to_k_vision = nn.Linear(dim, dim, bias=False)
        self.to_v_audio = nn.Linear(dim, dim, bias=False)
        self.to_v_vision = nn.Linear(dim, dim, bias=False)
        self.to_out = (nn.Sequential(nn.Linear(dim, dim), nn.Dropout(dropout)) if heads != 1 else nn.Identity())

    def forward(self, dominant: torch.Tensor, h_a: torch.Tensor, h_v: torch.Tensor,
                h_hyper: torch.Tensor) -> torch.Tensor:
        """dominant, h_a, h_v, h_hyper (B, T, H) -> (B, T, H)."""
        q = _heads(self.to_q(self.norm_dominant(dominant)), self.heads)
        a, v = self.norm_audio(h_a), self.norm_vision(h_v)
        out_a = F.scaled_dot_product_attention(q, _heads(self.to_k_audio(a), self.heads),
                                               _heads(self.to_v_audio(a), self.heads))
        out_v = F.scaled_dot_product_attention(q, _heads(self.to_k_vision(v), self.heads),
                                               _heads(self.to_v_vision(v), self.heads))
        return self.norm_hyper(h_hyper) + self.to_out(_merge(out_a) + _merge(out_v))


@register_backbone(
    "lnln",
    LnlnConfig,
    description="LNLN: language-dominated noise-resistant learning (completeness check, adversarial proxy "
                "dominant feature, hyper-modality learning, cross-transformer fusion)",
    source="Zhang, Wang, Yu, NeurIPS 2024; Haoyu-ha/LNLN@80a052c",
    lr_default=1e-4,  # AdamW lr 1e-4 (train.py:46-48); its warm-up and cosine schedule are not reproduced
    batch_default=64,  # base.batch_size 64 (configs)
)
class LNLN(Backbone):
    """LNLN backbone: ``forward(inputs) -> BackboneOutput`` with joint (B, H) = mean(feat[:, 1:])."""

    needs_complete_pass = True

    def __init__(self, config: LnlnConfig, shapes: DataShapes, text_encoder: Optional[nn.Module] = None):
        super().__init__()
        check_text_width(text_encoder, shapes)
        h, t = config.dim, config.tokens
        self.config = config
        self.shapes = shapes
        self.text_encoder = text_encoder
        self.joint_dim = h

        self.h_hyper = nn.Parameter(torch.ones(1, t, h))
        self.h_p = nn.Parameter(torch.ones(1, t, h))
        # Unimodal encoders (proj_l / proj_a / proj_v): Linear to H, then a token-compressing transformer.
        self.project_text = nn.Linear(shapes.text_dim, h)
        self.text_tokens = _TokenTransformer(shapes.text_len, t, config, config.encoder_depth)
        self.project_audio = nn.Linear(shapes.audio_dim, h)
        self.audio_tokens = _TokenTransformer(shapes.audio_len, t, config, config.encoder_depth)
        self.project_vision = nn.Linear(shapes.vision_dim, h)
        self.vision_tokens = _TokenTransformer(shapes.vision_len, t, config, config.encoder_depth)
        # Dominant modality correction.
        self.proxy_generator = _TokenTransformer(3 * t, t, config, config.proxy_depth)
        self.discriminator = nn.Sequential(nn.Linear(h, config.discriminator_hidden), nn.LeakyReLU(0.1),
                                           nn.Linear(config.discriminator_hidden, 2))
        self.completeness_encoder = _TokenTransformer(t, 1, config, config.completeness_depth)
        self.completeness_head = nn.Sequential(nn.Linear(h, config.completeness_hidden), nn.LeakyReLU(0.1),
                                               nn.Linear(config.completeness_hidden, 1), nn.Sigmoid())
        # Training-only reconstructors of [audio, vision, text] tokens (the original's order).
        self.reconstructors = nn.ModuleList(
            _TokenTransformer(t, None, config, config.reconstructor_depth) for _ in range(3)
        )
        # DMML: language encoder, hyper-modality learning, cross-transformer fusion.
        self.language_encoder = _TokenTransformer(t, None, config, config.language_depth)
        self.hyper_layers = nn.ModuleList(
            _HyperLayer(h, config.hyper_heads, config.dropout) for _ in range(config.hyper_depth)
        )
        self.fusion = _CrossTransformer(t, t, config, config.fusion_depth)

    def _unimodal(self, project: nn.Linear, encoder: _TokenTransformer, x: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
        """(B, n, d) features and (B, n) validity -> the first T encoder outputs (B, T, H)."""
        valid = (mask > 0) if self.config.mask_padding else None
        return encoder(project(x), valid)[:, : self.config.tokens]

    def forward(self, inputs: ModelInputs, need_recon: bool = False) -> BackboneOutput:
        """Joint (B, H), text states (B, L, D_t), extras (see the module docstring); ``need_recon`` is
        ignored (LNLN reconstructs its own tokens in :meth:`objective_terms`)."""
        t = self.config.tokens
        text_states = self.encode_text(inputs)
        h_t = self._unimodal(self.project_text, self.text_tokens, text_states, inputs.text_mask)
        h_a = self._unimodal(self.project_audio, self.audio_tokens, inputs.audio, inputs.audio_mask)
        h_v = self._unimodal(self.project_vision, self.vision_tokens, inputs.vision, inputs.vision_mask)
        b = h_t.shape[0]

        w = self.completeness_head(self.completeness_encoder(h_t)[:, 0])  # (B, 1)
        proxy_in = torch.cat([self.h_p.expand(b, -1, -1), h_a, h_v], dim=1)  # (B, 3T, H)
        h_p = gradient_reversal(self.proxy_generator(proxy_in)[:, :t], self.config.grl_alpha)
        weight = w.unsqueeze(-1)  # (B, 1, 1)
        h_d = h_p * (1 - weight) + h_t * weight  # (B, T, H)

        states = self.language_encoder(h_d, keep_hidden=True)  # [d_0, ..., d_depth], each (B, T, H)
        h_hyper = self.h_hyper.expand(b, -1, -1)
        for i, layer in enumerate(self.hyper_layers):
            h_hyper = layer(states[i], h_a, h_v, h_hyper)
        feat = self.fusion(h_hyper, states[-1])  # (B, T + 1, H)
        joint = feat[:, 1:].mean(dim=1)  # (B, H)
        extras = {"text_tokens": h_t, "audio_tokens": h_a, "vision_tokens": h_v, "proxy": h_p,
                  "dominant": h_d, "completeness": w, "fusion_tokens": feat}
        return BackboneOutput(joint=joint, text_states=text_states, extras=extras)

    @staticmethod
    def completeness_labels(keep_text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) keep mask and (B, L) text mask -> (B, 1) kept fraction of the valid inner tokens.

        Inner tokens are the valid positions other than [CLS] (position 0) and [SEP] (position len - 1);
        a text without inner tokens counts as complete (1).
        """
        valid = text_mask > 0
        keep = keep_text[:, : valid.shape[1]].bool() & valid
        length = valid.sum(dim=1)
        pos = torch.arange(valid.shape[1], device=valid.device)
        inner = valid & (pos[None, :] > 0) & (pos[None, :] < (length - 1)[:, None])
        count = inner.sum(dim=1)
        kept = (keep & inner).sum(dim=1)
        ratio = kept.to(torch.float32) / count.clamp_min(1).to(torch.float32)
        return torch.where(count > 0, ratio, torch.ones_like(ratio)).unsqueeze(-1)

    def objective_terms(self, batch: ObjectiveBatch) -> dict[str, torch.Tensor]:
        """``aux_completeness`` (alpha * L_cc), ``aux_adversarial`` (beta * L_adv) and ``aux_reconstruction``
        (gamma * L_rec), each a scalar; see the module docstring.

        Without a complete pass (``batch.complete is None``: the trainer's MSSD step gives none) only
        ``aux_completeness`` is returned, as in the original's evaluation loss.
        """
        cfg = self.config
        inc = batch.incomplete.extras
        w = inc["completeness"]
        labels = self.completeness_labels(batch.keep.text, batch.inputs.text_mask).to(w.device)
        l_cc = F.mse_loss(w.float(), labels)
        if batch.complete is None:
            return {"aux_completeness": cfg.alpha * l_cc}
        com = batch.complete.extras

        h_d, clean = inc["dominant"], com["text_tokens"]  # (B, T, H) each
        rows = torch.cat([h_d, clean], dim=0).reshape(-1, h_d.shape[-1])  # (2 B T, H)
        logits = self.discriminator(rows)  # (2 B T, 2)
        n = h_d.shape[0] * h_d.shape[1]
        targets = torch.cat([torch.ones(n, dtype=torch.long, device=rows.device),
                             torch.zeros(n, dtype=torch.long, device=rows.device)])
        l_adv = F.cross_entropy(logits.float(), targets)

        names = ("audio_tokens", "vision_tokens", "text_tokens")
        rec = torch.cat([net(inc[name]) for net, name in zip(self.reconstructors, names)], dim=1)  # (B, 3T, H)
        target = torch.cat([com[name] for name in names], dim=1)
        l_rec = F.mse_loss(rec.float(), target.float())
        return {"aux_completeness": cfg.alpha * l_cc, "aux_adversarial": cfg.beta * l_adv,
                "aux_reconstruction": cfg.gamma * l_rec}

