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
from safetensors import SafetensorError, safe_open
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


def _read(path: str, what: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and the ``cider_mer`` metadata (JSON) of a safetensors file; a file that is not a
    complete safetensors file (empty, truncated, another format, a directory) is a CiderError."""
    try:
        tensors = load_file(path)
        with safe_open(path, framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("cider_mer", "{}"))
    except FileNotFoundError:
        raise
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:  # JSONDecodeError is a ValueError
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CiderError(f"{path}: cannot read {what}: not a complete safetensors file ({detail})") from None
    if not isinstance(meta, dict):
        raise CiderError(f"{path}: cannot read {what}: its 'cider_mer' metadata is not a JSON object")
    return tensors, meta


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``cider_mer`` metadata of a safetensors file (its header only; no tensor is read); {} when
    the file is absent or unreadable."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("cider_mer", "{}"))
    except (SafetensorError, OSError, ValueError, RuntimeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _check_finite(path: str, tensors: dict[str, torch.Tensor]) -> None:
    for k, v in tensors.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise CiderError(f"{path}: weight '{k}' holds non-finite values (NaN or inf): the file is corrupted "
                             "or the training that wrote it diverged")


def load_model(path: str | Path, model: nn.Module) -> dict[str, Any]:
    """Load weights saved by :func:`save_model` into ``model``; returns the stored metadata.

    Keys must match exactly, except that a file without encoder weights leaves the (frozen,
    published) encoder as it is. Every floating-point weight must be finite.
    """
    path = str(path)
    state, meta = _read(path, "the model weights")
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
    _check_finite(path, state)
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
    """Restore model and optimizer from :func:`save_resume`; returns (generator states, bookkeeping).

    A file that is unreadable, non-finite or does not fit ``model`` and ``optimizer`` is a CiderError
    naming it (the model may then hold part of the state: rebuild it before retrying).
    """
    path = str(path)
    tensors, meta = _read(path, "the resume state")
    model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    _check_finite(path, model_sd)
    try:
        model.load_state_dict(model_sd, strict=False)
        state: dict[int, dict[str, Any]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, idx, key = k.split(".", 2)
                state.setdefault(int(idx), {})[key] = v
        for idx, values in meta["optim_scalars"].items():
            state.setdefault(int(idx), {}).update(values)
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        bookkeeping = dict(meta["bookkeeping"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
        raise CiderError(f"{path}: the resume state does not fit this run ({type(exc).__name__}: {exc})") from None
    generators = {k[len("rng."):]: v for k, v in tensors.items() if k.startswith("rng.")}
    return generators, bookkeeping
