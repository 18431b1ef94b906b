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

import dataclasses
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, ClassVar, Optional

import torch
from torch import nn

from cider_mer.maci.mcm import MCMHead
from cider_mer.validation import AT_LEAST_1, Range, each, validate_fields


@dataclass(frozen=True)
class DataShapes:
    """What a model must know about the data: widths, sequence lengths, alignment, output width.

    ``num_classes`` is the head's output width: the task's classes (3, 7, 2, or the dataset's class count for
    ``emotion``), or 1 for the regression tasks. Every width and length is >= 1 (checked on
    construction, see :mod:`cider_mer.validation`).
    """

    text_dim: int  # D_t, the text encoder's width (384 MiniLM, 768 bert-base)
    audio_dim: int
    vision_dim: int
    text_len: int
    audio_len: int
    vision_len: int
    aligned: bool
    num_classes: int

    RANGES: ClassVar[dict[str, Range]] = each(
        ("text_dim", "audio_dim", "vision_dim", "text_len", "audio_len", "vision_len", "num_classes"), AT_LEAST_1)

    def __post_init__(self) -> None:
        validate_fields(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
class KeepMasks:
    """Which valid positions of a :class:`ModelInputs` batch are kept (the rest are missing); bool,
    padding always False. Drawn by :mod:`cider_mer.missing`."""

    text: torch.Tensor  # (B, L)
    audio: torch.Tensor  # (B, T_a)
    vision: torch.Tensor  # (B, T_v)

    def index(self, idx: torch.Tensor) -> "KeepMasks":
        return KeepMasks(self.text[idx], self.audio[idx], self.vision[idx])

    def trim_text(self, length: int) -> "KeepMasks":
        return KeepMasks(self.text[:, :length], self.audio, self.vision)

    def to(self, device) -> "KeepMasks":
        return KeepMasks(self.text.to(device), self.audio.to(device), self.vision.to(device))


@dataclass
class Reconstructions:
    """What a backbone predicts of the complete inputs from an incomplete pass (MSSD's L_recon)."""

    text: torch.Tensor  # (B, L, D_t) predicted encoder states
    audio: torch.Tensor  # (B, T_a, d_a) predicted raw frames
    vision: torch.Tensor  # (B, T_v, d_v) predicted raw frames


@dataclass
class BackboneOutput:
    """One pass of a backbone. ``extras`` carries what its own objective needs (auxiliary heads' raw
    outputs, intermediate features), keyed by names the backbone documents."""

    joint: torch.Tensor  # (B, J) joint representation z
    text_states: torch.Tensor  # (B, L, D_t) text-encoder states used by this pass
    attention_logits: Optional[torch.Tensor] = None  # (B, H, S, S) last fusion layer, pre-softmax
    attention_mask: Optional[torch.Tensor] = None  # (B, S) 1 = real position of the fused sequence
    reconstructions: Optional[Reconstructions] = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class ModelOutput:
    """A backbone pass plus the head: ``log_probs`` (B, C) class log-probabilities, or for the
    regression task (C = 1) the predicted score itself."""

    log_probs: torch.Tensor  # (B, C)
    backbone: BackboneOutput

    @property
    def joint(self) -> torch.Tensor:  # (B, J)
        return self.backbone.joint

    @property
    def text_states(self) -> torch.Tensor:  # (B, L, D_t)
        return self.backbone.text_states

    @property
    def attention_logits(self) -> Optional[torch.Tensor]:  # (B, H, S, S)
        return self.backbone.attention_logits

    @property
    def attention_mask(self) -> Optional[torch.Tensor]:  # (B, S)
        return self.backbone.attention_mask

    @property
    def reconstructions(self) -> Optional[Reconstructions]:
        return self.backbone.reconstructions


# (raw head outputs (B, C) -- logits, or (B, 1) scores for regression --, labels (B,)) -> scalar loss:
# cross-entropy for the classification tasks, L1 for regression.
TaskLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class ObjectiveBatch:
    """What a backbone's own training objective may read (see :meth:`Backbone.objective_terms`)."""

    incomplete: BackboneOutput  # the pass on the inputs with missing positions applied
    complete: Optional[BackboneOutput]  # the pass on complete inputs (when ``needs_complete_pass``)
    inputs: ModelInputs  # the complete inputs
    incomplete_inputs: ModelInputs  # the same batch with missing positions applied ([UNK] / zero frames)
    keep: KeepMasks  # which valid positions were kept (B, L) / (B, T_a) / (B, T_v), bool
    labels: torch.Tensor  # (B,) class ids (long), or scores in [-3, 3] (float) for regression
    task_loss: TaskLoss
    head: Optional[Callable[[torch.Tensor], torch.Tensor]] = None  # the model's head: joint (B, J) -> (B, C)


@dataclass(frozen=True)
class EpochPlan:
    """How the trainer runs one epoch of a backbone (see :meth:`Backbone.epoch_plan`)."""

    complete_only: bool = False  # train on complete inputs: no training missingness this epoch
    selectable: bool = True  # the epoch's model may be chosen as the checkpoint (and counts for patience)


class Backbone(nn.Module):
    """Interface every architecture implements (documented in README "Bring your own model").

    Attributes:
        joint_dim: J, the width of the joint representation.
        text_encoder: the BERT-family encoder (a :class:`~cider_mer.text.encoder.TextEncoder`)
            or ``None`` when every batch carries ``text_features``.

    ``forward(inputs, need_recon=False) -> BackboneOutput``. It must re-encode
    ``inputs.text_ids`` whenever ``inputs.text_features`` is ``None``, so that MACI's
    counterfactual text (same batch, other token ids) can be passed through it.

    ``supports_reconstruction`` / ``supports_attention`` (default False) say whether the output can
    carry reconstructions and fusion-attention logits; MSSD drops the terms a backbone cannot feed.

    Training hooks (defaults: none): ``objective_terms`` adds the model's own published auxiliary
    losses, ``needs_complete_pass`` asks the trainer for a pass on complete inputs to feed them, and
    ``epoch_plan`` lets a model with a staged recipe (e.g. pre-training, then a frozen backbone)
    shape each epoch.
    """

    joint_dim: int
    text_encoder: Optional[nn.Module]
    supports_reconstruction: bool = False
    supports_attention: bool = False
    needs_complete_pass: bool = False
    # Parameter-name prefixes (inside the backbone) that the original builds but never trains; kept
    # for parity and documented in the model's docstring.
    never_trained: tuple[str, ...] = ()

    def forward(self, inputs: ModelInputs, need_recon: bool = False) -> BackboneOutput:  # pragma: no cover
        raise NotImplementedError

    def encode_text(self, inputs: ModelInputs) -> torch.Tensor:
        """Text-encoder states (B, L, D_t): ``inputs.text_features`` when given, else the encoder's."""
        if inputs.text_features is not None:
            return inputs.text_features
        if self.text_encoder is None:
            raise ValueError(f"{type(self).__name__} was built without a text encoder, so every batch needs "
                             "text_features")
        return self.text_encoder(inputs.text_ids, inputs.text_mask, inputs.text_segment)

    def objective_terms(self, batch: ObjectiveBatch) -> dict[str, torch.Tensor]:
        """The model's own auxiliary training losses, each already weighted (scalars); {} for none.

        The trainer adds them to the task loss of the head on ``batch.incomplete``.
        """
        return {}

    def epoch_plan(self, epoch: int) -> EpochPlan:
        """Called before training epoch ``epoch`` (1-based); may also (un)freeze parameters."""
        return EpochPlan()


def check_text_width(text_encoder: Optional[nn.Module], shapes: DataShapes) -> None:
    """A backbone's text encoder must produce ``shapes.text_dim``-wide states."""
    if text_encoder is not None and getattr(text_encoder, "dim", shapes.text_dim) != shapes.text_dim:
        raise ValueError(f"text encoder width {text_encoder.dim} != shapes.text_dim {shapes.text_dim}")


class LinearHead(nn.Module):
    """The plain head used without MACI: (B, J) -> (B, C) log-probabilities, or (B, 1) the score
    when ``num_classes == 1`` (the regression task)."""

    def __init__(self, joint_dim: int, num_classes: int):
        super().__init__()
        self.out = nn.Linear(joint_dim, num_classes)

    def forward(self, joint: torch.Tensor) -> torch.Tensor:
        out = self.out(joint)
        return out if self.out.out_features == 1 else torch.log_softmax(out, dim=-1)


class MerModel(nn.Module):
    """A backbone plus a head. ``forward`` returns :class:`ModelOutput`."""

    def __init__(self, backbone: Backbone, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, inputs: ModelInputs, need_recon: bool = False) -> ModelOutput:
        out = self.backbone(inputs, need_recon=need_recon)
        return ModelOutput(log_probs=self.head(out.joint), backbone=out)

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
        maci = sum(p.numel() for p in self.head.parameters()) if isinstance(self.head, MCMHead) else 0
        return {
            "params_total": total,
            "params_text_encoder": total - outside,
            "params_excluding_text_encoder": outside,
            "params_maci": maci,
        }

    def parameter_breakdown(self) -> dict[str, int]:
        """Parameters per direct child of the backbone (text encoder left out) and of the head."""
        enc_ids = self.encoder_parameter_ids()
        parts = {f"backbone.{name}": sum(p.numel() for p in child.parameters() if id(p) not in enc_ids)
                 for name, child in self.backbone.named_children()}
        parts["head"] = sum(p.numel() for p in self.head.parameters())
        return {k: v for k, v in parts.items() if v}
