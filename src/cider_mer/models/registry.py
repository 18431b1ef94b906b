"""The model registry: ``--model NAME`` picks a backbone; MACI or a plain head goes on top.

A backbone registers itself with :func:`register_backbone`, giving its config dataclass and a
builder ``(config, shapes, text_encoder) -> Backbone``. :func:`build_model` then adds the head.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Optional

from torch import nn

from cider_mer.models.interface import Backbone, DataShapes, LinearHead, MerModel


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone: its config dataclass, its builder and where it comes from."""

    name: str
    config_cls: type
    build: Callable[[Any, DataShapes, Optional[nn.Module]], Backbone]
    description: str
    source: str


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(name: str, config_cls: type, description: str, source: str):
    """Decorator registering ``build(config, shapes, text_encoder) -> Backbone`` under ``name``."""

    def wrap(build):
        _REGISTRY[name] = BackboneSpec(name, config_cls, build, description, source)
        return build

    return wrap


def available_models() -> dict[str, BackboneSpec]:
    """Every registered backbone by name (the built-in ones register when ``cider_mer.models`` is imported)."""
    return dict(_REGISTRY)


def get_spec(name: str) -> BackboneSpec:
    specs = available_models()
    if name not in specs:
        raise ValueError(f"unknown model '{name}': expected one of {sorted(specs)}")
    return specs[name]


def make_config(name: str, values: Optional[dict[str, Any]] = None):
    """Build the model's config dataclass from a dict, refusing unknown keys by name."""
    spec = get_spec(name)
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(spec.config_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"model '{name}' has no setting(s) {unknown}; known: {sorted(known)}")
    return spec.config_cls(**values)


def build_model(
    name: str,
    shapes: DataShapes,
    config: Any = None,
    text_encoder: Optional[nn.Module] = None,
    maci: bool = True,
    maci_hidden: int = 32,
) -> MerModel:
    """Backbone ``name`` with MACI's MCM head (``maci=True``) or a plain linear head.

    The MCM MLP width is the backbone's ``hidden`` (E) when it has one, else ``maci_hidden``.
    """
    spec = get_spec(name)
    if config is None or isinstance(config, dict):
        config = make_config(name, config)
    backbone = spec.build(config, shapes, text_encoder)
    if maci:
        from cider_mer.maci.mcm import MCMHead

        head: nn.Module = MCMHead(
            joint_dim=backbone.joint_dim,
            feature_dims=(shapes.text_dim, shapes.audio_dim, shapes.vision_dim),
            hidden=getattr(config, "hidden", maci_hidden),
            num_classes=shapes.num_classes,
        )
    else:
        head = LinearHead(backbone.joint_dim, shapes.num_classes)
    return MerModel(backbone, head)
