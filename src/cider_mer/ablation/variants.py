"""The ablation variants of the paper's Table V, as functions of a base :class:`TrainConfig`.

Each variant returns a NEW config that differs from the base only in the settings it names:

============  =========================  ==============================================================
name          Table V row                what changes
============  =========================  ==============================================================
full          CIDer                      nothing
no_recon      w/o MSSD: w/o recon        ``recon_weight = 0``
no_attn       w/o MSSD: w/o attn         ``attn_weight = 0``
no_joint      w/o MSSD: w/o joint        ``joint_weight = 0``
no_mssd       w/o MSSD: w/o all          ``mssd = False`` (no complete-data stage, no distillation)
no_mcm        w/o MACI: w/o MCM          ``head = "linear"`` (counterfactual text kept)
no_cf         w/o MACI: w/o F.C.T.       ``counterfactual = False`` (MCM head kept)
no_maci       w/o MACI: w/o all          ``head = "linear"`` and ``counterfactual = False``
no_wsam       w/o WSAM                   ``model_config["use_wsam"] = False``
no_mct        w/o MCT                    ``model_config["use_mct"] = False``
============  =========================  ==============================================================

Debiasing variants (not in Table V; docs/debiasing.md), run only when named in ``--variants``:

====================  ===========================================================================
name                  what changes
====================  ===========================================================================
maci_unk              ``cf_fill = "unk"`` (counterfactual filled with [UNK], as training drops words)
maci_valid_cf         ``cf_fill = "unk"``, ``cf_other_modalities = "absent"``, ``cf_centre = True``
maci_valid_cf_group   the three ``maci_valid_cf`` fixes and ``selection = "group_mean"``
poe                   ``debias = "poe"``, ``counterfactual = False`` (trained bias branch, no tau)
learned_mixin         ``debias = "learned_mixin"``, ``counterfactual = False``
group_select          ``selection = "group_mean"`` (checkpoint and tau by group-balanced validation)
====================  ===========================================================================

A variant is defined relative to its base: when the base already switches a part off, the
variant equals the base (the suite still runs it, so the table stays complete); the ``maci_*``
options change nothing on a base without counterfactual text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from cider_mer.config import TrainConfig
from cider_mer.errors import ConfigError


@dataclass(frozen=True)
class Variant:
    """One row of the ablation table."""

    name: str
    label: str  # the Table V row it reproduces
    description: str
    changes: dict[str, Any]  # TrainConfig field -> new value; "model_config" holds a dict of backbone keys

    def apply(self, base: TrainConfig) -> TrainConfig:
        """A new config: ``base`` with exactly this variant's settings changed."""
        try:
            return base.with_overrides(**self.changes)
        except ConfigError as exc:
            raise ConfigError(f"variant '{self.name}' does not apply to model '{base.model}' ({exc}); "
                              "leave it out of --variants for this model") from None


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("full", "CIDer", "the base configuration, nothing switched off", {}),
    Variant("no_recon", "w/o MSSD: w/o recon", "no reconstruction term L_rec (recon_weight 0)",
            {"recon_weight": 0.0}),
    Variant("no_attn", "w/o MSSD: w/o attn", "no attention-distillation term L_attn (attn_weight 0)",
            {"attn_weight": 0.0}),
    Variant("no_joint", "w/o MSSD: w/o joint", "no joint-representation term L_joint (joint_weight 0)",
            {"joint_weight": 0.0}),
    Variant("no_mssd", "w/o MSSD: w/o all",
            "no self-distillation: no complete-data stage and none of the three terms (mssd False)",
            {"mssd": False}),
    Variant("no_mcm", "w/o MACI: w/o MCM", "plain linear head instead of MCM; counterfactual text kept",
            {"head": "linear"}),
    Variant("no_cf", "w/o MACI: w/o F.C.T.", "no fine-grained counterfactual text at evaluation; MCM kept",
            {"counterfactual": False}),
    Variant("no_maci", "w/o MACI: w/o all", "neither MCM nor counterfactual text (linear head, tau 0)",
            {"head": "linear", "counterfactual": False}),
    Variant("no_wsam", "w/o WSAM",
            "no word-aligned attention: full-length audio/vision through the GRUs, MCT split at the true lengths",
            {"model_config": {"use_wsam": False}}),
    Variant("no_mct", "w/o MCT", "vanilla transformer encoder instead of MCT (same width and depth)",
            {"model_config": {"use_mct": False}}),
)}

VARIANT_NAMES: tuple[str, ...] = tuple(VARIANTS)

VALID_CF = {"cf_fill": "unk", "cf_other_modalities": "absent", "cf_centre": True}
DEBIAS_VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("maci_unk", "MACI, [UNK] counterfactual", "counterfactual text filled with [UNK] instead of [MASK]",
            {"cf_fill": "unk"}),
    Variant("maci_valid_cf", "MACI, valid counterfactual",
            "[UNK] fill, audio/vision absent in the counterfactual pass, counterfactual centred on the training inputs",
            dict(VALID_CF)),
    Variant("maci_valid_cf_group", "MACI, valid counterfactual, group selection",
            "the three maci_valid_cf fixes, checkpoint and tau by group-balanced validation",
            {**VALID_CF, "selection": "group_mean"}),
    Variant("poe", "product of experts",
            "trained bias branch combined by product of experts; no counterfactual, no tau",
            {"debias": "poe", "counterfactual": False}),
    Variant("learned_mixin", "learned-mixin",
            "trained bias branch combined by learned-mixin; no counterfactual, no tau",
            {"debias": "learned_mixin", "counterfactual": False}),
    Variant("group_select", "group-balanced selection",
            "checkpoint and tau by the mean of the bias-aligned and bias-conflicting validation groups",
            {"selection": "group_mean"}),
)}
ALL_VARIANT_NAMES: tuple[str, ...] = VARIANT_NAMES + tuple(DEBIAS_VARIANTS)


def get_variant(name: str) -> Variant:
    if name in VARIANTS:
        return VARIANTS[name]
    if name in DEBIAS_VARIANTS:
        return DEBIAS_VARIANTS[name]
    raise ConfigError(f"unknown ablation variant '{name}': expected one of {', '.join(ALL_VARIANT_NAMES)}")


def parse_variants(spec: str | Iterable[str] | None) -> list[str]:
    """``None`` / ``"all"`` -> every Table V variant in its order; else a comma list (or iterable) of
    names, Table V variants and debiasing variants alike.

    Order follows Table V, then the debiasing variants; duplicates are dropped, unknown names raise
    ``ValueError``.
    """
    if spec is None:
        return list(VARIANT_NAMES)
    names: Sequence[str] = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    names = [n for n in names if n]
    if not names or names == ["all"]:
        return list(VARIANT_NAMES)
    for n in names:
        get_variant(n)
    wanted = set(names)
    return [n for n in ALL_VARIANT_NAMES if n in wanted]


def changes_text(changes: dict[str, Any]) -> str:
    """``{"head": "linear", "model_config": {"use_mct": False}}`` -> 'head="linear", model_config.use_mct=false'."""
    if not changes:
        return "—"
    parts = []
    for k, v in changes.items():
        if isinstance(v, dict):
            parts += [f"{k}.{kk}={json.dumps(vv)}" for kk, vv in v.items()]
        else:
            parts.append(f"{k}={json.dumps(v)}")
    return ", ".join(parts)


def describe_variants(names: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Rows (name, label, description, changes) for listings and reports."""
    return [{"name": v.name, "label": v.label, "description": v.description, "changes": v.changes}
            for v in (get_variant(n) for n in (names or ALL_VARIANT_NAMES))]

