"""Shared fixtures: tiny in-memory datasets and paths to the real data in ../shared (optional)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CIDER_SHARED_DIR", REPO.parent / "shared"))
MOSI_CSV = SHARED / "data" / "mosi" / "label.csv"


def make_split(n: int, rng: np.random.Generator, L: int = 12, Ta: int = 20, Tv: int = 24,
               da: int = 5, dv: int = 7, aligned: bool = False) -> dict:
    """A small valid split in the file format (lengths >= 2 texts, variable frames)."""
    if aligned:
        Ta = Tv = L
    lengths = rng.integers(3, L + 1, size=n)
    tb = np.zeros((n, 3, L), dtype=np.float32)
    for i, ln in enumerate(lengths):
        tb[i, 0, 0] = 101
        tb[i, 0, 1:ln - 1] = rng.integers(1000, 5000, size=ln - 2)
        tb[i, 0, ln - 1] = 102
        tb[i, 1, :ln] = 1
    y = np.round(rng.uniform(-3, 3, size=n), 1).astype(np.float32)
    y[: max(1, n // 10)] = 0.0
    out = {
        "text_bert": tb,
        "audio": rng.normal(size=(n, Ta, da)).astype(np.float32),
        "vision": rng.normal(size=(n, Tv, dv)).astype(np.float32),
        "regression_labels": y,
        "raw_text": np.array([f"sample {i}" for i in range(n)], dtype=object),
        "id": np.array([f"vid{i // 3}$_${i % 3}" for i in range(n)], dtype=object),
    }
    if aligned:
        mask = tb[:, 1, :, None]
        out["audio"] *= mask
        out["vision"] *= mask
    else:
        a_len = rng.integers(1, Ta + 1, size=n)
        v_len = rng.integers(1, Tv + 1, size=n)
        out["audio"] *= (np.arange(Ta)[None, :] < a_len[:, None])[..., None]
        out["vision"] *= (np.arange(Tv)[None, :] < v_len[:, None])[..., None]
        out["audio_lengths"] = a_len
        out["vision_lengths"] = v_len
    return out


def make_dataset_dict(seed: int = 0, sizes=(30, 10, 12), **kw) -> dict:
    rng = np.random.default_rng(seed)
    return {name: make_split(n, rng, **kw) for name, n in zip(("train", "valid", "test"), sizes)}


@pytest.fixture
def tiny_dict():
    return make_dataset_dict()


@pytest.fixture
def one_torch_thread():
    """One intra-op thread for the duration of a test: tiny models gain nothing from more, and a
    shared 2-core machine loses a lot to thread oversubscription."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def mosi_csv():
    if not MOSI_CSV.is_file():
        pytest.skip(f"real MOSI labels not available at {MOSI_CSV}")
    return MOSI_CSV
