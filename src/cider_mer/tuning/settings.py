"""What every trial of one study must share, stored in the study and checked by each worker."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from cider_mer.config import TrainConfig
from cider_mer.data.labels import SELECTION_METRIC
from cider_mer.errors import CiderError
from cider_mer.io_utils import json_normal
from cider_mer.tuning.space import MODEL, Param

if TYPE_CHECKING:
    import optuna

SETTINGS_ATTR = "cider_settings"
# Settings that may differ between workers of one study (they do not change what a trial computes).
RUNTIME_SETTINGS = ("device", "compile", "eval_batch_size")


class TuneError(CiderError):
    """A tuning request that cannot go on (settings differ from the study's, a trial folder is taken...)."""


def study_settings(base: TrainConfig, data_path: str | Path, space: Sequence[Param]) -> dict[str, Any]:
    """The base config less the searched and runtime settings, the dataset's content, the search
    space and the metric (JSON-ready)."""
    from cider_mer.text.cache import dataset_key
    from cider_mer.text.encoder import encoder_label

    cfg = base.to_dict()
    for name in RUNTIME_SETTINGS:
        cfg.pop(name, None)
    for p in space:
        (cfg["model_config"] if p.target == MODEL else cfg).pop(p.name, None)
    cfg["text_encoder"] = encoder_label(base.text_encoder)
    return {"base_config": cfg, "data_sha256_16": dataset_key(data_path), "space": [p.describe() for p in space],
            "metric": SELECTION_METRIC[base.task]}


def _flatten(value: object, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): value}


def check_settings(study: optuna.Study, settings: dict[str, Any], storage_shown: str) -> None:
    """Store the settings in a new study; refuse to add trials with other settings to an old one."""
    ours = json_normal(settings)
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored is None:
        study.set_user_attr(SETTINGS_ATTR, ours)
        return
    if stored == ours:
        return
    a, b = _flatten(stored), _flatten(ours)
    diffs = [f"{k}: {a.get(k, '-')} in the study, {b.get(k, '-')} here" for k in sorted(set(a) | set(b))
             if a.get(k) != b.get(k)]
    raise TuneError(f"study '{study.study_name}' in {storage_shown} was created with other settings "
                    f"({'; '.join(diffs[:4])}{' ...' if len(diffs) > 4 else ''}); "
                    "use the same settings or another --study")
