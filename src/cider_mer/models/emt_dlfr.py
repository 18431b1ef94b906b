"""EMT-DLFR (Sun et al., IEEE TAC 2023): Efficient Multimodal Transformer with Dual-Level Feature Restoration.

Rebuilt from the project's notes (``design/baselines/mplmm_lnln_emt_dlfr.md`` §3) and facts read in
sunlicai/EMT-DLFR@e9f0960 (``models/missingTask/EMT_DLFR.py``, ``models/subNets/EMT.py``,
``trains/missingTask/EMT_DLFR.py``, ``config/config_regression.py``). Shapes: B batch, L text length,
T_a / T_v frames, D_t text-encoder width, D = ``d_model`` (128), M = 3 modalities.

Forward pass (one view; the trainer runs it on the incomplete and, for the objective, the complete inputs):

- text: encoder states (B, L, D_t) -> utterance vector u_l = state of [CLS] (B, D_t) and the word
  sequence states[:, 1:] (B, L-1, D_t). Valid word positions are 1 .. len-2 (the original's
  ``text_lengths = sum(mask) - 2``: [CLS] is cut off, [SEP] and padding are masked).
- audio / vision (``AuViSubNet``): LSTM(d, 32 / 64) over the frames; the utterance vector is the
  LSTM output at the last valid frame, through Dropout(lstm dropout) and Linear(32 -> 16 / 64 -> 32);
  the frame sequence is the same Linear on every (padding-zeroed) LSTM output: (B, T, 16 / 32).
- equalisation: bias-free Linear to D per modality (``proj_text`` D_t -> D, ``proj_audio`` 16 -> D,
  ``proj_video`` 32 -> D), applied to the utterance vectors, giving the global multimodal context
  (GMC) tokens (B, 3, D), and to the sequences (B, L-1 / T_a / T_v, D).
- fusion (EMT): sinusoidal positions added to the three sequences (dropout ``emb_dropout``); then
  ``fusion_layers`` (3) layers. In a layer, for each modality m, with the layer's input GMC tokens g:
  x_m <- MPU(x_m, context=g) (queries over the sequence, self-attention masked by the sequence's
  validity) and g_m <- MPU(g, context=x_m) (GMC tokens attend to the valid positions of the *old* x_m);
  the new GMC tokens are an attention pool over the three g_m: stack (B, 3, 3, D) -> view (B, 3, 3D) ->
  Linear(3D, 3D) -> tanh -> Linear(3D, 1) -> softmax over the 3 -> weighted sum (B, 3D) -> (B, 3, D).
  An MPU (the original's ``CrossSelfTransformer``, depth 1) is pre-norm: x += CrossAttn(LN(x), LN_ctx(c));
  x += SelfAttn(LN(x)); x += FF(LN(x)); attention: 4 heads of 32, bias-free q and kv maps, biased out
  map, dropout ``attn_dropout`` on the weights; FF = Linear(D, 2*4D) -> GEGLU (first half * gelu(second
  half)) -> Linear(4D, D) -> Dropout(``ff_dropout``). With the MOSI flags ``mpu_share``,
  ``modality_share`` and ``layer_share`` all on there is ONE MPU (both directions, all modalities, all
  layers) and ONE attention pool, as in the original.
- high-level attraction (SimSiam): projectors Linear + BatchNorm1d(affine=False) on the flattened GMC
  tokens (3D), u_l (D_t), u_a (16), u_v (32); predictors Linear(no bias) -> BatchNorm1d -> ReLU ->
  Linear with hidden widths 128 / 256 / 8 / 16.
- low-level reconstruction: Linear(D -> D_t / d_a / d_v) on the final fused sequences.
- prediction: fusion_h = [u_l; u_a; u_v; GMC flat] (B, D_t+16+32+3D = 1200) -> Dropout(0.3) ->
  Linear(1200, 256) -> ReLU -> Linear(256, 256) -> ReLU = x_f (B, 256), the JOINT representation.
  The original's last layer Linear(256, 1) is the toolkit head (LinearHead(256, C), or MACI's MCM head).

``extras`` of a pass: ``z_gmc`` / ``p_gmc`` (B, 3D), ``z_text`` / ``p_text`` (B, D_t), ``z_audio`` /
``p_audio`` (B, 16), ``z_vision`` / ``p_vision`` (B, 32) (projector / predictor outputs, not detached),
``recon_text`` (B, L-1, D_t), ``recon_audio`` (B, T_a, d_a), ``recon_vision`` (B, T_v, d_v),
``gmc_tokens`` (B, 3, D), ``fusion_h`` (B, 1200).

Objective (``trains/missingTask/EMT_DLFR.py``): total = L1(pred on the incomplete view) [the trainer's task
loss] + w_attra * (L_attraction + L1(pred on the complete view)) + w_recon * L_recon, w = 1 / 1 on MOSI.
``objective_terms`` returns
- ``aux_attraction`` = w_attra * sum over {gmc, text, audio, vision} of
  -(cos(p_incomplete, z_complete.detach()).mean() + cos(p_complete, z_incomplete.detach()).mean()) / 2.
  It is a negative cosine as in the original, so it lies in [-4 w, 4 w] and is NOT non-negative;
- ``aux_complete_task`` = w_attra * task_loss(head(complete joint), labels) (the original puts the complete-view
  L1 inside the attraction loss, so it carries the attraction weight);
- ``aux_reconstruction`` = w_recon * sum over modalities of SmoothL1 (sum) over the dropped valid positions /
  (number of such positions * feature width + 1e-6). Targets: the complete view's text-encoder states
  (detached; positions 1..L-1) and the complete raw audio / vision frames. Dropped = valid and not kept
  (``batch.keep``); [CLS] and [SEP] are never dropped.
Every term needs the complete view: with ``batch.complete`` None (the MSSD step passes none) no term is added.
The complete-view prediction goes through the model's head, which the backbone does not own: the trainer
passes it as ``batch.head`` (without one, ``objective_terms`` raises).

Parameters (MOSI, D_t 768, d_a 5, d_v 20): 2,322,522 + 257 * C with the toolkit head (C = 1: 2,322,779, equal
to the original regression model; the count does not depend on the sequence lengths or alignment). No parameter
of the original is left without a gradient. Initialisation: PyTorch defaults, as in the original.

Deviations from the original code:
- Missingness is the toolkit's (feature-level keep masks), not the original's seeded per-position generator;
  the masks used for reconstruction come from ``batch.keep``.
- The LSTMs run over the whole padded sequence and read the output at the last valid frame instead of packing
  by lengths; for a one-directional LSTM over prefix-valid frames (the toolkit's masks) the valid outputs are
  identical. Sequences are not cut to the batch's longest frame count (``pad_packed_sequence``); the extra
  padded positions are only queries, never keys, so valid outputs do not change.
- A modality or a text with no valid position (the original crashes on a zero length): the LSTM reads frame 0
  (a zero frame) as the utterance vector, and attention over an empty key set gives a zero context (weights
  all zero) instead of the original's uniform weights over padding.
- BatchNorm at batch size 1 in training mode (which PyTorch refuses) uses the running statistics, without
  updating them.
- ``text_out`` is the text encoder's width D_t (the original's 768 = BERT width; u_l is the raw [CLS] state).
- Training recipe (not part of the backbone): the original uses Adam with per-module learning rates (BERT 5e-5,
  audio 1e-3, video 1e-4, other 1e-3), weight decays, batch 32 with gradient accumulation over 4 batches and
  selection on the validation loss; the toolkit's trainer decides these.
"""

from __future__ import annotations

import math
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
from cider_mer.models.layers.pooling import masked_softmax
from cider_mer.models.registry import register_backbone
from cider_mer.validation import AT_LEAST_1, FRACTION, NON_NEGATIVE, Range, check_divides, each, one_of, validate_fields

_DROPOUTS = ("audio_dropout", "vision_dropout", "emb_dropout", "attn_dropout", "ff_dropout", "post_fusion_dropout")
_ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
_RECON_LOSSES = {"L1Loss": F.l1_loss, "SmoothL1Loss": F.smooth_l1_loss, "MSELoss": F.mse_loss}
_MODALITIES = ("text", "audio", "vision")


@dataclass
class EmtDlfrConfig:
    """EMT-DLFR hyper-parameters; defaults = ``config_regression.py`` MOSI entry. Shapes come separately."""

    audio_hidden: int = 32  # a_lstm_hidden_size: audio LSTM width
    vision_hidden: int = 64  # v_lstm_hidden_size: vision LSTM width
    audio_layers: int = 1  # a_lstm_layers
    vision_layers: int = 1  # v_lstm_layers
    audio_out: int = 16  # audio_out: audio utterance / frame feature width after the LSTM's Linear
    vision_out: int = 32  # video_out
    audio_dropout: float = 0.0  # a_lstm_dropout: on the audio utterance vector (and between LSTM layers)
    vision_dropout: float = 0.0  # v_lstm_dropout
    d_model: int = 128  # D: the fusion width
    fusion_layers: int = 3  # EMT depth
    heads: int = 4  # attention heads (must divide d_model)
    learnable_pos_emb: bool = False  # True: a learnable (1, max_seq_len, D) position table instead of sinusoids
    max_seq_len: int = 1024  # the learnable position table's length (sinusoids grow as needed)
    emb_dropout: float = 0.0  # after adding positions
    attn_dropout: float = 0.3  # on the attention weights
    ff_dropout: float = 0.1  # at the end of the GEGLU feed-forward
    ff_expansion: int = 4  # feed-forward width multiplier
    mpu_share: bool = True  # one MPU for both directions (GMC <-> sequence)
    modality_share: bool = True  # one MPU for all modalities
    layer_share: bool = True  # one MPU (and one attention pool) for all layers
    attn_act_fn: str = "tanh"  # activation inside the GMC attention pool: relu / sigmoid / tanh
    gmc_pred_dim: int = 128  # gmc_tokens_pred_dim: SimSiam predictor hidden width for the GMC tokens
    text_pred_dim: int = 256  # text predictor hidden width
    audio_pred_dim: int = 8  # audio predictor hidden width
    vision_pred_dim: int = 16  # video_pred_dim
    recon_loss: str = "SmoothL1Loss"  # low-level reconstruction loss: SmoothL1Loss / L1Loss / MSELoss
    attraction_weight: float = 1.0  # loss_attra_weight (also weighs the complete-view task loss)
    reconstruction_weight: float = 1.0  # loss_recon_weight
    post_fusion_dim: int = 256  # J: width of the prediction MLP (the joint representation)
    post_fusion_dropout: float = 0.3  # on fusion_h before the prediction MLP

    RANGES: ClassVar[dict[str, Range]] = {
        **each(("audio_hidden", "vision_hidden", "audio_layers", "vision_layers", "audio_out", "vision_out", "d_model",
                "fusion_layers", "heads", "max_seq_len", "ff_expansion", "gmc_pred_dim", "text_pred_dim",
                "audio_pred_dim", "vision_pred_dim", "post_fusion_dim"), AT_LEAST_1),
        **each(_DROPOUTS, FRACTION),
        **each(("attraction_weight", "reconstruction_weight"), NON_NEGATIVE),
        "attn_act_fn": one_of(*_ACTIVATIONS),
        "recon_loss": one_of(*_RECON_LOSSES),
    }

    def __post_init__(self) -> None:
        validate_fields(self)
        check_divides(self, "heads", "d_model")


# ---------------------------------------------------------------- building blocks


class _BatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d that, in training mode on a single sample, normalises with the running statistics
    (without updating them) instead of refusing the batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


class _FrameEncoder(nn.Module):
    """The original's ``AuViSubNet``: LSTM -> (Dropout on the utterance vector) -> Linear."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, layers: int, dropout: float):
        super().__init__()
        self.rnn = nn.LSTM(in_dim, hidden, num_layers=layers, dropout=dropout if layers > 1 else 0.0,
                           batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(hidden, out_dim) if hidden != out_dim else nn.Identity()

    def forward(self, frames: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frames (B, T, d), valid (B, T) bool (a prefix) -> sequence (B, T, out), utterance (B, out)."""
        states, _ = self.rnn(frames)  # (B, T, H)
        last = (valid.sum(dim=1) - 1).clamp_min(0)  # index of the last valid frame (0 when there is none)
        final = states.gather(1, last[:, None, None].expand(-1, 1, states.shape[-1])).squeeze(1)  # (B, H)
        utterance = self.linear(self.dropout(final))
        sequence = self.linear(states * valid[..., None].to(states.dtype))
        return sequence, utterance


class _Attention(nn.Module):
    """Multi-head attention with bias-free query / key-value maps and a biased output map."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.query = nn.Linear(dim, dim, bias=False)
        self.key_value = nn.Linear(dim, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor, key_valid: Optional[torch.Tensor]) -> torch.Tensor:
        """x (B, N, D) queries, context (B, S, D), key_valid (B, S) bool or None -> (B, N, D).

        A query row with no valid key gets all-zero weights (a zero context before the output map).
        """
        b, n, d = x.shape
        h = self.heads
        q = self.query(x).view(b, n, h, d // h).transpose(1, 2)  # (B, H, N, dh)
        k, v = (t.view(b, -1, h, d // h).transpose(1, 2) for t in self.key_value(context).chunk(2, dim=-1))
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale  # (B, H, N, S)
        if key_valid is None:
            weights = torch.softmax(scores, dim=-1)
        else:
            weights = masked_softmax(scores, key_valid[:, None, None, :])
        weights = self.dropout(weights)
        return self.out(torch.matmul(weights, v).transpose(1, 2).reshape(b, n, d))


class _FeedForward(nn.Module):
    """Linear(D, 2*m*D) -> GEGLU -> Linear(m*D, D) -> Dropout."""

    def __init__(self, dim: int, expansion: int, dropout: float):
        super().__init__()
        self.expand = nn.Linear(dim, 2 * expansion * dim)
        self.contract = nn.Linear(expansion * dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.expand(x).chunk(2, dim=-1)
        return self.dropout(self.contract(value * F.gelu(gate)))


class _MutualPromotionUnit(nn.Module):
    """Half an MPU (the original's depth-1 ``CrossSelfTransformer``), pre-norm:
    x += CrossAttn(LN(x), LN_c(context)); x += SelfAttn(LN(x)); x += FF(LN(x))."""

    def __init__(self, dim: int, heads: int, expansion: int, attn_dropout: float, ff_dropout: float):
        super().__init__()
        self.norm_cross = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.cross_attn = _Attention(dim, heads, attn_dropout)
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = _Attention(dim, heads, attn_dropout)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = _FeedForward(dim, expansion, ff_dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor, valid: Optional[torch.Tensor],
                context_valid: Optional[torch.Tensor]) -> torch.Tensor:
        """x (B, N, D), context (B, S, D), valid (B, N) / context_valid (B, S) bool or None -> (B, N, D)."""
        x = x + self.cross_attn(self.norm_cross(x), self.norm_context(context), context_valid)
        normed = self.norm_self(x)
        x = x + self.self_attn(normed, normed, valid)
        return x + self.ff(self.norm_ff(x))


class _ContextPool(nn.Module):
    """The original's ``NaiveAttention``: softmax over M rows of Linear(F, F) -> act -> Linear(F, 1)."""

    def __init__(self, dim: int, activation: str):
        super().__init__()
        self.hidden = nn.Linear(dim, dim)
        self.act = _ACTIVATIONS[activation]()
        self.score = nn.Linear(dim, 1)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """rows (B, M, F) -> (B, F)."""
        weights = torch.softmax(self.score(self.act(self.hidden(rows))), dim=1)  # (B, M, 1)
        return (weights * rows).sum(dim=1)


def _sinusoids(length: int, dim: int) -> torch.Tensor:
    """(length, dim) table: sin on even channels, cos on odd channels, wavelengths 2*pi .. 10000*2*pi."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table


class _EfficientMultimodalTransformer(nn.Module):
    """EMT: GMC tokens (B, M, D) <-> M sequences, ``depth`` layers, sharing as configured."""

    def __init__(self, config: EmtDlfrConfig, num_modalities: int, longest: int):
        super().__init__()
        d = config.d_model
        self.num_modalities = num_modalities
        self.depth = config.fusion_layers
        self.layer_slots = 1 if config.layer_share else config.fusion_layers
        self.modality_slots = 1 if config.modality_share else num_modalities
        self.direction_slots = 1 if config.mpu_share else 2
        self.units = nn.ModuleList(
            _MutualPromotionUnit(d, config.heads, config.ff_expansion, config.attn_dropout, config.ff_dropout)
            for _ in range(self.layer_slots * self.modality_slots * self.direction_slots)
        )
        self.pools = nn.ModuleList(
            _ContextPool(num_modalities * d, config.attn_act_fn) for _ in range(self.layer_slots)
        )
        if config.learnable_pos_emb:
            self.positions = nn.Parameter(torch.randn(1, config.max_seq_len, d))
        else:
            self.register_buffer("positions", _sinusoids(max(config.max_seq_len, longest), d)[None], persistent=False)
        self.emb_dropout = nn.Dropout(config.emb_dropout)

    def unit(self, layer: int, modality: int, direction: int) -> _MutualPromotionUnit:
        """direction 0: sequence <- GMC tokens; 1: GMC tokens <- sequence."""
        layer = layer if self.layer_slots > 1 else 0
        modality = modality if self.modality_slots > 1 else 0
        direction = direction if self.direction_slots > 1 else 0
        return self.units[(layer * self.modality_slots + modality) * self.direction_slots + direction]

    def add_positions(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > self.positions.shape[1]:
            if isinstance(self.positions, nn.Parameter):
                raise ValueError(f"sequence of {x.shape[1]} steps exceeds max_seq_len {self.positions.shape[1]}")
            self.positions = _sinusoids(x.shape[1], x.shape[-1])[None].to(self.positions.device)
        return self.emb_dropout(x + self.positions[:, : x.shape[1]].to(x.dtype))

    def forward(self, gmc: torch.Tensor, sequences: list[torch.Tensor],
                valids: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """gmc (B, M, D), sequences [(B, T_m, D)], valids [(B, T_m) bool] -> gmc (B, M, D), sequences."""
        b = gmc.shape[0]
        sequences = [self.add_positions(x) for x in sequences]
        for layer in range(self.depth):
            contexts = []
            for m, (x, valid) in enumerate(zip(sequences, valids)):
                new_x = self.unit(layer, m, 0)(x, gmc, valid, None)
                contexts.append(self.unit(layer, m, 1)(gmc, x, None, valid))  # (B, M, D), from the old x
                sequences[m] = new_x
            rows = torch.stack(contexts, dim=1).reshape(b, self.num_modalities, -1)  # (B, M, M*D)
            gmc = self.pools[layer if self.layer_slots > 1 else 0](rows).view(b, self.num_modalities, -1)
        return gmc, sequences


class _Projector(nn.Sequential):
    """SimSiam projector: Linear -> BatchNorm1d(affine=False)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__(nn.Linear(dim_in, dim_out), _BatchNorm1d(dim_out, affine=False))


class _Predictor(nn.Sequential):
    """SimSiam predictor: Linear(no bias) -> BatchNorm1d -> ReLU -> Linear."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int):
        super().__init__(nn.Linear(dim_in, hidden, bias=False), _BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, dim_out))


def _to_model(dim_in: int, dim: int) -> nn.Module:
    return nn.Linear(dim_in, dim, bias=False) if dim_in != dim else nn.Identity()


# ---------------------------------------------------------------- the backbone


@register_backbone(
    "emt_dlfr",
    EmtDlfrConfig,
    description="EMT-DLFR: LSTM audio/vision, efficient multimodal transformer (GMC tokens), SimSiam attraction "
                "and low-level reconstruction",
    source="Sun et al., Efficient Multimodal Transformer with Dual-Level Feature Restoration, IEEE TAC 2023; "
           "sunlicai/EMT-DLFR@e9f0960",
)
class EmtDlfr(Backbone):
    """EMT-DLFR backbone: ``forward(inputs) -> BackboneOutput`` with joint x_f (B, post_fusion_dim)."""

    needs_complete_pass = True

    def __init__(self, config: EmtDlfrConfig, shapes: DataShapes, text_encoder: Optional[nn.Module] = None):
        super().__init__()
        check_text_width(text_encoder, shapes)
        if shapes.text_len < 2:
            raise ValueError(f"text_len must hold at least [CLS] and [SEP], got {shapes.text_len}")
        c, d = config, config.d_model
        self.config = config
        self.shapes = shapes
        self.text_encoder = text_encoder
        self.joint_dim = c.post_fusion_dim
        text_out = shapes.text_dim
        gmc_dim = 3 * d

        self.audio_model = _FrameEncoder(shapes.audio_dim, c.audio_hidden, c.audio_out, c.audio_layers, c.audio_dropout)
        self.video_model = _FrameEncoder(shapes.vision_dim, c.vision_hidden, c.vision_out, c.vision_layers,
                                         c.vision_dropout)
        self.proj_audio = _to_model(c.audio_out, d)
        self.proj_video = _to_model(c.vision_out, d)
        self.proj_text = _to_model(text_out, d)
        longest = max(shapes.text_len - 1, shapes.audio_len, shapes.vision_len)
        self.fusion = _EfficientMultimodalTransformer(c, num_modalities=3, longest=longest)

        self.gmc_projector = _Projector(gmc_dim, gmc_dim)
        self.text_projector = _Projector(text_out, text_out)
        self.audio_projector = _Projector(c.audio_out, c.audio_out)
        self.video_projector = _Projector(c.vision_out, c.vision_out)
        self.gmc_predictor = _Predictor(gmc_dim, c.gmc_pred_dim, gmc_dim)
        self.text_predictor = _Predictor(text_out, c.text_pred_dim, text_out)
        self.audio_predictor = _Predictor(c.audio_out, c.audio_pred_dim, c.audio_out)
        self.video_predictor = _Predictor(c.vision_out, c.vision_pred_dim, c.vision_out)

        self.recon_text = nn.Linear(d, shapes.text_dim)
        self.recon_audio = nn.Linear(d, shapes.audio_dim)
        self.recon_video = nn.Linear(d, shapes.vision_dim)

        self.post_fusion_dropout = nn.Dropout(c.post_fusion_dropout)
        self.post_fusion_layer_1 = nn.Linear(text_out + c.audio_out + c.vision_out + gmc_dim, c.post_fusion_dim)
        self.post_fusion_layer_2 = nn.Linear(c.post_fusion_dim, c.post_fusion_dim)
        # post_fusion_layer_3 = Linear(post_fusion_dim, C) is the toolkit head.

    def forward(self, inputs: ModelInputs, need_recon: bool = False) -> BackboneOutput:
        """Joint x_f (B, J), text states (B, L, D_t), extras as in the module docstring.

        Reconstructions of the fused sequences are always in ``extras`` (``need_recon`` is ignored: they are the
        model's own objective, not CIDer's MSSD format).
        """
        states = self.encode_text(inputs)  # (B, L, D_t)
        text_utt, text_seq = states[:, 0], states[:, 1:]  # (B, D_t), (B, L-1, D_t)
        words = (inputs.text_mask.sum(dim=1) - 2).clamp_min(0)  # real words, [CLS]/[SEP] excluded
        text_valid = torch.arange(text_seq.shape[1], device=states.device)[None, :] < words[:, None]  # (B, L-1)
        audio_valid = inputs.audio_mask > 0
        vision_valid = inputs.vision_mask > 0
        audio_seq, audio_utt = self.audio_model(inputs.audio, audio_valid)  # (B, T_a, a_out), (B, a_out)
        video_seq, video_utt = self.video_model(inputs.vision, vision_valid)  # (B, T_v, v_out), (B, v_out)

        gmc = torch.stack([self.proj_text(text_utt), self.proj_audio(audio_utt), self.proj_video(video_utt)], dim=1)
        sequences = [self.proj_text(text_seq), self.proj_audio(audio_seq), self.proj_video(video_seq)]
        gmc, fused = self.fusion(gmc, sequences, [text_valid, audio_valid, vision_valid])
        gmc_flat = gmc.reshape(gmc.shape[0], -1)  # (B, 3D)

        extras = {
            "gmc_tokens": gmc,
            "z_gmc": (z_gmc := self.gmc_projector(gmc_flat)),
            "p_gmc": self.gmc_predictor(z_gmc),
            "z_text": (z_text := self.text_projector(text_utt)),
            "p_text": self.text_predictor(z_text),
            "z_audio": (z_audio := self.audio_projector(audio_utt)),
            "p_audio": self.audio_predictor(z_audio),
            "z_vision": (z_vision := self.video_projector(video_utt)),
            "p_vision": self.video_predictor(z_vision),
            "recon_text": self.recon_text(fused[0]),  # (B, L-1, D_t)
            "recon_audio": self.recon_audio(fused[1]),  # (B, T_a, d_a)
            "recon_vision": self.recon_video(fused[2]),  # (B, T_v, d_v)
        }
        fusion_h = torch.cat([text_utt, audio_utt, video_utt, gmc_flat], dim=-1)  # (B, D_t + a_out + v_out + 3D)
        extras["fusion_h"] = fusion_h
        hidden = F.relu(self.post_fusion_layer_1(self.post_fusion_dropout(fusion_h)))
        joint = F.relu(self.post_fusion_layer_2(hidden))  # x_f (B, J)
        return BackboneOutput(joint=joint, text_states=states, extras=extras)

    def objective_terms(self, batch: ObjectiveBatch) -> dict[str, torch.Tensor]:
        """``aux_attraction``, ``aux_complete_task`` (both x attraction_weight) and ``aux_reconstruction``
        (x reconstruction_weight); see the module docstring."""
        if batch.complete is None:  # e.g. under MSSD, whose trainer step passes no complete view
            return {}
        head = batch.head
        if head is None:
            raise RuntimeError("EMT-DLFR's complete-view task loss needs the model's head: pass an ObjectiveBatch "
                               "with a `head`")
        missing, complete = batch.incomplete.extras, batch.complete.extras
        attraction = 0.0
        for name in ("gmc", "text", "audio", "vision"):
            to_complete = F.cosine_similarity(missing[f"p_{name}"], complete[f"z_{name}"].detach(), dim=1).mean()
            to_missing = F.cosine_similarity(complete[f"p_{name}"], missing[f"z_{name}"].detach(), dim=1).mean()
            attraction = attraction - 0.5 * (to_complete + to_missing)
        complete_task = batch.task_loss(head(batch.complete.joint), batch.labels)

        inputs, keep = batch.inputs, batch.keep
        targets = {
            "text": (batch.complete.text_states[:, 1:].detach(), inputs.text_mask[:, 1:].bool() & ~keep.text[:, 1:]),
            "audio": (inputs.audio, inputs.audio_mask.bool() & ~keep.audio),
            "vision": (inputs.vision, inputs.vision_mask.bool() & ~keep.vision),
        }
        loss_fn = _RECON_LOSSES[self.config.recon_loss]
        reconstruction = 0.0
        for name, (target, dropped) in targets.items():
            pred = missing[f"recon_{name}"]
            steps = min(pred.shape[1], target.shape[1])
            pred, target, dropped = pred[:, :steps], target[:, :steps], dropped[:, :steps]
            weight = dropped[..., None].to(pred.dtype)
            total = loss_fn((pred * weight).float(), (target.to(pred.dtype) * weight).float(), reduction="sum")
            reconstruction = reconstruction + total / (weight.sum() * pred.shape[-1] + 1e-6)
        c = self.config
        return {
            "aux_attraction": c.attraction_weight * attraction,
            "aux_complete_task": c.attraction_weight * complete_task,
            "aux_reconstruction": c.reconstruction_weight * reconstruction,
        }

