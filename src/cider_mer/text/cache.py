"""Frozen-encoder token features, computed once per (dataset content, encoder, split) and cached.

The cache lives in ``$CIDER_CACHE_DIR`` or, by default, in ``.cider_cache/`` next to the dataset
file. Keys use the dataset's content hash (the SHA-256 of a pickle's bytes; a mapped directory's
manifest ``content_sha256``), so a renamed dataset hits the cache and an edited one misses it.
Feature files are ``.npy`` arrays written batch by batch into a memory map and read back mapped,
so an (N, L, D_t) split is never held whole in RAM. Writes are atomic; each entry ``NAME`` has its
SHA-256 in ``NAME.sha256`` beside it, checked on every read: an entry that is damaged, truncated,
of the wrong shape or without its checksum is recomputed (and rewritten) with a
:class:`CacheWarning`, never used.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path
from typing import BinaryIO, Callable, Optional, TypeVar

import numpy as np
import torch

from cider_mer.data.mapped import mapped_key, release_pages
from cider_mer.io_utils import atomic_path, atomic_write_text, file_sha256
from cider_mer.text.encoder import TextEncoder

T = TypeVar("T")


class CacheWarning(UserWarning):
    """A cache entry failed its integrity check; it is recomputed."""

_HASHES: dict[tuple[str, float, int], str] = {}


def cache_dir_for(data_path: str | Path) -> Path:
    env = os.environ.get("CIDER_CACHE_DIR")
    return Path(env) if env else Path(data_path).resolve().parent / ".cider_cache"


def dataset_key(data_path: str | Path) -> str:
    """First 16 hex digits of the dataset's content hash: a file's SHA-256 (memoised per path, size
    and mtime), or a mapped directory's manifest hash (verified against the arrays on loading)."""
    p = Path(data_path).resolve()
    if p.is_dir():
        return mapped_key(p)
    st = p.stat()
    memo = (str(p), st.st_mtime, st.st_size)
    if memo not in _HASHES:
        _HASHES[memo] = file_sha256(p)[:16]
    return _HASHES[memo]


def encoder_fingerprint(encoder: TextEncoder) -> str:
    """Name plus a short hash of some weights and the compute precision, so two encoders with one
    name (or one encoder at two precisions) never share a cache."""
    import hashlib

    h = hashlib.sha256(f"{encoder.name}|{encoder.compute_dtype}".encode())
    for i, p in enumerate(encoder.parameters()):
        if i >= 4:
            break
        h.update(p.detach().flatten()[:4096].float().cpu().numpy().tobytes())
    return f"{encoder.name.replace('/', '_')}-{h.hexdigest()[:8]}"


def _checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def write_cache_entry(path: Path, save: Callable[[BinaryIO], None]) -> None:
    """Write an entry with ``save(file)`` atomically, then its SHA-256 into ``NAME.sha256``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            save(f)
    _write_checksum(path)


def _write_checksum(path: Path) -> None:
    """Record the SHA-256 of a freshly written entry in ``NAME.sha256``."""
    atomic_write_text(_checksum_path(path), file_sha256(path) + "\n")


def read_cache_entry(path: Path, load: Callable[[Path], T]) -> Optional[T]:
    """``load(path)`` when the entry exists and matches its checksum; else None (the caller
    recomputes), with a :class:`CacheWarning` when an entry was there but failed the check.
    ``load`` raises ValueError for contents of the wrong shape."""
    if not path.is_file():
        return None
    checksum = _checksum_path(path)
    try:
        if not checksum.is_file():
            problem = "it has no checksum file"
        elif checksum.read_text(encoding="utf-8").strip() != file_sha256(path):
            problem = "its bytes do not match its checksum"
        else:
            return load(path)
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        problem = f"it cannot be read ({type(exc).__name__}: {exc})"
    warnings.warn(f"{path}: cache entry ignored and recomputed: {problem}", CacheWarning, stacklevel=3)
    return None


@torch.no_grad()
def encode_texts(encoder: TextEncoder, ids: np.ndarray, mask: np.ndarray, segment: np.ndarray,
                 device: torch.device | str = "cpu", batch_size: int = 256,
                 out: Optional[np.ndarray] = None) -> np.ndarray:
    """(N, L) ids/mask/segment -> (N, L, D_t) float32 states, batched by similar length; written
    into ``out`` when given (e.g. a writable memory map, whose pages are released batch by batch)."""
    n, length = ids.shape
    if out is None:
        out = np.zeros((n, length, encoder.dim), dtype=np.float32)
    order = np.argsort(mask.sum(axis=1), kind="stable")
    was_training = encoder.training
    encoder.eval()
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        t = lambda a: torch.as_tensor(a[idx]).to(device)  # noqa: E731
        out[idx] = encoder(t(ids).long(), t(mask).float(), t(segment).long()).float().cpu().numpy()
        release_pages(out, np.sort(idx))
    encoder.train(was_training)
    return out


def cached_text_features(data_path: str | Path, split_name: str, ids: np.ndarray, mask: np.ndarray,
                         segment: np.ndarray, encoder: TextEncoder, device: torch.device | str = "cpu",
                         batch_size: int = 256, cache_dir: Optional[Path] = None) -> np.ndarray:
    """Frozen-encoder states (N, L, D_t) of one split: a read-only memory map of the cache file,
    computed and written first when missing."""
    directory = cache_dir or cache_dir_for(data_path)
    path = directory / f"textfeat-{dataset_key(data_path)}-{encoder_fingerprint(encoder)}-{split_name}.npy"
    expected = (*ids.shape, encoder.dim)

    def load(p: Path) -> np.ndarray:
        feats = np.load(p, mmap_mode="r", allow_pickle=False)
        if feats.shape != expected or feats.dtype != np.float32:
            raise ValueError(f"shape {feats.shape} {feats.dtype}, expected {expected} float32")
        return feats

    feats = read_cache_entry(path, load)
    if feats is None:
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=expected)
            encode_texts(encoder, ids, mask, segment, device=device, batch_size=batch_size, out=out)
            out.flush()
            del out
        _write_checksum(path)
        feats = np.load(path, mmap_mode="r", allow_pickle=False)
    return feats
