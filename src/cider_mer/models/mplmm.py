"""MPLMM (Guo, Jin, Zhao, ACL 2024): missing-aware prompts on a MulT backbone.

Re-implemented from the project's notes (``baselines/mplmm_lnln_emt_dlfr.md`` §1, §4) on the
released code zrguo/MPLMM@c6f8d18 (model code of 91f802e). Shapes: B batch, d = ``hidden`` (the
original's proj_dim = prompt_dim, 30), P = ``prompt_length`` (16), (T_l, T_a, T_v) and
(d_l, d_a, d_v) the lengths and widths from :class:`DataShapes` (MOSI unaligned: 50/375/500 and
768/5/20). Every sequence is batch-first here; the original is sequence-first.

Architecture (module names as the original's):

- ``proj_l/a/v``: Conv1d(d_m, d, k=1, **no bias**), the input projections.
- ``l2a, l2v, v2a, v2l, a2v, a2l``: MLPLayer = Conv1d(k=1, bias) + GELU over feature channels,
  raw source modality -> d.
- ``l_ap, l_vp, l_avp, a_lp, a_vp, a_lvp, v_ap, v_lp, v_alp``: MLPLayers over the **time axis**
  (P + sum T_sources -> T_target; one Linear that mixes time steps, shared by the d channels).
- prompts (``nn.Parameter``): ``generative_prompt`` (3, d, P); ``promptX_m`` / ``promptX_nm``
  (d, T_X), the "missing" / "present" signal; ``missing_type_prompt`` (3, P, d); ``m_l/m_a/m_v``
  (T_X, 2d).
- ``trans_X_with_Y``: six CrossmodalEncoder(d, heads, layers), query X, keys/values Y;
  ``trans_X_mem``: three CrossmodalEncoder(2d, heads, max(layers, 3)); causal mask on (the
  original's ``attn_mask`` default: query i sees keys j <= i + |T_k - T_q|).
- ``proj1``, ``proj2``: Linear(6d, 6d), the residual output block. The original's ``out_layer``
  Linear(6d, C) is the toolkit's head, so ``joint_dim`` J = 6d = 180.

Forward, fine-tuning stage (the original ``PromptModel``):

1. text = dropout_{embed}(encoder states) (B, T_l, d_l); audio (B, T_a, d_a); vision (B, T_v, d_v).
2. Missing mode per sample (see "Which modalities are missing"), 0..6 as the original:
   0 text, 1 audio, 2 vision, 3 text+audio, 4 text+vision, 5 audio+vision missing, 6 none;
   plus 7 = all three missing (an addition, see below).
3. Completion, each modality X to (B, T_X, d): a present X is proj_X(x_X) + promptX_nm; a missing
   X ignores its input and is generated: [G_X (P, d); s2X(x_s) (T_s, d) for each present source s]
   concatenated over time -> the time MLPLayer -> (T_X, d), + promptX_m. Mode table (sources in the
   original's order): 0 t = l_avp[G, a2l, v2l]; 1 a = a_lvp[G, l2a, v2a]; 2 v = v_alp[G, l2v, a2v];
   3 t = l_vp[G, v2l], a = a_vp[G, v2a]; 4 t = l_ap[G, a2l], v = v_ap[G, a2v];
   5 a = a_lp[G, l2a], v = v_lp[G, l2v]. Samples are grouped by mode (vectorised; the original
   loops over samples with the same result).
4. Missing-type prompts: mp = S_a m_a + S_v m_v + S_l m_l (d, 2d) with S_X = promptX_m if X is
   missing, else promptX_nm; missing_type_prompt (3, P, d) @ mp -> (3, P, 2d): P extra tokens per
   memory stream.
5. h_X = [trans_X_with_Y(X; Y), trans_X_with_Z(X; Z)] (B, T_X, 2d); append the X block of the P
   type-prompt tokens -> (B, T_X + P, 2d); trans_X_mem -> take the **last position** (the last
   prompt token) -> (B, 2d).
6. z0 = [last_l; last_a; last_v] (B, 6d); z = proj2(dropout_{out}(ReLU(proj1(z0)))) + z0 is the
   joint representation (notes §1.11), (B, 180).

Pre-training stage (the original ``MULTModel``, same module, no prompts): proj_X(x_X), the same
crossmodal and memory transformers on (B, T_X, 2d) without prompt tokens, the last time step,
the same residual block.

Two-stage recipe (:meth:`MPLMM.epoch_plan`): epochs 1..``pretrain_epochs`` (40, the original's
stage-1 epochs) train the no-prompt path on complete inputs only
(``EpochPlan(complete_only=True, selectable=False)``). From epoch ``pretrain_epochs + 1`` on the
prompt path is used and exactly what the original freezes after its weight transfer is frozen
(``requires_grad=False``): the nine transformers and proj1/proj2 (1,061,280 parameters at MOSI
size; 1,157,786 stay trainable with a 1-wide head). The stage is derived from the epoch number
alone, so calling ``epoch_plan`` again (e.g. after a resume) is idempotent; it is also stored in
the persistent buffer ``fine_tuning`` so that a loaded checkpoint runs the right path.
``pretrain_epochs=0``: no pre-training stage; every epoch uses prompts and nothing is frozen
(all parameters train together from scratch).

Which modalities are missing (decided from the inputs, which is all a forward pass sees; the
toolkit turns dropped tokens into [UNK] and dropped frames into zero vectors):

- audio / vision: missing for a sample when none of its valid frames (mask 1) has a non-zero
  value, i.e. every valid position was dropped (also when it has no valid frame at all);
- text: missing when every real token (mask 1) other than [CLS] (101) / [SEP] (102) is [UNK]
  (100), i.e. all droppable tokens were dropped (also a text of only [CLS] [SEP]).
- All three missing (mode 7, which the original never produces): there is no source to generate
  from, so each modality is its own projection proj_X(x_X) (zero frames, [UNK]-text states) plus
  its "missing" signal prompt promptX_m, and the type prompts use all three "missing" signals.
  This is an addition; it adds no parameters.

Oddities of the original, reproduced:

- Every prompt is initialised to **zeros** (c6f8d18; ``prompt_init="rand"`` gives the first
  release's ``torch.rand``). ``missing_type_prompt`` and ``m_l/m_a/m_v`` then meet only in a
  product of two zero factors, so **they never receive a gradient** and the P type-prompt tokens
  stay all-zero for the whole run: they are parameter-free query slots (with no position code,
  since a step whose first channel is 0 counts as padding), and the pooled output is the last of
  them.
- No padding masks anywhere (the original ignores lengths): attention covers padded steps and the
  pre-training path pools the last time step even when it is padding.
- Text dropout is applied twice (raw text, then again at every encoder's entry).
- The memory transformers have max(layers, 3) = 5 layers; the type-prompt tokens are appended
  after the crossmodal outputs.

Deviations from the original:

- Text: the original reads fixed 768-d text features and has no BERT; here the text input is the
  toolkit's encoder states (B, L, D_t) (freezing the encoder is closest to the original). Text
  states at padding positions are zeroed and the text is padded back to ``text_len`` (the
  time-mixing layers have a fixed input length), so trimmed and untrimmed batches agree.
- Pre-training runs on the **same dataset** (complete inputs), not on complete CMU-MOSEI as in
  the original. Since input widths and heads then match, proj_l/a/v and the head keep their
  pre-trained weights (the original re-initialises them only because the MOSEI widths differ).
- Missingness is the toolkit's feature-level masks mapped to the original's modality-level modes
  by the rule above, instead of the original's per-sample mode generator (drop_rate 0.7).
- Parity target: the released code, 2,218,885 + 181 C (2,219,066 at C=1). CIDer's Table VI
  figure 2,242,946 is not reachable: it is exactly 23,880 = d (D + 3) higher, three extra biased
  raw -> 30 maps that the released model does not have (plausibly MACI's first MCM layers at
  E = 30; notes §1.10). ``hidden`` is named as CIDer's E so MACI's MCM uses width d = 30.
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
    EpochPlan,
    ModelInputs,
    check_text_width,
)
from cider_mer.models.layers.crossmodal import CrossmodalEncoder
from cider_mer.models.registry import register_backbone
from cider_mer.validation import (
    AT_LEAST_1,
    FRACTION,
    NON_NEGATIVE,
    Range,
    check_divides,
    each,
    one_of,
    validate_fields,
)
from cider_mer.text.encoder import CLS_ID, SEP_ID, UNK_ID

_DROPOUTS = ("attn_dropout", "attn_dropout_a", "attn_dropout_v", "relu_dropout", "embed_dropout",
             "res_dropout", "out_dropout")
_MODALITIES = ("l", "a", "v")  # index 0, 1, 2 in generative_prompt / missing_type_prompt

# Missing modes: mode -> (text, audio, vision) missing; 0..6 as the original, 7 added (all missing).
MODE_FLAGS = (
    (True, False, False),
    (False, True, False),
    (False, False, True),
    (True, True, False),
    (True, False, True),
    (False, True, True),
    (False, False, False),
    (True, True, True),
)
MODE_ALL_MISSING = 7

# mode -> ((generated modality, time MLPLayer, present sources in concatenation order), ...)
GENERATORS: dict[int, tuple[tuple[str, str, tuple[str, ...]], ...]] = {
    0: (("l", "l_avp", ("a", "v")),),
    1: (("a", "a_lvp", ("l", "v")),),
    2: (("v", "v_alp", ("l", "a")),),
    3: (("l", "l_vp", ("v",)), ("a", "a_vp", ("v",))),
    4: (("l", "l_ap", ("a",)), ("v", "v_ap", ("a",))),
    5: (("a", "a_lp", ("l",)), ("v", "v_lp", ("l",))),
}

# What the original freezes for fine-tuning (transferred from the pre-trained model).
FROZEN_PREFIXES = ("trans_", "proj1.", "proj2.")


@dataclass
class MplmmConfig:
    """MPLMM hyper-parameters: ``main.py`` argparse defaults for MOSI. Shapes come separately."""

    hidden: int = 30  # d: proj_dim = prompt_dim (the original requires them equal)
    heads: int = 5  # num_heads, every encoder; must divide hidden
    layers: int = 5  # nlevels: crossmodal layers; memory transformers use max(layers, 3)
    prompt_length: int = 16  # P
    attn_dropout: float = 0.1  # attention weights: blocks of query l ("al"/"vl" in MulT) and memories
    attn_dropout_a: float = 0.1  # blocks "la" and "va" (MulT's d_a-wide blocks)
    attn_dropout_v: float = 0.1  # blocks "lv" and "av"
    relu_dropout: float = 0.1  # after ReLU in each FFN
    embed_dropout: float = 0.25  # on the raw text input and at every encoder's entry
    res_dropout: float = 0.1  # on each sub-layer output before the residual add
    out_dropout: float = 0.1  # inside the output residual block
    attn_mask: bool = True  # the original's default: causal / length-shifted mask in every attention
    pretrain_epochs: int = 40  # stage-1 epochs (no prompts, complete inputs); 0: prompts from epoch 1
    prompt_init: str = "zeros"  # "zeros" (c6f8d18, released) or "rand" (first release 35bd1a2)

    RANGES: ClassVar[dict[str, Range]] = {
        **each(("hidden", "heads", "layers", "prompt_length"), AT_LEAST_1),
        **each(_DROPOUTS, FRACTION),
        "pretrain_epochs": NON_NEGATIVE,
        "prompt_init": one_of("zeros", "rand"),
    }

    def __post_init__(self) -> None:
        validate_fields(self)
        check_divides(self, "heads", "hidden")

    @property
    def first_selectable_epoch(self) -> int:
        """Stage-1 epochs are never selected: a run needs at least ``pretrain_epochs + 1`` epochs."""
        return self.pretrain_epochs + 1


class MLPLayer(nn.Module):
    """Conv1d(k=1, bias) + GELU on a channels-first tensor (N, C_in, T) -> (N, C_out, T)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.conv = nn.Conv1d(dim_in, dim_out, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.conv(x))


def _over_channels(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A channel-first layer applied per time step: (N, T, C_in) -> (N, T, C_out)."""
    return layer(x.transpose(1, 2)).transpose(1, 2)


@register_backbone(
    "mplmm",
    MplmmConfig,
    description="MPLMM: missing-aware prompts (generative, signal, missing-type) on a MulT backbone; "
    "two stages (no-prompt pre-training, then prompts with the transformers frozen)",
    source="Guo, Jin, Zhao, ACL 2024; zrguo/MPLMM@c6f8d18",
    batch_default=64,  # main.py --batch_size 64
)
class MPLMM(Backbone):
    """MPLMM backbone: ``forward(inputs) -> BackboneOutput`` with joint (B, 6d)."""


    def __init__(self, config: MplmmConfig, shapes: DataShapes, text_encoder: Optional[nn.Module] = None):
        super().__init__()
        check_text_width(text_encoder, shapes)
        d, p = config.hidden, config.prompt_length
        self.config = config
        self.shapes = shapes
        self.text_encoder = text_encoder
        self.joint_dim = 6 * d
        self.lengths = {"l": shapes.text_len, "a": shapes.audio_len, "v": shapes.vision_len}
        widths = {"l": shapes.text_dim, "a": shapes.audio_dim, "v": shapes.vision_dim}
        t_l, t_a, t_v = shapes.text_len, shapes.audio_len, shapes.vision_len
        init = torch.zeros if config.prompt_init == "zeros" else torch.rand

        self.generative_prompt = nn.Parameter(init(3, d, p))
        self.l2a, self.l2v = MLPLayer(widths["l"], d), MLPLayer(widths["l"], d)
        self.v2a, self.v2l = MLPLayer(widths["v"], d), MLPLayer(widths["v"], d)
        self.a2v, self.a2l = MLPLayer(widths["a"], d), MLPLayer(widths["a"], d)
        self.l_ap, self.l_vp, self.l_avp = MLPLayer(p + t_a, t_l), MLPLayer(p + t_v, t_l), MLPLayer(p + t_a + t_v, t_l)
        self.a_lp, self.a_vp, self.a_lvp = MLPLayer(p + t_l, t_a), MLPLayer(p + t_v, t_a), MLPLayer(p + t_l + t_v, t_a)
        self.v_ap, self.v_lp, self.v_alp = MLPLayer(p + t_a, t_v), MLPLayer(p + t_l, t_v), MLPLayer(p + t_a + t_l, t_v)
        self.proj_l = nn.Conv1d(widths["l"], d, kernel_size=1, bias=False)
        self.proj_a = nn.Conv1d(widths["a"], d, kernel_size=1, bias=False)
        self.proj_v = nn.Conv1d(widths["v"], d, kernel_size=1, bias=False)
        self.promptl_m, self.prompta_m, self.promptv_m = (nn.Parameter(init(d, t)) for t in (t_l, t_a, t_v))
        self.promptl_nm, self.prompta_nm, self.promptv_nm = (nn.Parameter(init(d, t)) for t in (t_l, t_a, t_v))
        self.missing_type_prompt = nn.Parameter(init(3, p, d))
        self.m_a, self.m_v, self.m_l = (nn.Parameter(init(t, 2 * d)) for t in (t_a, t_v, t_l))

        cfg = config

        def encoder(dim: int, layers: int, attn_dropout: float) -> CrossmodalEncoder:
            return CrossmodalEncoder(dim, cfg.heads, layers, attn_dropout=attn_dropout,
                                     relu_dropout=cfg.relu_dropout, res_dropout=cfg.res_dropout,
                                     embed_dropout=cfg.embed_dropout, causal=cfg.attn_mask)

        self.trans_l_with_a = encoder(d, cfg.layers, cfg.attn_dropout_a)
        self.trans_l_with_v = encoder(d, cfg.layers, cfg.attn_dropout_v)
        self.trans_a_with_l = encoder(d, cfg.layers, cfg.attn_dropout)
        self.trans_a_with_v = encoder(d, cfg.layers, cfg.attn_dropout_v)
        self.trans_v_with_l = encoder(d, cfg.layers, cfg.attn_dropout)
        self.trans_v_with_a = encoder(d, cfg.layers, cfg.attn_dropout_a)
        memory_layers = max(cfg.layers, 3)
        self.trans_l_mem = encoder(2 * d, memory_layers, cfg.attn_dropout)
        self.trans_a_mem = encoder(2 * d, memory_layers, cfg.attn_dropout)
        self.trans_v_mem = encoder(2 * d, memory_layers, cfg.attn_dropout)
        self.proj1 = nn.Linear(6 * d, 6 * d)
        self.proj2 = nn.Linear(6 * d, 6 * d)
        # Which stage the module is in (persistent, so a loaded checkpoint runs the right path).
        self.register_buffer("fine_tuning", torch.tensor(config.pretrain_epochs == 0))

    # ------------------------------------------------------------------ the two-stage recipe

    def frozen_parameter_names(self) -> list[str]:
        """Names of what the original freezes for fine-tuning: the 9 transformers and proj1/proj2."""
        return [name for name, _ in self.named_parameters() if name.startswith(FROZEN_PREFIXES)]

    def epoch_plan(self, epoch: int) -> EpochPlan:
        """Stage of training epoch ``epoch`` (1-based), derived from the epoch number alone.

        Epochs 1..pretrain_epochs: no prompts, everything trainable, complete inputs, not
        selectable. Later epochs: prompts on and, when there was a pre-training stage, the
        transformers and proj1/proj2 frozen (``requires_grad=False``).
        """
        fine = epoch > self.config.pretrain_epochs
        self.fine_tuning.fill_(fine)
        freeze = fine and self.config.pretrain_epochs > 0
        for name, param in self.named_parameters():
            if name.startswith(FROZEN_PREFIXES):
                param.requires_grad_(not freeze)
        if not fine:
            return EpochPlan(complete_only=True, selectable=False)
        return EpochPlan()

    # ------------------------------------------------------------------ missing modes

    @staticmethod
    def missing_flags(inputs: ModelInputs) -> torch.Tensor:
        """(B, 3) bool: whether text, audio, vision is missing for each sample (module docstring)."""
        ids = inputs.text_ids
        content = inputs.text_mask.bool() & (ids != CLS_ID) & (ids != SEP_ID)
        text_missing = ~(content & (ids != UNK_ID)).any(dim=1)

        def frames_missing(frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return ~((frames != 0).any(dim=-1) & mask.bool()).any(dim=1)

        return torch.stack([text_missing, frames_missing(inputs.audio, inputs.audio_mask),
                            frames_missing(inputs.vision, inputs.vision_mask)], dim=1)

    @staticmethod
    def modes_from_flags(flags: torch.Tensor) -> torch.Tensor:
        """(B, 3) bool missing flags -> (B,) long missing mode 0..7 (see :data:`MODE_FLAGS`)."""
        table = torch.tensor(MODE_FLAGS, dtype=torch.bool, device=flags.device)  # (8, 3)
        match = (flags[:, None, :] == table[None]).all(dim=-1)  # (B, 8), one True per row
        return match.float().argmax(dim=1)

    def missing_modes(self, inputs: ModelInputs) -> torch.Tensor:
        """(B,) long: the missing mode of each sample (0..6 as the original, 7 = all missing)."""
        return self.modes_from_flags(self.missing_flags(inputs))

    # ------------------------------------------------------------------ forward

    def _checked_inputs(self, inputs: ModelInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder states (B, L, D_t) as used, and text (B, T_l, D_t) zeroed at padding and padded."""
        states = self.encode_text(inputs)
        if inputs.audio.shape[1] != self.lengths["a"] or inputs.vision.shape[1] != self.lengths["v"]:
            raise ValueError(f"MPLMM has fixed lengths: audio {self.lengths['a']}, vision {self.lengths['v']} "
                             f"frames expected, got {inputs.audio.shape[1]}, {inputs.vision.shape[1]}")
        length = states.shape[1]
        if length > self.lengths["l"]:
            raise ValueError(f"text length {length} exceeds the model's text_len {self.lengths['l']}")
        text = states * inputs.text_mask[:, :, None].to(states.dtype)
        return states, F.pad(text, (0, 0, 0, self.lengths["l"] - length))

    def _complete(self, raw: dict[str, torch.Tensor], modes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw (B, T_X, d_X) per modality -> completed (B, T_X, d) per modality (forward step 3)."""
        all_missing = (modes == MODE_ALL_MISSING)[:, None, None]
        out = {}
        for m in _MODALITIES:
            projected = _over_channels(getattr(self, f"proj_{m}"), raw[m])
            signal = torch.where(all_missing, getattr(self, f"prompt{m}_m").t(), getattr(self, f"prompt{m}_nm").t())
            out[m] = projected + signal
        p, d = self.config.prompt_length, self.config.hidden
        for mode, generators in GENERATORS.items():
            idx = (modes == mode).nonzero().squeeze(1)
            if idx.numel() == 0:
                continue
            for target, layer, sources in generators:
                prompt = self.generative_prompt[_MODALITIES.index(target)].t()  # (P, d)
                parts = [prompt.expand(idx.numel(), p, d)]
                parts += [_over_channels(getattr(self, f"{s}2{target}"), raw[s].index_select(0, idx)) for s in sources]
                generated = getattr(self, layer)(torch.cat(parts, dim=1))  # (n, T_target, d)
                generated = generated + getattr(self, f"prompt{target}_m").t()
                out[target] = out[target].index_copy(0, idx, generated)
        return out

    def _type_prompts(self, flags: torch.Tensor) -> torch.Tensor:
        """(B, 3) missing flags -> (B, 3, P, 2d) missing-type prompt tokens per memory stream."""
        matrix = 0
        for i, m in enumerate(_MODALITIES):
            m_map = getattr(self, f"m_{m}")  # (T_m, 2d)
            when_missing = getattr(self, f"prompt{m}_m") @ m_map  # (d, 2d)
            when_present = getattr(self, f"prompt{m}_nm") @ m_map
            matrix = matrix + torch.where(flags[:, i, None, None], when_missing, when_present)  # (B, d, 2d)
        return torch.einsum("jpd,bde->bjpe", self.missing_type_prompt, matrix)

    def forward(self, inputs: ModelInputs, need_recon: bool = False) -> BackboneOutput:
        """Inputs (B, L <= T_l text, T_a, T_v frames) -> joint (B, 6d).

        extras: ``missing_mode`` (B,) long, 0..7 (computed in both stages; used only when
        fine-tuning); ``z0`` (B, 6d) the pre-residual concatenation.
        """
        states, text = self._checked_inputs(inputs)
        raw = {"l": F.dropout(text, p=self.config.embed_dropout, training=self.training),
               "a": inputs.audio, "v": inputs.vision}
        flags = self.missing_flags(inputs)
        modes = self.modes_from_flags(flags)
        prompting = bool(self.fine_tuning)
        if prompting:
            seq = self._complete(raw, modes)
            type_prompts = self._type_prompts(flags)  # (B, 3, P, 2d)
        else:
            seq = {m: _over_channels(getattr(self, f"proj_{m}"), raw[m]) for m in _MODALITIES}
        last = []
        for i, m in enumerate(_MODALITIES):
            y, w = (x for x in _MODALITIES if x != m)
            h = torch.cat([getattr(self, f"trans_{m}_with_{y}")(seq[m], seq[y]),
                           getattr(self, f"trans_{m}_with_{w}")(seq[m], seq[w])], dim=-1)  # (B, T_m, 2d)
            if prompting:
                h = torch.cat([h, type_prompts[:, i]], dim=1)  # (B, T_m + P, 2d)
            last.append(getattr(self, f"trans_{m}_mem")(h)[:, -1])  # (B, 2d)
        z0 = torch.cat(last, dim=-1)  # (B, 6d)
        hidden = F.dropout(F.relu(self.proj1(z0)), p=self.config.out_dropout, training=self.training)
        joint = self.proj2(hidden) + z0
        return BackboneOutput(joint=joint, text_states=states, extras={"missing_mode": modes, "z0": z0})

