"""The contract between models, MACI, training and evaluation.

Every architecture is a *backbone*: an ``nn.Module`` that turns :class:`ModelInputs` into a
joint representation (:class:`BackboneOutput`). A *head* maps that representation to class
log-probabilities: MACI's :class:`~cider_mer.maci.mcm.MCMHead` or a plain linear head.
:class:`MerModel` joins the two. Because MACI only needs (a) the joint representation and
(b) a backbone that re-encodes whatever token ids it is given (the counterfactual text goes
through the same ``forward``), any backbone that follows this contract gets MACI for free.

Shapes: B batch, L text length, T_a / T_v audio / vision frames, d_* feature dims, J joint dim,
D_t text-encoder width, H heads, S fused sequence length.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Optional

import torch
from torch import nn


@dataclass
class ModelInputs:
    """One batch of multimodal inputs, complete or with missing positions already applied.

    Missing text tokens are ``[UNK]`` ids and missing frames are zero vectors; the validity masks
    below are the *padding* masks and never change with missingness.
    """

    text_ids: torch.Tensor  # (B, L) long
    text_mask: torch.Tensor  # (B, L) float, 1 = real token ([CLS] .. [SEP]), 0 = padding
    text_segment: torch.Tensor  # (B, L) long
    audio: torch.Tensor  # (B, T_a, d_a) float
    audio_mask: torch.Tensor  # (B, T_a) float, 1 = valid frame
    vision: torch.Tensor  # (B, T_v, d_v) float
    vision_mask: torch.Tensor  # (B, T_v) float, 1 = valid frame
    text_features: Optional[torch.Tensor] = None  # (B, L, D_t) precomputed encoder states

    @property
    def batch_size(self) -> int:
        return int(self.text_ids.shape[0])

    def replace(self, **changes) -> "ModelInputs":
        return replace(self, **changes)

    def trim_text(self) -> "ModelInputs":
        """The batch cut to its longest text (fewer padded steps to compute; one host sync).

        Models mask padding everywhere, so their outputs on real positions do not change.
        """
        length = max(int(self.text_mask.sum(dim=1).max().item()), 1) if self.batch_size else self.text_ids.shape[1]
        if length >= self.text_ids.shape[1]:
            return self
        cut = lambda t: None if t is None else t[:, :length]  # noqa: E731
        return self.replace(text_ids=cut(self.text_ids), text_mask=cut(self.text_mask),
                            text_segment=cut(self.text_segment), text_features=cut(self.text_features))

    def to(self, device: torch.device | str) -> "ModelInputs":
        return ModelInputs(**{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name).to(device))
                              for f in fields(self)})


@dataclass
class Reconstructions:
    text: torch.Tensor  # (B, L, D_t) predicted encoder states
    audio: torch.Tensor  # (B, T_a, d_a) predicted raw frames
    vision: torch.Tensor  # (B, T_v, d_v) predicted raw frames


@dataclass
class BackboneOutput:
    joint: torch.Tensor  # (B, J) joint representation z
    text_states: torch.Tensor  # (B, L, D_t) text-encoder states used by this pass
    attention_logits: Optional[torch.Tensor] = None  # (B, H, S, S) last fusion layer, pre-softmax
    attention_mask: Optional[torch.Tensor] = None  # (B, S) 1 = real position of the fused sequence
    reconstructions: Optional[Reconstructions] = None


@dataclass
class ModelOutput:
    log_probs: torch.Tensor  # (B, C) class log-probabilities
    joint: torch.Tensor  # (B, J)
    text_states: torch.Tensor  # (B, L, D_t)
    attention_logits: Optional[torch.Tensor] = None  # (B, H, S, S)
    attention_mask: Optional[torch.Tensor] = None  # (B, S)
    reconstructions: Optional[Reconstructions] = None


class Backbone(nn.Module):
    """Interface every architecture implements (documented in README "Bring your own model").

    Attributes:
        joint_dim: J, the width of the joint representation.
        text_encoder: the BERT-family encoder (a :class:`~cider_mer.text.encoder.TextEncoder`)
            or ``None`` when every batch carries ``text_features``.

    ``forward(inputs, need_recon=False) -> BackboneOutput``. It must re-encode
    ``inputs.text_ids`` whenever ``inputs.text_features`` is ``None``, so that MACI's
    counterfactual text (same batch, other token ids) can be passed through it.

    ``supports_reconstruction`` / ``supports_attention`` say whether the output can carry
    reconstructions and fusion-attention logits; MSSD drops the terms a backbone cannot feed.
    """

    joint_dim: int
    text_encoder: Optional[nn.Module]
    supports_reconstruction: bool = True
    supports_attention: bool = True

    def forward(self, inputs: ModelInputs, need_recon: bool = False) -> BackboneOutput:  # pragma: no cover
        raise NotImplementedError


class LinearHead(nn.Module):
    """The plain classifier head used without MACI: (B, J) -> (B, C) log-probabilities."""

    def __init__(self, joint_dim: int, num_classes: int):
        super().__init__()
        self.out = nn.Linear(joint_dim, num_classes)

    def forward(self, joint: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.out(joint), dim=-1)


class MerModel(nn.Module):
    """A backbone plus a head. ``forward`` returns :class:`ModelOutput`."""

    def __init__(self, backbone: Backbone, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, inputs: ModelInputs, need_recon: bool = False) -> ModelOutput:
        out = self.backbone(inputs, need_recon=need_recon)
        return ModelOutput(
            log_probs=self.head(out.joint),
            joint=out.joint,
            text_states=out.text_states,
            attention_logits=out.attention_logits,
            attention_mask=out.attention_mask,
            reconstructions=out.reconstructions,
        )

    @property
    def text_encoder(self) -> Optional[nn.Module]:
        return self.backbone.text_encoder

    def encoder_parameter_ids(self) -> set[int]:
        enc = self.text_encoder
        return set() if enc is None else {id(p) for p in enc.parameters()}

    def parameter_counts(self) -> dict[str, int]:
        """Trainable-parameter counts: total, excluding the text encoder, and of the MACI head."""
        enc_ids = self.encoder_parameter_ids()
        total = sum(p.numel() for p in self.parameters())
        outside = sum(p.numel() for p in self.parameters() if id(p) not in enc_ids)
        from cider_mer.maci.mcm import MCMHead

        maci = sum(p.numel() for p in self.head.parameters()) if isinstance(self.head, MCMHead) else 0
        return {
            "params_total": total,
            "params_text_encoder": total - outside,
            "params_excluding_text_encoder": outside,
            "params_maci": maci,
        }
