"""MSSD's distillation terms (SPEC §4), with padding handled.

- reconstruction: SmoothL1 (beta 1) over the DROPPED positions only, a per-element mean per
  modality, summed over text (target: detached complete-pass encoder states), audio and vision
  (targets: the raw complete inputs);
- attention: KL(softmax(A_complete) || softmax(A_missing)) of the last fusion layer's logits
  per query row, over valid keys, summed over valid query rows and divided by B*H (the authors'
  ``batchmean`` over (B*H) rows of attention maps);
- joint: 1 - mean cosine(z_missing, z_complete).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cider_mer.models.interface import KeepMasks, ModelInputs, ModelOutput


def _masked_smooth_l1(pred: torch.Tensor, target: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Mean SmoothL1 over the (B, T) selected positions and all feature dims (0 when none)."""
    m = positions.unsqueeze(-1).to(pred.dtype)
    loss = F.smooth_l1_loss(pred * m, target * m, reduction="sum", beta=1.0)
    return loss / (m.sum() * pred.shape[-1] + 1e-6)


def reconstruction_loss(missing: ModelOutput, complete: ModelOutput, inputs: ModelInputs,
                        dropped: KeepMasks) -> torch.Tensor:
    rec = missing.reconstructions
    if rec is None:
        raise ValueError("the incomplete pass was run without reconstructions (need_recon=False)")
    return (
        _masked_smooth_l1(rec.text, complete.text_states.detach(), dropped.text)
        + _masked_smooth_l1(rec.audio, inputs.audio, dropped.audio)
        + _masked_smooth_l1(rec.vision, inputs.vision, dropped.vision)
    )


def attention_loss(missing: ModelOutput, complete: ModelOutput) -> torch.Tensor:
    """KL between the complete (teacher, detached) and incomplete attention distributions."""
    a_m, a_c = missing.attention_logits, complete.attention_logits
    if a_m is None or a_c is None:
        raise ValueError("the model returned no attention logits; switch the attention term off")
    b, h = a_m.shape[0], a_m.shape[1]
    valid = complete.attention_mask
    if valid is None:
        valid = torch.ones(a_m.shape[0], a_m.shape[-1], device=a_m.device)
    key_ok = valid.bool()[:, None, None, :]  # (B, 1, 1, S)
    row_ok = (valid.bool() & valid.bool().any(dim=1, keepdim=True))[:, None, :, None]  # (B, 1, S, 1)
    neg = torch.finfo(a_m.dtype).min
    log_q = torch.log_softmax(a_m.float().masked_fill(~key_ok, neg), dim=-1)
    p = torch.softmax(a_c.detach().float().masked_fill(~key_ok, neg), dim=-1)
    kl = torch.where(key_ok & row_ok, p * (torch.log(p.clamp_min(1e-30)) - log_q), torch.zeros_like(p))
    return kl.sum() / (b * h)


def joint_loss(missing: ModelOutput, complete: ModelOutput) -> torch.Tensor:
    return 1.0 - F.cosine_similarity(missing.joint, complete.joint.detach(), dim=-1).mean()
