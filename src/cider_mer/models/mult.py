"""MulT, the Multimodal Transformer (Tsai et al., ACL 2019), in MMSA's BERT-text version.

Re-implemented from the notes ``design/baselines/mult_dlf.md`` §1-2 (MulT-MMSA: thuiar/MMSA@a94e65d,
``models/singleTask/MULT.py``, MOSI config ``mult``). Defaults are MMSA's MOSI values. Shapes for
MOSI unaligned (L = 50, T_a = 375, T_v = 500, d_a = 5, d_v = 20, D_t = 768, d = 50, k = 5):

1. text states (B, L, D_t) from the toolkit's text encoder -> dropout(``text_dropout`` 0.5);
   audio (B, T_a, d_a), vision (B, T_v, d_v) without dropout.
2. Conv1d(d_m -> d, k = 5, no padding, no bias) per modality: l (B, 46, d), a (B, 371, d), v (B, 496, d).
3. Six cross-modal encoders ``Enc(d, N = 4)`` (:class:`CrossmodalEncoder`, query <- key/value):
   l<-a, l<-v (46 steps), a<-l, a<-v (371), v<-l, v<-a (496). Attention dropout by the pair's type,
   as MMSA's ``get_network``: la / va use ``attn_dropout_a``, lv / av ``attn_dropout_v``, al / vl
   ``attn_dropout``.
4. Per target modality the two outputs are concatenated, (B, T'_m, 2d), and go through a self-attention
   memory encoder ``Enc(2d, max(N, 3))`` (``attn_dropout``); its last step gives h_m (B, 2d).
5. last_hs = [h_l; h_a; h_v] (B, 6d = 300);
   z = proj2(dropout(ReLU(proj1(last_hs)), ``output_dropout``)) + last_hs, proj1 / proj2 Linear(6d, 6d).
6. z (B, 300) is the joint representation (notes §2.8: the residual block's output, fed straight into
   MMSA's out_layer). The out_layer Linear(6d, C) is the toolkit's head, not part of this module.

Every encoder: h = 10 heads, relu / res dropout 0.0, embed dropout 0.2, causal masks on (MMSA
``attn_mask``), **no positional embedding** (MMSA turns it off; ``positions=True`` gives MulT-orig's).

Parameters (the head's included): d (k_l D_t + k_a d_a + k_v d_v) + 6 E(d, N) + 3 E(2d, max(N, 3))
+ 2 (36 d^2 + 6 d) + (6d + 1) C = 2,571,250 + 301 C at the MOSI setting (2,571,551 for regression),
identical for aligned data; E(d, N) = N (12 d^2 + 13 d) + 2 d.

Loss (notes §2.5): MMSA trains only the task loss -- L1 on the (B, 1) score for regression,
cross-entropy on the (B, C) logits for classification -- so :meth:`objective_terms` is empty.
MMSA's recipe: Adam lr 2e-3 without weight decay, batch 16 with gradient accumulation over 8
batches (both the registered defaults: ``TrainConfig.lr``/``batch_size``/``grad_accumulation``), and,
not reproduced, clip_grad_value 0.6, ReduceLROnPlateau(factor 0.1, patience 5), early stop after 8
epochs. MMSA drops a trailing group of fewer than 8 batches; the trainer steps on it. All parameters
train; none is left without a gradient.

Deviations from MMSA:
- Padding. MMSA attends everywhere and pools the literal last step (its lengths never reach the
  model). By default (``mask_padding=True``) this module masks padding instead: a conv output step is
  valid when its k-step window holds at least one valid input; invalid steps are excluded as keys from
  every encoder (``source_padding``) and h_m is the memory encoder's *last valid* step (zeros when the
  modality has no valid step, e.g. a fully padded sample). ``mask_padding=False`` is MMSA's behaviour.
- Inputs at padded positions are zeroed and every modality is right-padded (zeros, mask 0) back to its
  nominal length from :class:`DataShapes` before the convs. So the sequence lengths -- and with them the
  cross-modal causal masks, whose offset |T_k - T_q| depends on them -- are those of the original, and a
  batch cut by ``ModelInputs.trim_text`` gives exactly the same outputs (in both padding modes). MMSA's
  text features at padded positions are the encoder's [PAD] outputs; here they are zeros (the toolkit's
  encoder returns zeros there too).
- A modality shorter than its conv kernel (e.g. audio and video absent from a text-only file, stored
  as one zero frame) is padded (zeros, mask 0) to the kernel's width; MMSA needs at least k steps.
- Missingness is the toolkit's (missing tokens [UNK], missing frames zero vectors, masks unchanged).
- Text comes from the toolkit's encoder (MMSA: frozen BERT or its pre-extracted BERT features).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
from torch import nn
from torch.nn import functional as F

from cider_mer.models.interface import Backbone, BackboneOutput, DataShapes, ModelInputs, check_text_width
from cider_mer.models.layers.crossmodal import CrossmodalEncoder
from cider_mer.models.registry import register_backbone
from cider_mer.validation import AT_LEAST_1, FRACTION, Range, check_divides, each, validate_fields

_DROPOUTS = ("attn_dropout", "attn_dropout_a", "attn_dropout_v", "relu_dropout", "res_dropout",
             "embed_dropout", "text_dropout", "output_dropout")


@dataclass
class MultConfig:
    """MulT-MMSA hyper-parameters; defaults: MMSA ``config_regression.json`` key ``mult``, MOSI."""

    dim: int = 50  # d, the common width (dst_feature_dim_nheads[0]); memory encoders are 2d wide
    heads: int = 10  # attention heads (dst_feature_dim_nheads[1]); must divide d
    layers: int = 4  # N = nlevels, cross-modal encoder depth; memory encoders have max(N, 3) layers
    conv_kernel_l: int = 5  # conv1d_kernel_size_l (no padding: T' = T - k + 1)
    conv_kernel_a: int = 5  # conv1d_kernel_size_a
    conv_kernel_v: int = 5  # conv1d_kernel_size_v
    attn_dropout: float = 0.3  # al / vl cross-modal encoders and the three memory encoders
    attn_dropout_a: float = 0.2  # la / va encoders (audio as key/value towards l, v)
    attn_dropout_v: float = 0.0  # lv / av encoders
    relu_dropout: float = 0.0  # encoder FFN
    res_dropout: float = 0.0  # encoder residual branches
    embed_dropout: float = 0.2  # encoder inputs (query, and key / value copies independently)
    text_dropout: float = 0.5  # on the text states before the text conv
    output_dropout: float = 0.5  # inside the proj1 / proj2 residual block
    causal: bool = True  # MMSA's attn_mask: causal masks in every encoder
    positions: bool = False  # sinusoidal positions (off in MMSA, on in MulT-orig)
    mask_padding: bool = True  # toolkit deviation: mask padded keys, pool the last valid step (False: MMSA)
    # Auxiliary losses: none (MMSA's MulT trains the task loss only).

    RANGES: ClassVar[dict[str, Range]] = {
        **each(("dim", "heads", "layers", "conv_kernel_l", "conv_kernel_a", "conv_kernel_v"), AT_LEAST_1),
        **each(_DROPOUTS, FRACTION),
    }

    def __post_init__(self) -> None:
        validate_fields(self)
        check_divides(self, "heads", "dim")


def _to_length(x: torch.Tensor, mask: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero the invalid steps of x (B, T, c) and right-pad x and mask (B, T) to ``length`` steps."""
    valid = mask > 0
    x = x * valid.unsqueeze(-1).to(x.dtype)
    short = length - x.shape[1]
    if short > 0:
        x = F.pad(x, (0, 0, 0, short))
        valid = F.pad(valid, (0, short), value=False)
    return x, valid


def _window_valid(valid: torch.Tensor, kernel: int) -> torch.Tensor:
    """(B, T) bool -> (B, T - k + 1): a conv output step is valid when its window holds a valid input."""
    if kernel == 1:
        return valid
    return F.max_pool1d(valid.float().unsqueeze(1), kernel_size=kernel, stride=1).squeeze(1) > 0


def _last_valid(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """x (B, T, c), valid (B, T) bool -> x at each sample's last valid step (B, c); zeros without one."""
    steps = torch.arange(1, x.shape[1] + 1, device=x.device)
    index = (valid.long() * steps).argmax(dim=1)  # (B,), 0 when nothing is valid
    picked = x[torch.arange(x.shape[0], device=x.device), index]
    return picked * valid.any(dim=1, keepdim=True).to(x.dtype)


@register_backbone(
    "mult",
    MultConfig,
    description="MulT: pairwise cross-modal transformers, memory transformers, last-step fusion (MMSA's BERT version)",
    source="Tsai et al., ACL 2019; thuiar/MMSA@a94e65d (MULT), yaohungt/Multimodal-Transformer@a670936",
    lr_default=2e-3,  # MMSA's Adam lr 0.002 (trains/singleTask/MULT.py:21)
    batch_default=16, accumulation_default=8,  # batch 16, one step per 8 batches (update_epochs, MULT.py:40-45,66-68)
)
class MulT(Backbone):
    """MulT-MMSA backbone: ``forward(inputs) -> BackboneOutput`` with joint (B, 6d).

    ``extras``: ``h_l``, ``h_a``, ``h_v`` (B, 2d) the memory encoders' pooled steps (MMSA's
    Feature_t / _a / _v) and ``last_hs`` (B, 6d) their concatenation (Feature_f).
    """


    def __init__(self, config: MultConfig, shapes: DataShapes, text_encoder: Optional[nn.Module] = None):
        super().__init__()
        check_text_width(text_encoder, shapes)
        kernels = (config.conv_kernel_l, config.conv_kernel_a, config.conv_kernel_v)
        # A modality shorter than its kernel (an absent one is stored as one zero frame) is padded to
        # the kernel's width: one conv step, which the padding mask excludes.
        lengths = tuple(max(n, k) for n, k in zip((shapes.text_len, shapes.audio_len, shapes.vision_len), kernels))
        d = config.dim
        self.config = config
        self.shapes = shapes
        self.text_encoder = text_encoder
        self.joint_dim = 6 * d
        self.lengths = lengths
        self.kernels = kernels

        # Conv projections run only when the input width differs from d (as in MMSA).
        def conv(width: int, kernel: int) -> Optional[nn.Conv1d]:
            return None if width == d else nn.Conv1d(width, d, kernel_size=kernel, padding=0, bias=False)

        self.proj_l = conv(shapes.text_dim, config.conv_kernel_l)
        self.proj_a = conv(shapes.audio_dim, config.conv_kernel_a)
        self.proj_v = conv(shapes.vision_dim, config.conv_kernel_v)

        def encoder(dim: int, attn_dropout: float, layers: int) -> CrossmodalEncoder:
            return CrossmodalEncoder(dim, config.heads, layers, attn_dropout=attn_dropout,
                                     relu_dropout=config.relu_dropout, res_dropout=config.res_dropout,
                                     embed_dropout=config.embed_dropout, causal=config.causal,
                                     positions=config.positions)

        n, mem = config.layers, max(config.layers, 3)
        self.trans_l_with_a = encoder(d, config.attn_dropout_a, n)
        self.trans_l_with_v = encoder(d, config.attn_dropout_v, n)
        self.trans_a_with_l = encoder(d, config.attn_dropout, n)
        self.trans_a_with_v = encoder(d, config.attn_dropout_v, n)
        self.trans_v_with_l = encoder(d, config.attn_dropout, n)
        self.trans_v_with_a = encoder(d, config.attn_dropout_a, n)
        self.trans_l_mem = encoder(2 * d, config.attn_dropout, mem)
        self.trans_a_mem = encoder(2 * d, config.attn_dropout, mem)
        self.trans_v_mem = encoder(2 * d, config.attn_dropout, mem)
        self.proj1 = nn.Linear(6 * d, 6 * d)
        self.proj2 = nn.Linear(6 * d, 6 * d)

    @staticmethod
    def _project(conv: Optional[nn.Conv1d], x: torch.Tensor) -> torch.Tensor:
        """(B, T, c) -> (B, T - k + 1, d) through the channel-first conv (identity when None)."""
        return x if conv is None else conv(x.transpose(1, 2)).transpose(1, 2)

    def forward(self, inputs: ModelInputs, need_recon: bool = False) -> BackboneOutput:
        """Joint z (B, 6d), text states (B, L, D_t); extras h_l / h_a / h_v (B, 2d), last_hs (B, 6d).

        Internally (MOSI unaligned): l (B, 46, d), a (B, 371, d), v (B, 496, d); per target the
        concatenated cross-modal outputs (B, T'_m, 2d) go through the memory encoder.
        """
        cfg = self.config
        text_states = self.encode_text(inputs)
        text, text_valid = _to_length(text_states, inputs.text_mask, self.lengths[0])
        audio, audio_valid = _to_length(inputs.audio, inputs.audio_mask, self.lengths[1])
        vision, vision_valid = _to_length(inputs.vision, inputs.vision_mask, self.lengths[2])
        text = F.dropout(text, p=cfg.text_dropout, training=self.training)

        l = self._project(self.proj_l, text)  # (B, T'_l, d)
        a = self._project(self.proj_a, audio)  # (B, T'_a, d)
        v = self._project(self.proj_v, vision)  # (B, T'_v, d)
        if cfg.mask_padding:
            valid_l = _window_valid(text_valid, self.kernels[0]) if self.proj_l is not None else text_valid
            valid_a = _window_valid(audio_valid, self.kernels[1]) if self.proj_a is not None else audio_valid
            valid_v = _window_valid(vision_valid, self.kernels[2]) if self.proj_v is not None else vision_valid
            pad_l, pad_a, pad_v = ~valid_l, ~valid_a, ~valid_v
        else:
            pad_l = pad_a = pad_v = None

        h_ls = torch.cat([self.trans_l_with_a(l, a, pad_a), self.trans_l_with_v(l, v, pad_v)], dim=-1)
        h_as = torch.cat([self.trans_a_with_l(a, l, pad_l), self.trans_a_with_v(a, v, pad_v)], dim=-1)
        h_vs = torch.cat([self.trans_v_with_l(v, l, pad_l), self.trans_v_with_a(v, a, pad_a)], dim=-1)
        h_ls = self.trans_l_mem(h_ls, source_padding=pad_l)  # (B, T'_l, 2d)
        h_as = self.trans_a_mem(h_as, source_padding=pad_a)
        h_vs = self.trans_v_mem(h_vs, source_padding=pad_v)
        if cfg.mask_padding:
            h_l, h_a, h_v = _last_valid(h_ls, ~pad_l), _last_valid(h_as, ~pad_a), _last_valid(h_vs, ~pad_v)
        else:
            h_l, h_a, h_v = h_ls[:, -1], h_as[:, -1], h_vs[:, -1]

        last_hs = torch.cat([h_l, h_a, h_v], dim=-1)  # (B, 6d)
        hidden = F.dropout(F.relu(self.proj1(last_hs)), p=cfg.output_dropout, training=self.training)
        joint = self.proj2(hidden) + last_hs
        return BackboneOutput(joint=joint, text_states=text_states,
                              extras={"h_l": h_l, "h_a": h_a, "h_v": h_v, "last_hs": last_hs})

