"""Checkpoints as safetensors (no pickles anywhere), written atomically.

- ``model.safetensors``: the model's state (parameters and buffers such as MCM statistics);
  a frozen text encoder is left out (its weights are the published ones, named in config.json).
- ``resume.safetensors``: the state after the last completed epoch: model, optimizer, random
  generators, and the trainer's bookkeeping (JSON in the file's metadata), one file so that a
  crash can never leave the parts out of step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from cider_mer.errors import CiderError
from cider_mer.io_utils import atomic_path, to_jsonable

ENCODER_PREFIX = "backbone.text_encoder."


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share memory; clone what is not a standalone block.
    seen: set[int] = set()
    out = {}
    for k, v in tensors.items():
        v = v.detach().cpu()
        ptr = v.untyped_storage().data_ptr() if v.numel() else -1
        out[k] = v.clone().contiguous() if ptr in seen or not v.is_contiguous() else v
        if ptr != -1:
            seen.add(ptr)
    return out


def _save(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    with atomic_path(path) as tmp:
        save_file(_contiguous(tensors), str(tmp), metadata=metadata)


def model_state(model: nn.Module, include_encoder: bool) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    if not include_encoder:
        state = {k: v for k, v in state.items() if not k.startswith(ENCODER_PREFIX)}
    return state


def save_model(path: str | Path, model: nn.Module, include_encoder: bool, metadata: dict[str, Any]) -> None:
    _save(path, model_state(model, include_encoder), {"cider_mer": json.dumps(to_jsonable(metadata))})


def load_model(path: str | Path, model: nn.Module) -> dict[str, Any]:
    """Load weights saved by :func:`save_model` into ``model``; returns the stored metadata.

    Keys must match exactly, except that a file without encoder weights leaves the (frozen,
    published) encoder as it is.
    """
    path = str(path)
    try:
        state = load_file(path)
        with safe_open(path, framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("cider_mer", "{}"))
    except (OSError, ValueError, RuntimeError) as exc:
        raise CiderError(f"{path}: cannot read the model weights ({exc})") from exc
    expected = model.state_dict()
    has_encoder = any(k.startswith(ENCODER_PREFIX) for k in state)
    wanted = {k for k in expected if has_encoder or not k.startswith(ENCODER_PREFIX)}
    missing, unexpected = sorted(wanted - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CiderError(f"{path}: weights do not fit the model built from config.json "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise CiderError(f"{path}: weight '{k}' has shape {tuple(v.shape)}, the model expects {tuple(expected[k].shape)}")
    model.load_state_dict(state, strict=False)
    return meta


def save_resume(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, include_encoder: bool,
                generators: dict[str, torch.Tensor], bookkeeping: dict[str, Any]) -> None:
    """Everything needed to continue a run exactly from the end of the last completed epoch."""
    tensors = {f"model.{k}": v for k, v in model_state(model, include_encoder).items()}
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in opt["state"].items():
        for key, value in st.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    for name, state in generators.items():
        tensors[f"rng.{name}"] = state
    meta = {"bookkeeping": bookkeeping, "param_groups": opt["param_groups"], "optim_scalars": scalars}
    _save(path, tensors, {"cider_mer": json.dumps(to_jsonable(meta))})


def load_resume(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Restore model and optimizer from :func:`save_resume`; returns (generator states, bookkeeping)."""
    path = str(path)
    try:
        tensors = load_file(path)
        with safe_open(path, framework="pt") as f:
            meta = json.loads(f.metadata()["cider_mer"])
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise CiderError(f"{path}: cannot read the resume state ({exc})") from exc
    model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(model_sd, strict=False)
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, key = k.split(".", 2)
            state.setdefault(int(idx), {})[key] = v
    for idx, values in meta["optim_scalars"].items():
        state.setdefault(int(idx), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    generators = {k[len("rng."):]: v for k, v in tensors.items() if k.startswith("rng.")}
    return generators, meta["bookkeeping"]
