"""A late-fusion baseline, the second architecture that MACI plugs into.

After the LF-DNN baseline of Williams et al., "Recognizing Emotions in Video Using Multimodal DNN
Feature Fusion" (ACL 2018 workshop), as used in the MMSA benchmark: each modality is encoded on
its own and the three utterance vectors are fused only at the end.

- text: encoder states -> Linear(D_t, E) -> GRU(E, E) -> mean over real tokens;
- audio, vision: mean over valid frames -> LayerNorm -> Linear(d, E) -> ReLU -> Linear(E, E);
- joint z = ReLU(Linear(3E, 3E)(Dropout([h_l; h_a; h_v]))) + [h_l; h_a; h_v], shape (B, 3E).

It has no fusion attention and no reconstruction heads, so MSSD uses only its joint term here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
from torch import nn

from cider_mer.models.interface import Backbone, BackboneOutput, DataShapes, ModelInputs
from cider_mer.models.registry import register_backbone
from cider_mer.validation import AT_LEAST_1, FRACTION, Range, validate_fields


@dataclass
class LateFusionConfig:
    hidden: int = 32
    dropout: float = 0.2

    RANGES: ClassVar[dict[str, Range]] = {"hidden": AT_LEAST_1, "dropout": FRACTION}

    def __post_init__(self) -> None:
        validate_fields(self)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, d), (B, T) -> (B, d); zeros for a sample without valid steps."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


@register_backbone("late_fusion", LateFusionConfig, description="late-fusion baseline (LF-DNN style)",
                   source="Williams et al., ACL 2018 Challenge-HML workshop; MMSA's LF_DNN", mssd_default=True)
class LateFusion(Backbone):

    def __init__(self, config: LateFusionConfig, shapes: DataShapes, text_encoder: Optional[nn.Module] = None):
        super().__init__()
        e = config.hidden
        self.config = config
        self.text_encoder = text_encoder
        self.joint_dim = 3 * e
        self.text_proj = nn.Linear(shapes.text_dim, e)
        self.text_rnn = nn.GRU(e, e, batch_first=True)
        self.audio_net = self._frame_net(shapes.audio_dim, e)
        self.vision_net = self._frame_net(shapes.vision_dim, e)
        self.dropout = nn.Dropout(config.dropout)
        self.fusion = nn.Linear(3 * e, 3 * e)

    @staticmethod
    def _frame_net(d: int, e: int) -> nn.Sequential:
        return nn.Sequential(nn.LayerNorm(d), nn.Linear(d, e), nn.ReLU(), nn.Linear(e, e))

    def forward(self, inputs: ModelInputs, need_recon: bool = False) -> BackboneOutput:
        states = self.encode_text(inputs)
        h_text, _ = self.text_rnn(self.text_proj(states))
        g_l = _masked_mean(h_text, inputs.text_mask)
        g_a = self.audio_net(_masked_mean(inputs.audio, inputs.audio_mask))
        g_v = self.vision_net(_masked_mean(inputs.vision, inputs.vision_mask))
        z0 = torch.cat([g_l, g_a, g_v], dim=-1)
        joint = torch.relu(self.fusion(self.dropout(z0))) + z0
        return BackboneOutput(joint=joint, text_states=states)

