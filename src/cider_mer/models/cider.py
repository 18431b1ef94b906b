"""CIDer (Zhong et al., arXiv 2506.10452): the flagship backbone.

text encoder -> Conv1d(k=1, no bias) per modality to E -> WSAM (unaligned data: audio and vision
aligned to the words) -> one GRU per modality -> MCT over [text; audio; vision] -> attention
pooling per modality -> z0 = [g_l; g_a; g_v] -> z = z0 + MLP(z0) (the joint representation, 3E).
Reconstruction heads (text to encoder states, audio/vision to raw frames) serve MSSD.

Validity of the fused positions (``attention_mask``), 1 = real position:
- text: the text padding mask;
- audio/vision after WSAM (one step per text token): the text mask, for samples that have at
  least one valid frame of that modality (a modality with no frame is absent everywhere);
- aligned data, or ``use_wsam=False``: the audio/vision padding masks themselves.
Padding positions are never attended, pooled or reconstructed from (their MCT outputs are zeroed).
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
    Reconstructions,
    check_text_width,
)
from cider_mer.models.layers.mct import MultimodalCompositeTransformer
from cider_mer.models.layers.pooling import AttentionPooling
from cider_mer.models.layers.wsam import WordAlignedAttention
from cider_mer.models.registry import register_backbone
from cider_mer.validation import AT_LEAST_1, FRACTION, Range, check_divides, each, validate_fields

_DROPOUTS = ("attn_dropout", "embed_dropout", "out_dropout", "relu_dropout", "res_dropout")


@dataclass
class CiderConfig:
    """CIDer hyper-parameters (defaults: the authors' fixed-run setting). Shapes come separately."""

    hidden: int = 32  # E, the common width
    layers: int = 3  # MCT layers
    heads: int = 8  # MCA heads; must divide hidden
    attn_dropout: float = 0.0  # tri branch of MCA
    embed_dropout: float = 0.2  # on the MCT input (the paper's "language embedding dropout")
    out_dropout: float = 0.3  # inside the joint-representation MLP
    relu_dropout: float = 0.1  # MCT feed-forward
    res_dropout: float = 0.1  # MCT residual branches
    use_wsam: bool = True  # False: the "w/o WSAM" ablation
    use_mct: bool = True  # False: the "w/o MCT" ablation (vanilla self-attention)

    RANGES: ClassVar[dict[str, Range]] = {**each(("hidden", "layers", "heads"), AT_LEAST_1),
                                          **each(_DROPOUTS, FRACTION)}

    def __post_init__(self) -> None:
        validate_fields(self)
        check_divides(self, "heads", "hidden")


def _over_time(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a channel-first layer (Conv1d, or a Linear over time) to (B, T, C) -> (B, T', C')."""
    return layer(x.transpose(1, 2)).transpose(1, 2)


@register_backbone(
    "cider",
    CiderConfig,
    description="CIDer: WSAM word alignment, GRUs, multimodal composite transformer, attention pooling",
    source="Zhong et al., CIDer, arXiv 2506.10452",
    mssd_default=True,
)
class CIDer(Backbone):
    """CIDer backbone: ``forward(inputs, need_recon=False) -> BackboneOutput`` with joint (B, 3E)."""

    supports_reconstruction = True
    supports_attention = True

    def __init__(self, config: CiderConfig, shapes: DataShapes, text_encoder: Optional[nn.Module] = None):
        super().__init__()
        check_text_width(text_encoder, shapes)
        if shapes.aligned and not shapes.text_len == shapes.audio_len == shapes.vision_len:
            raise ValueError(
                "aligned data needs equal text/audio/vision lengths, got "
                f"{shapes.text_len}/{shapes.audio_len}/{shapes.vision_len}"
            )
        e = config.hidden
        self.config = config
        self.shapes = shapes
        self.text_encoder = text_encoder
        self.joint_dim = 3 * e
        self.aligns_frames = config.use_wsam and not shapes.aligned
        # Aligned data: WSAM is built and counted, as in the reference, but never used.
        self.never_trained = ("wsam_audio", "wsam_vision") if config.use_wsam and shapes.aligned else ()
        # Audio/vision steps inside the MCT: one per word with WSAM (aligned data: audio_len == text_len).
        if config.use_wsam:
            audio_steps, vision_steps = shapes.text_len, shapes.text_len
        else:
            audio_steps, vision_steps = shapes.audio_len, shapes.vision_len

        self.project_text = nn.Conv1d(shapes.text_dim, e, kernel_size=1, bias=False)
        self.project_audio = nn.Conv1d(shapes.audio_dim, e, kernel_size=1, bias=False)
        self.project_vision = nn.Conv1d(shapes.vision_dim, e, kernel_size=1, bias=False)
        if config.use_wsam:
            # Built (and counted) for aligned data too, as in the reference; used only when unaligned.
            self.wsam_audio = WordAlignedAttention(e)
            self.wsam_vision = WordAlignedAttention(e)
        self.gru_text = nn.GRU(e, e, batch_first=True)
        self.gru_audio = nn.GRU(e, e, batch_first=True)
        self.gru_vision = nn.GRU(e, e, batch_first=True)
        self.fusion = MultimodalCompositeTransformer(
            e,
            heads=config.heads,
            layers=config.layers,
            attn_dropout=config.attn_dropout,
            embed_dropout=config.embed_dropout,
            relu_dropout=config.relu_dropout,
            res_dropout=config.res_dropout,
            composite=config.use_mct,
        )
        self.pool_text = AttentionPooling(e)
        self.pool_audio = AttentionPooling(e)
        self.pool_vision = AttentionPooling(e)
        self.proj1 = nn.Linear(3 * e, 3 * e)
        self.proj2 = nn.Linear(3 * e, 3 * e)
        self.out_dropout = nn.Dropout(config.out_dropout)

        self.recon_text = nn.Linear(e, shapes.text_dim)
        self.recon_audio_time = nn.Linear(audio_steps, shapes.audio_len)
        self.recon_audio_out = nn.Linear(e, shapes.audio_dim)
        self.recon_vision_time = nn.Linear(vision_steps, shapes.vision_len)
        self.recon_vision_out = nn.Linear(e, shapes.vision_dim)

    def forward(self, inputs: ModelInputs, need_recon: bool = False) -> BackboneOutput:
        """Joint (B, 3E), text states (B, L, D_t), last MCT logits (B, H, S, S), validity (B, S).

        S = 3L with WSAM or aligned data, L + T_a + T_v without WSAM. Reconstructions only when
        ``need_recon``.
        """
        text_states = self.encode_text(inputs)
        text_valid = inputs.text_mask > 0
        audio_valid = inputs.audio_mask > 0
        vision_valid = inputs.vision_mask > 0

        text = _over_time(self.project_text, text_states)  # (B, L, E)
        audio = _over_time(self.project_audio, inputs.audio)  # (B, T_a, E)
        vision = _over_time(self.project_vision, inputs.vision)  # (B, T_v, E)
        if self.aligns_frames:
            audio = self.wsam_audio(text, audio, inputs.text_mask, audio_valid)  # (B, L, E)
            vision = self.wsam_vision(text, vision, inputs.text_mask, vision_valid)
            audio_valid = text_valid & audio_valid.any(dim=1, keepdim=True)
            vision_valid = text_valid & vision_valid.any(dim=1, keepdim=True)

        states = [self.gru_text(text)[0], self.gru_audio(audio)[0], self.gru_vision(vision)[0]]
        sizes = [s.shape[1] for s in states]
        valid = torch.cat([text_valid, audio_valid, vision_valid], dim=1)  # (B, S)
        fused, logits = self.fusion(torch.cat(states, dim=1), valid, sizes)
        fused = fused * valid[..., None].to(fused.dtype)
        h_text, h_audio, h_vision = fused.split(sizes, dim=1)

        pooled = torch.cat(
            [
                self.pool_text(h_text, text_valid),
                self.pool_audio(h_audio, audio_valid),
                self.pool_vision(h_vision, vision_valid),
            ],
            dim=-1,
        )  # (B, 3E)
        joint = pooled + self.proj2(self.out_dropout(F.relu(self.proj1(pooled))))
        return BackboneOutput(
            joint=joint,
            text_states=text_states,
            attention_logits=logits,
            attention_mask=valid.to(joint.dtype),
            reconstructions=self.reconstruct(h_text, h_audio, h_vision) if need_recon else None,
        )

    def reconstruct(self, h_text: torch.Tensor, h_audio: torch.Tensor, h_vision: torch.Tensor) -> Reconstructions:
        """MCT outputs (B, L', E), (B, L' or T_a, E), (B, L' or T_v, E) -> encoder states and raw frames.

        A batch trimmed to its longest text (L' < L) is zero-padded back to the model's length
        before the time-linears; padded steps are zero anyway, so the result is the same.
        """
        frames = []
        for name, states, time_layer in (
            ("audio", h_audio, self.recon_audio_time),
            ("vision", h_vision, self.recon_vision_time),
        ):
            missing_steps = time_layer.in_features - states.shape[1]
            if missing_steps < 0:
                raise ValueError(
                    f"{name} reconstruction expects at most {time_layer.in_features} fused steps, got {states.shape[1]}: "
                    "reconstruct only batches no longer than the sequences the model was built for"
                )
            frames.append(F.pad(states, (0, 0, 0, missing_steps)))
        audio = self.recon_audio_out(F.relu(_over_time(self.recon_audio_time, frames[0])))
        vision = self.recon_vision_out(F.relu(_over_time(self.recon_vision_time, frames[1])))
        return Reconstructions(text=self.recon_text(h_text), audio=audio, vision=vision)

