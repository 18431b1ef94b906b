"""DLF, Disentangled-Language-Focused multimodal sentiment analysis (Wang et al., AAAI 2025).

Re-implemented from the notes ``design/baselines/mult_dlf.md`` §1, §3 and §4 (repository
pwang322/DLF@251bf2c). Every encoder is the fairseq-style
:class:`~cider_mer.models.layers.crossmodal.CrossmodalEncoder` ``Enc(d, N)`` (pre-LN, sinusoidal
positions, causal masks, no key-padding mask). Shapes for MOSI unaligned (L = 50, T_a = 375,
T_v = 500, k = 5, d = 50): T'_l = 46, T'_a = 371, T'_v = 496; F_m = d T'_m.

1. Extraction. Text-encoder states (B, L, D_t) -> dropout(``text_dropout``); audio (B, T_a, d_a),
   vision (B, T_v, d_v). One bias-free Conv1d(k = 5, no padding) per modality to d:
   ``origin_m`` (B, T'_m, d).
2. Disentanglement. ``s_m = encoder_s_m(origin_m)`` (modality-specific, one encoder per modality);
   ``c_m = encoder_c(origin_m)`` (modality-shared: ONE encoder for all three); each (B, T'_m, d).
3. ``c_m_sim = align_c_m(c_m flattened channel-major)`` (B, d): c_m viewed as (B, d, T'_m), then
   flattened to F_m, as the original does. Used only by the triplet loss.
4. Reconstruction. ``recon_m = decoder_m([s_m ; c_m])`` (Conv1d(2d -> d, k = 1, no bias)),
   (B, T'_m, d); ``s_m_r = encoder_s_m(recon_m)``, the same specific encoder applied again.
5. Shared (homogeneous) branch. ``c_m_att = self_attentions_c_m(c_m)`` at the last time step
   (B, d); ``c_fusion = [c_l ; c_v ; c_a]`` (B, 3d); ``c_proj = proj2_c(drop(ReLU(proj1_c(.)))) +
   c_fusion``; ``logits_c = out_layer_c(c_proj)`` (B, C).
6. Language-focused attractor. Every query is the text-specific sequence s_l:
   ``h_l = trans_l_mem(s_l)[:, -1]``; ``h_a = trans_a_mem(trans_l_with_a(s_l, s_a))[:, -1]``;
   ``h_v = trans_v_mem(trans_l_with_v(s_l, s_v))[:, -1]``, each (B, d). trans_a_mem and
   trans_v_mem have max(N, 3) layers.
7. Specific (heterogeneous) branches: ``hp_m = proj2_m_high(drop(ReLU(proj1_m_high(h_m)))) + h_m``;
   ``logits_m_hetero = out_layer_m_high(hp_m)`` (B, C).
8. Fusion: ``z0 = [σ(projector_l(hp_l)) ; σ(projector_v(hp_v)) ; σ(projector_a(hp_a)) ;
   σ(projector_c(c_fusion))]`` (B, 6d) -- projector_c takes the pre-residual c_fusion, as the
   original; ``joint = z = proj2(drop(ReLU(proj1(z0)))) + z0`` (B, 6d = 300).

The joint representation (notes §3.8) is ``z`` = the original's ``last_hs_proj``, the output of
the final residual block. The original's ``out_layer`` Linear(6d, C) is the toolkit's head
(LinearHead(300, C), or MACI's MCM head on z), so ``joint_dim = 6d`` and the parameter count of
backbone + LinearHead equals the original's (10,750,808 for MOSI unaligned, C = 1).
The other output layers (out_layer_c, out_layer_{l,v,a}_high and the dead out_layer_{l,v,a}_low)
have width C = ``shapes.num_classes`` ("all 8 output layers widened to C", notes §3.6).

``BackboneOutput.extras`` (all batch-first): ``origin_m``, ``s_m``, ``c_m``, ``recon_m``, ``s_m_r``
(B, T'_m, d); ``c_m_sim`` (B, d); ``logits_c``, ``logits_m_hetero`` (B, C); m in l, a, v.

Objective (notes §3.4; :meth:`DLF.objective_terms`, each term already weighted; the trainer adds
the head's task loss on z, the original's ``L1(output)``):
- ``aux_homo`` = 1 · task(logits_c); ``aux_hetero_l`` = **3** · task(logits_l_hetero);
  ``aux_hetero_v`` = 1 · task(logits_v_hetero); ``aux_hetero_a`` = 1 · task(logits_a_hetero);
  task is ``batch.task_loss``: L1 for regression (the original), cross-entropy on raw logits for
  the 3/7-class tasks (the notes' adaptation, §3.6);
- ``aux_recon`` = 0.1 · Σ_m MSE(recon_m, origin_m) (origin_m NOT detached: it trains the convs and
  the text encoder too, as the original);
- ``aux_specific`` = 0.1 · Σ_m MSE(s_m, s_m_r);
- ``aux_ortho`` = 0.01 · Σ_m CosineEmbeddingLoss(s_m rows, c_m rows, target -1, margin 0): the mean
  over (time, sample) rows of width d of max(0, cos);
- ``aux_triplet`` = 0.01 · the label-margin hinge over the 3B vectors c_m_sim (notes §3.4): for each
  anchor, positives = the other vectors whose label is exactly equal, negatives = all others; the
  anchor's loss is the mean over (positive, negative) pairs of
  max(0, 0.15 |y_a - y_n| - cos(a, p) + cos(a, n)); the result is the mean over anchors that have
  both, 0 when none has. Cosines use norm max(sqrt(|x|² + 1e-8), 1e-8), as the original. For the
  class tasks the labels are class ids, so the margin is 0.15 per class step (an adaptation, §3.6).
All terms come from the one (incomplete) pass, so ``needs_complete_pass`` is False.

Odd original behaviour, reproduced:
- Dead parameters (notes §4.2): ``proj_cosine_{l,v,a}`` and ``trans_{a,v}_with_{l,v/a}`` (the four
  cross-modal encoders that do not attend from text) are never called; the low branch
  ``proj1/proj2/out_layer_{l,v,a}_low`` is computed by the original and its result thrown away.
  They are all built and counted (7,184,703 parameters, 67 %, of the MOSI unaligned count at C = 1)
  and never receive a gradient (:data:`UNTRAINED_MODULES`). The low branch is not evaluated here
  (its output never reached any loss or prediction, so nothing observable changes except that
  its dropout does not consume random numbers).
- The flatten-Linear layers (align_c, proj_cosine, *_low) fix the sequence lengths: the model is
  built for ``shapes``' lengths and refuses longer inputs.
- No padding mask anywhere (the original attends over padding and frames it never masks); the
  readouts take the LAST time step of each sequence regardless of where the real steps end.
  The causal masks hide only ``j >= i + 1 + |T_k - T_q|`` (little for cross-modal pairs).
- Dropout on the text-encoder states (0.5) before the text conv.

Deviations from the original:
- Inputs shorter than the built lengths (a batch trimmed to its longest text) are zero-padded at
  the end, and padded positions of every modality are zeroed first (the toolkit's text encoder
  already returns zero states for padding; the original fed BERT's states of [PAD] tokens). So a
  trimmed batch gives exactly the output of the untrimmed one.
- Missingness is the toolkit's feature-level one ([UNK] tokens, zero frames); the original trained
  on complete data only.
- The low branch is not evaluated (see above); the distillation kernels built by the original
  ``run.py`` never reached the model or optimiser and are not built (notes §3.5).
- A modality shorter than its conv kernel (e.g. audio and video absent from a text-only file, stored
  as one zero frame) is zero-padded to the kernel's width, so its conv gives one step computed from
  zeros (the original needs at least k steps). Lengths of at least k are unchanged.
- Training recipe: lr 1e-4 and batches of 16 whose gradients are summed over 10 batches per step are
  the registered defaults; the trainer also steps on a trailing group of fewer than 10 batches (the
  original drops it). Its plateau schedule and clip_grad_value 0.6 are not reproduced.
- Everything is batch-first; the original is sequence-first. Element order within the losses'
  means differs, their values do not.
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
from cider_mer.models.layers.crossmodal import CrossmodalEncoder
from cider_mer.models.registry import register_backbone
from cider_mer.validation import AT_LEAST_1, FRACTION, NON_NEGATIVE, Range, check_divides, each, validate_fields

MODALITIES = ("l", "a", "v")

# Modules the original builds (and counts) but never trains: never called, or their result is discarded.
UNTRAINED_MODULES = (
    "proj_cosine_l", "proj_cosine_v", "proj_cosine_a",
    "trans_a_with_l", "trans_a_with_v", "trans_v_with_l", "trans_v_with_a",
    "proj1_l_low", "proj2_l_low", "out_layer_l_low",
    "proj1_v_low", "proj2_v_low", "out_layer_v_low",
    "proj1_a_low", "proj2_a_low", "out_layer_a_low",
)

_DROPOUTS = ("attn_dropout", "attn_dropout_a", "attn_dropout_v", "relu_dropout", "embed_dropout", "res_dropout",
             "text_dropout", "output_dropout")
_WEIGHTS = ("homo_weight", "hetero_text_weight", "hetero_audio_weight", "hetero_vision_weight", "recon_weight",
            "specific_weight", "ortho_weight", "triplet_weight")


@dataclass
class DlfConfig:
    """DLF hyper-parameters; defaults are the repository's MOSI setting (config.json, DLF/mosi)."""

    dim: int = 50  # d, every encoder's width (dst_feature_dim_nheads[0])
    heads: int = 10  # attention heads; must divide dim (dst_feature_dim_nheads[1])
    layers: int = 2  # N = nlevels: depth of every encoder except trans_a_mem / trans_v_mem
    mem_layers: int = 3  # trans_a_mem / trans_v_mem have max(layers, mem_layers) layers
    kernel_text: int = 5  # conv1d_kernel_size_l
    kernel_audio: int = 5  # conv1d_kernel_size_a
    kernel_vision: int = 5  # conv1d_kernel_size_v
    attn_dropout: float = 0.3  # text-typed encoders (s_l, c, c-self-attention l, memories)
    attn_dropout_a: float = 0.2  # audio-typed encoders (s_a, c-self-attention a, trans_l_with_a)
    attn_dropout_v: float = 0.0  # vision-typed encoders (s_v, c-self-attention v, trans_l_with_v)
    relu_dropout: float = 0.0  # encoder feed-forward
    embed_dropout: float = 0.2  # encoder inputs (and each of the key / value copies)
    res_dropout: float = 0.0  # encoder residual branches
    text_dropout: float = 0.5  # on the text-encoder states before the text conv
    output_dropout: float = 0.5  # inside every proj1/proj2 residual block
    causal: bool = True  # attn_mask: causal masks in every encoder
    positions: bool = True  # sinusoidal positions in every encoder
    # Auxiliary-loss weights (trains/singleTask/DLF.py; the main output's L1 has weight 1, in the trainer).
    homo_weight: float = 1.0  # task loss of logits_c
    hetero_text_weight: float = 3.0  # task loss of logits_l_hetero
    hetero_audio_weight: float = 1.0  # task loss of logits_a_hetero
    hetero_vision_weight: float = 1.0  # task loss of logits_v_hetero
    recon_weight: float = 0.1  # L_r, reconstruction of the conv features
    specific_weight: float = 0.1  # L_s, specific consistency
    ortho_weight: float = 0.01  # L_o = 0.1 * 0.1, orthogonality of s_m and c_m
    triplet_weight: float = 0.01  # L_m = 0.1 * 0.1, label-margin hinge on c_m_sim
    triplet_margin_scale: float = 0.15  # the hinge margin per unit of label distance

    RANGES: ClassVar[dict[str, Range]] = {
        **each(("dim", "heads", "layers", "mem_layers", "kernel_text", "kernel_audio", "kernel_vision"), AT_LEAST_1),
        **each(_DROPOUTS, FRACTION),
        **each(_WEIGHTS + ("triplet_margin_scale",), NON_NEGATIVE),
    }

    def __post_init__(self) -> None:
        validate_fields(self)
        check_divides(self, "heads", "dim")


def _over_time(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A channel-first Conv1d on (B, T, C) -> (B, T', C')."""
    return layer(x.transpose(1, 2)).transpose(1, 2)


def _fit(x: torch.Tensor, mask: torch.Tensor, length: int, name: str) -> torch.Tensor:
    """(B, T, d) with padding zeroed, right-padded with zeros to ``length`` steps."""
    if x.shape[1] > length:
        raise ValueError(f"DLF was built for {name} length {length} (its flatten layers fix it), got {x.shape[1]}")
    x = x * mask[:, : x.shape[1], None].to(x.dtype)
    return F.pad(x, (0, 0, 0, length - x.shape[1])) if x.shape[1] < length else x


def _residual_block(first: nn.Linear, second: nn.Linear, x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """second(dropout(ReLU(first(x)))) + x."""
    return second(F.dropout(F.relu(first(x)), p=p, training=training)) + x


def label_margin_hinge(feats: torch.Tensor, labels: torch.Tensor, scale: float = 0.15,
                       chunk_elements: int = 1 << 22) -> torch.Tensor:
    """DLF's triplet hinge (notes §3.4) on vectors ``feats`` (N, F) with labels (N,) -> scalar.

    Anchor i, positive p (same label, p != i), negative n (other label): the anchor's loss is the
    mean over (p, n) of max(0, scale |y_i - y_n| - cos(i, p) + cos(i, n)); the result is the mean
    over anchors with at least one positive and one negative (0 when there is none). Anchors are
    processed in chunks of at most ``chunk_elements`` (anchor, p, n) triples.
    """
    feats = feats.float()
    labels = labels.reshape(-1).to(feats.dtype)
    n = feats.shape[0]
    norm = torch.sqrt(feats.pow(2).sum(dim=1) + 1e-8).clamp_min(1e-8)
    unit = feats / norm[:, None]
    cos = unit @ unit.t()  # (N, N)
    same = labels[:, None] == labels[None, :]
    positive = same & ~torch.eye(n, dtype=torch.bool, device=feats.device)
    negative = ~same
    margin = scale * (labels[:, None] - labels[None, :]).abs()  # (N, N)
    step = max(1, chunk_elements // max(n * n, 1))
    per_anchor, counts = [], []
    for start in range(0, n, step):
        rows = slice(start, start + step)
        # terms[i, p, q] = margin[i, q] - cos[i, p] + cos[i, q]
        terms = F.relu(margin[rows, None, :] - cos[rows, :, None] + cos[rows, None, :])
        pairs = positive[rows, :, None] & negative[rows, None, :]
        per_anchor.append((terms * pairs).sum(dim=(1, 2)))
        counts.append(pairs.sum(dim=(1, 2)))
    total, count = torch.cat(per_anchor), torch.cat(counts)
    valid = count > 0
    mean_per_anchor = total / count.clamp_min(1)
    return (mean_per_anchor * valid).sum() / valid.sum().clamp_min(1)


@register_backbone(
    "dlf",
    DlfConfig,
    description="DLF: specific/shared disentanglement, language-focused attractor, 4-branch fusion",
    source="Wang et al., Disentangled-Language-Focused MSA, AAAI 2025; pwang322/DLF@251bf2c",
    lr_default=1e-4,  # Adam lr 1e-4 over all parameters (trains/singleTask/DLF.py:36-38)
    batch_default=16, accumulation_default=10,  # batches of 16, one step per 10 of them (DLF.py:64-69,146-148)
)
class DLF(Backbone):
    """DLF backbone: ``forward(inputs) -> BackboneOutput`` with joint z (B, 6d); see the module docstring."""

    never_trained = UNTRAINED_MODULES

    def __init__(self, config: DlfConfig, shapes: DataShapes, text_encoder: Optional[nn.Module] = None):
        super().__init__()
        check_text_width(text_encoder, shapes)
        kernels = {"l": config.kernel_text, "a": config.kernel_audio, "v": config.kernel_vision}
        # A modality shorter than its kernel (an absent one is stored as one zero frame) is built
        # and zero-padded to the kernel's width: one conv step, computed from zeros.
        lengths = {m: max(n, kernels[m]) for m, n in
                   (("l", shapes.text_len), ("a", shapes.audio_len), ("v", shapes.vision_len))}
        d, c = config.dim, shapes.num_classes
        self.config = config
        self.shapes = shapes
        self.text_encoder = text_encoder
        self.joint_dim = 6 * d
        self.lengths = lengths
        self.steps = {m: lengths[m] - kernels[m] + 1 for m in MODALITIES}  # T'_m
        flat = {m: d * self.steps[m] for m in MODALITIES}  # F_m

        def encoder(kind: str, layers: int = config.layers) -> CrossmodalEncoder:
            attn = {"l": config.attn_dropout, "a": config.attn_dropout_a, "v": config.attn_dropout_v}[kind]
            return CrossmodalEncoder(d, config.heads, layers, attn_dropout=attn, relu_dropout=config.relu_dropout,
                                     res_dropout=config.res_dropout, embed_dropout=config.embed_dropout,
                                     causal=config.causal, positions=config.positions)

        # Construction order as the original's __init__ (same random initialisation sequence).
        self.proj_l = nn.Conv1d(shapes.text_dim, d, kernel_size=config.kernel_text, bias=False)
        self.proj_a = nn.Conv1d(shapes.audio_dim, d, kernel_size=config.kernel_audio, bias=False)
        self.proj_v = nn.Conv1d(shapes.vision_dim, d, kernel_size=config.kernel_vision, bias=False)
        self.encoder_s_l = encoder("l")
        self.encoder_s_v = encoder("v")
        self.encoder_s_a = encoder("a")
        self.encoder_c = encoder("l")  # shared by the three modalities
        self.decoder_l = nn.Conv1d(2 * d, d, kernel_size=1, bias=False)
        self.decoder_v = nn.Conv1d(2 * d, d, kernel_size=1, bias=False)
        self.decoder_a = nn.Conv1d(2 * d, d, kernel_size=1, bias=False)
        self.proj_cosine_l = nn.Linear(flat["l"], d)  # dead (never called)
        self.proj_cosine_v = nn.Linear(flat["v"], d)
        self.proj_cosine_a = nn.Linear(flat["a"], d)
        self.align_c_l = nn.Linear(flat["l"], d)
        self.align_c_v = nn.Linear(flat["v"], d)
        self.align_c_a = nn.Linear(flat["a"], d)
        self.self_attentions_c_l = encoder("l")
        self.self_attentions_c_v = encoder("v")
        self.self_attentions_c_a = encoder("a")
        self.proj1_c = nn.Linear(3 * d, 3 * d)
        self.proj2_c = nn.Linear(3 * d, 3 * d)
        self.out_layer_c = nn.Linear(3 * d, c)
        self.trans_l_with_a = encoder("a")  # type "la"
        self.trans_l_with_v = encoder("v")  # type "lv"
        self.trans_a_with_l = encoder("l")  # dead (never called), type "al"
        self.trans_a_with_v = encoder("v")  # dead, type "av"
        self.trans_v_with_l = encoder("l")  # dead, type "vl"
        self.trans_v_with_a = encoder("a")  # dead, type "va"
        self.trans_l_mem = encoder("l")
        self.trans_a_mem = encoder("l", max(config.layers, config.mem_layers))
        self.trans_v_mem = encoder("l", max(config.layers, config.mem_layers))
        for m in ("l", "v", "a"):  # dead (output discarded by the original)
            setattr(self, f"proj1_{m}_low", nn.Linear(flat[m], d))
            setattr(self, f"proj2_{m}_low", nn.Linear(d, flat[m]))
            setattr(self, f"out_layer_{m}_low", nn.Linear(flat[m], c))
        for m in ("l", "v", "a"):
            setattr(self, f"proj1_{m}_high", nn.Linear(d, d))
            setattr(self, f"proj2_{m}_high", nn.Linear(d, d))
            setattr(self, f"out_layer_{m}_high", nn.Linear(d, c))
        self.projector_l = nn.Linear(d, d)
        self.projector_v = nn.Linear(d, d)
        self.projector_a = nn.Linear(d, d)
        self.projector_c = nn.Linear(3 * d, 3 * d)
        self.proj1 = nn.Linear(6 * d, 6 * d)
        self.proj2 = nn.Linear(6 * d, 6 * d)
        # The original's out_layer Linear(6d, C) is the toolkit head on ``joint``.

    def forward(self, inputs: ModelInputs, need_recon: bool = False) -> BackboneOutput:
        """Joint z (B, 6d), text states (B, L, D_t) and the extras listed in the module docstring."""
        cfg, training = self.config, self.training
        text_states = self.encode_text(inputs)  # (B, L, D_t)
        text = _fit(text_states, inputs.text_mask, self.lengths["l"], "text")
        audio = _fit(inputs.audio, inputs.audio_mask, self.lengths["a"], "audio")
        vision = _fit(inputs.vision, inputs.vision_mask, self.lengths["v"], "vision")
        text = F.dropout(text, p=cfg.text_dropout, training=training)
        origin = {
            "l": _over_time(self.proj_l, text),  # (B, T'_l, d)
            "a": _over_time(self.proj_a, audio),  # (B, T'_a, d)
            "v": _over_time(self.proj_v, vision),  # (B, T'_v, d)
        }
        extras: dict[str, torch.Tensor] = {}
        specific, shared = {}, {}
        for m in MODALITIES:
            specific[m] = getattr(self, f"encoder_s_{m}")(origin[m])  # (B, T'_m, d)
            shared[m] = self.encoder_c(origin[m])  # (B, T'_m, d)
        batch = text.shape[0]
        for m in MODALITIES:
            # channel-major flatten: (B, T', d) -> (B, d, T') -> (B, d T')
            extras[f"c_{m}_sim"] = getattr(self, f"align_c_{m}")(shared[m].transpose(1, 2).reshape(batch, -1))
            recon = _over_time(getattr(self, f"decoder_{m}"), torch.cat([specific[m], shared[m]], dim=-1))
            extras[f"recon_{m}"] = recon  # (B, T'_m, d)
            extras[f"s_{m}_r"] = getattr(self, f"encoder_s_{m}")(recon)  # (B, T'_m, d)
            extras[f"origin_{m}"] = origin[m]
            extras[f"s_{m}"] = specific[m]
            extras[f"c_{m}"] = shared[m]

        # Shared (homogeneous) branch, order l, v, a as the original.
        c_fusion = torch.cat([getattr(self, f"self_attentions_c_{m}")(shared[m])[:, -1] for m in ("l", "v", "a")],
                             dim=-1)  # (B, 3d)
        c_proj = _residual_block(self.proj1_c, self.proj2_c, c_fusion, cfg.output_dropout, training)
        extras["logits_c"] = self.out_layer_c(c_proj)  # (B, C)

        # Language-focused attractor: text-specific queries.
        s_l = specific["l"]
        last = {
            "l": self.trans_l_mem(s_l)[:, -1],  # (B, d)
            "a": self.trans_a_mem(self.trans_l_with_a(s_l, specific["a"]))[:, -1],
            "v": self.trans_v_mem(self.trans_l_with_v(s_l, specific["v"]))[:, -1],
        }
        high = {}
        for m in MODALITIES:
            high[m] = _residual_block(getattr(self, f"proj1_{m}_high"), getattr(self, f"proj2_{m}_high"), last[m],
                                      cfg.output_dropout, training)  # (B, d)
            extras[f"logits_{m}_hetero"] = getattr(self, f"out_layer_{m}_high")(high[m])  # (B, C)

        fused = torch.cat([
            torch.sigmoid(self.projector_l(high["l"])),
            torch.sigmoid(self.projector_v(high["v"])),
            torch.sigmoid(self.projector_a(high["a"])),
            torch.sigmoid(self.projector_c(c_fusion)),
        ], dim=-1)  # (B, 6d)
        joint = _residual_block(self.proj1, self.proj2, fused, cfg.output_dropout, training)  # (B, 6d)
        return BackboneOutput(joint=joint, text_states=text_states, extras=extras)

    def objective_terms(self, batch: ObjectiveBatch) -> dict[str, torch.Tensor]:
        """DLF's auxiliary losses on the incomplete pass, each multiplied by its config weight."""
        cfg, x, labels = self.config, batch.incomplete.extras, batch.labels
        terms = {
            "aux_homo": cfg.homo_weight * batch.task_loss(x["logits_c"], labels),
            "aux_hetero_l": cfg.hetero_text_weight * batch.task_loss(x["logits_l_hetero"], labels),
            "aux_hetero_a": cfg.hetero_audio_weight * batch.task_loss(x["logits_a_hetero"], labels),
            "aux_hetero_v": cfg.hetero_vision_weight * batch.task_loss(x["logits_v_hetero"], labels),
        }
        recon = sum(F.mse_loss(x[f"recon_{m}"].float(), x[f"origin_{m}"].float()) for m in MODALITIES)
        specific = sum(F.mse_loss(x[f"s_{m}"].float(), x[f"s_{m}_r"].float()) for m in MODALITIES)
        ortho = 0.0
        for m in MODALITIES:
            s_rows = x[f"s_{m}"].float().reshape(-1, cfg.dim)
            c_rows = x[f"c_{m}"].float().reshape(-1, cfg.dim)
            target = torch.full((s_rows.shape[0],), -1.0, device=s_rows.device)
            ortho = ortho + F.cosine_embedding_loss(s_rows, c_rows, target, margin=0.0)
        # 3B vectors [c_l_i, c_v_i, c_a_i], each with its sample's label.
        feats = torch.stack([x["c_l_sim"], x["c_v_sim"], x["c_a_sim"]], dim=1).reshape(-1, cfg.dim)
        ids = labels.reshape(-1, 1).expand(-1, 3).reshape(-1)
        triplet = label_margin_hinge(feats, ids, cfg.triplet_margin_scale)
        terms["aux_recon"] = cfg.recon_weight * recon
        terms["aux_specific"] = cfg.specific_weight * specific
        terms["aux_ortho"] = cfg.ortho_weight * ortho
        terms["aux_triplet"] = cfg.triplet_weight * triplet
        return terms

