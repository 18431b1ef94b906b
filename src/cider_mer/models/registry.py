"""The model registry: ``--model NAME`` picks a backbone; MACI or a plain head goes on top.

A backbone registers itself with :func:`register_backbone`, giving its config dataclass and a
builder ``(config, shapes, text_encoder) -> Backbone``. :func:`build_model` then adds the head.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Optional

from torch import nn

from cider_mer.errors import ConfigError
from cider_mer.maci.mcm import MCMHead
from cider_mer.models.interface import Backbone, DataShapes, LinearHead, MerModel
from cider_mer.validation import SettingError


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone: its config dataclass, its builder and where it comes from."""

    name: str
    config_cls: type
    build: Callable[[Any, DataShapes, Optional[nn.Module]], Backbone]
    description: str
    source: str
    mssd_default: bool = False  # trained with MSSD unless the config says otherwise (else: its own objective)
    lr_default: float = 1e-3  # the published learning rate of the non-encoder parameters (TrainConfig.lr=None)
    batch_default: int = 128  # the published batch size (TrainConfig.batch_size=None)
    accumulation_default: int = 1  # batches whose gradients are summed per step (TrainConfig.grad_accumulation=None)


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(name: str, config_cls: type, description: str, source: str, mssd_default: bool = False,
                      lr_default: float = 1e-3, batch_default: int = 128, accumulation_default: int = 1):
    """Decorator registering a backbone class (or any ``build(config, shapes, text_encoder) -> Backbone``)
    under ``name``."""

    def wrap(build):
        _REGISTRY[name] = BackboneSpec(name, config_cls, build, description, source, mssd_default, lr_default,
                                       batch_default, accumulation_default)
        return build

    return wrap


def available_models() -> dict[str, BackboneSpec]:
    """Every registered backbone by name (the built-in ones register when ``cider_mer.models`` is imported)."""
    return dict(_REGISTRY)


def get_spec(name: str) -> BackboneSpec:
    specs = available_models()
    if name not in specs:
        raise ConfigError(f"unknown model '{name}': expected one of {sorted(specs)}")
    return specs[name]


def make_config(name: str, values: Any = None) -> Any:
    """The typed config of backbone ``name`` from ``None`` (defaults), a dict (unknown keys refused
    by name: the one place that checks them) or an instance of its config class."""
    spec = get_spec(name)
    if isinstance(values, spec.config_cls):
        return values
    if values is not None and not isinstance(values, dict):
        raise ConfigError(f"the settings of model '{name}' must be a {spec.config_cls.__name__} or a dict, "
                          f"got {type(values).__name__}")
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(spec.config_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"model '{name}' has no setting(s) {unknown}; known: {sorted(known)}")
    try:
        return spec.config_cls(**values)
    except SettingError:
        raise  # already names the setting
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model '{name}': {exc}") from exc


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
    config = make_config(name, config)
    backbone = spec.build(config, shapes, text_encoder)
    if maci:
        head: nn.Module = MCMHead(
            joint_dim=backbone.joint_dim,
            feature_dims=(shapes.text_dim, shapes.audio_dim, shapes.vision_dim),
            hidden=getattr(config, "hidden", maci_hidden),
            num_classes=shapes.num_classes,
        )
    else:
        head = LinearHead(backbone.joint_dim, shapes.num_classes)
    return MerModel(backbone, head)
