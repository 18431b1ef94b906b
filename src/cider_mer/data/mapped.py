"""The memory-mapped dataset form: a directory of ``.npy`` arrays plus a ``dataset.json`` manifest.

Why ``.npy``: numpy maps it with ``np.load(mmap_mode="r")`` (no pickle: ``allow_pickle=False``),
its header states shape and dtype, and rows of a C-ordered array are contiguous, so a batch is a
gather of whole rows. (safetensors would add a dependency to the data path and maps a whole file
as one buffer; it brings nothing here.)

Layout of ``DIR`` (``cider data convert IN.pkl --out DIR``)::

    dataset.json               the manifest (below)
    train/text_bert.npy        (N, 3, L_t) int64     ids, attention mask, segment ids
    train/audio.npy            (N, T_a, d_a) float32
    train/vision.npy           (N, T_v, d_v) float32
    train/audio_lengths.npy    (N,) int64            unaligned files only (as in the pickle)
    train/vision_lengths.npy   (N,) int64
    train/regression_labels.npy      (N,) float32
    train/classification_labels.npy  (N,) int64
    train/raw_text.utf8.npy    (B,) uint8            optional: the strings' UTF-8 bytes, concatenated
    train/raw_text.offsets.npy (N + 1,) int64        string i is bytes[offsets[i]:offsets[i + 1]]
    train/id.utf8.npy, train/id.offsets.npy          optional sample ids, likewise
    valid/..., test/...

``dataset.json``: ``format`` / ``format_version``, ``aligned``, per split its arrays (file, shape,
dtype, sha256 of the file), ``text`` (L_t and the largest token and segment ids, the vocabulary
a text encoder needs), ``extra`` (the dataset's other top-level fields, e.g. label conventions),
``source`` and ``content_sha256``: SHA-256 over every array file's digest and ``aligned``/``extra``.
That hash is the dataset's content key (:func:`cider_mer.text.cache.dataset_key`, run records).

Loading (:func:`load_mapped`) checks the manifest, every header against it and every file size
against the header (before mapping anything), then reads each file once in chunks to verify its
digest and, for audio/vision, the finiteness rule; the other rules are those of the pickle
(:func:`cider_mer.data.dataset.dataset_from_dict`). Audio and vision stay mapped; the small arrays
are read into memory. Writing goes to a temporary directory renamed into place.
"""

from __future__ import annotations

import hashlib
import io
import json
import mmap
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from cider_mer.data.dataset import (
    SPLITS,
    DatasetError,
    FiniteCheck,
    MerDataset,
    Split,
    dataset_from_dict,
    row_chunks,
)
from cider_mer.io_utils import to_jsonable

MANIFEST = "dataset.json"
FORMAT = "cider-mer-mapped"
FORMAT_VERSION = 1
MAX_MANIFEST_BYTES = 16 << 20
STRING_KEYS = ("raw_text", "id")
#: key -> (dtype, ndim) of every array file the format knows.
ARRAYS: dict[str, tuple[str, int]] = {
    "text_bert": ("<i8", 3), "audio": ("<f4", 3), "vision": ("<f4", 3),
    "audio_lengths": ("<i8", 1), "vision_lengths": ("<i8", 1),
    "regression_labels": ("<f4", 1), "classification_labels": ("<i8", 1),
    **{f"{k}.{part}": (dt, 1) for k in STRING_KEYS for part, dt in (("utf8", "|u1"), ("offsets", "<i8"))},
}
MAPPED_KEYS = ("audio", "vision")  # the large arrays: kept mapped, values scanned while hashing
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def is_mapped_dir(path: str | Path) -> bool:
    """Whether ``path`` is a directory holding a manifest."""
    return Path(path).is_dir() and (Path(path) / MANIFEST).is_file()


# ----------------------------------------------------------------------------------------------
# page release: mapped pages a batch touched leave the process's resident set


def _mapping(arr: np.ndarray) -> Optional[mmap.mmap]:
    base = arr
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    return base


def is_mapped(arr: np.ndarray) -> bool:
    """Whether ``arr`` is a view of a memory-mapped file."""
    return _mapping(arr) is not None


# A read fault maps more than its own page (the kernel's fault-around and read-around of file
# mappings): releasing a margin around each range keeps those pages from piling up. Measured on
# MOSEI-shaped audio (148 KB rows, batches of 128): 64 KiB margins left ~2.4 MB per batch mapped, 1 MiB none.
_MAP_AROUND = 1 << 20


def release_pages(arr: np.ndarray, rows: Optional[np.ndarray] = None) -> None:
    """Drop the mapped pages of ``arr`` (rows ``rows``, sorted; all when None) from this process.

    A file-backed page counts in the resident set from its first read until released; the data
    stays in the page cache, so a later read costs a page fault, not I/O. No-op for arrays in RAM.
    """
    mm = _mapping(arr)
    if mm is None or arr.size == 0 or not arr.flags.c_contiguous:
        return
    begin = arr.__array_interface__["data"][0] - np.frombuffer(mm, np.uint8, count=1).__array_interface__["data"][0]
    row = arr.strides[0] if arr.ndim else arr.nbytes
    if rows is None:
        spans = [(0, len(arr))]
    else:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return
        breaks = np.flatnonzero(np.diff(rows) > 1)
        starts = np.concatenate([rows[:1], rows[breaks + 1]])
        ends = np.concatenate([rows[breaks], rows[-1:]]) + 1
        spans = zip(starts.tolist(), ends.tolist())
    for lo, hi in spans:
        a = max(0, (begin + lo * row - _MAP_AROUND) // mmap.PAGESIZE * mmap.PAGESIZE)
        b = min(len(mm), begin + hi * row + _MAP_AROUND)
        if b > a:
            mm.madvise(mmap.MADV_DONTNEED, a, b - a)


# ----------------------------------------------------------------------------------------------
# writing


def _content_hash(digests: dict[str, str], aligned: bool, extra: dict[str, Any]) -> str:
    h = hashlib.sha256(f"{FORMAT}:{FORMAT_VERSION}:aligned={aligned}\n".encode())
    h.update(json.dumps(extra, sort_keys=True).encode())
    for rel in sorted(digests):
        h.update(f"\n{rel}\t{digests[rel]}".encode())
    return h.hexdigest()


class MappedWriter:
    """Writes a mapped dataset directory: arrays streamed chunk by chunk (each file hashed as it is
    written, so memory stays at one chunk), then the manifest; :meth:`commit` renames the
    temporary directory into place. Used as a context manager, an error leaves nothing behind."""

    def __init__(self, out: str | Path, aligned: bool, extra: Optional[dict[str, Any]] = None,
                 source: Optional[str] = None, force: bool = False):
        self.out = Path(out)
        if self.out.exists() and not (force and is_mapped_dir(self.out)):
            hint = "pass --force to replace it" if is_mapped_dir(self.out) else "choose a new directory"
            raise DatasetError(f"{self.out}: already exists; {hint}")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".tmp", dir=self.out.parent))
        self.aligned, self.extra, self.source = aligned, to_jsonable(extra or {}), source
        self.splits: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in SPLITS}
        self.text: dict[str, int] = {}

    def __enter__(self) -> "MappedWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)

    def write_array(self, split: str, key: str, shape: Sequence[int], chunks: Iterable[np.ndarray]) -> None:
        """Write ``split/key.npy`` of ``shape`` from row chunks (cast to the key's dtype)."""
        dtype, ndim = ARRAYS[key]
        shape = tuple(int(x) for x in shape)
        if len(shape) != ndim:
            raise DatasetError(f"{split}/{key}: expected {ndim} dimensions, got shape {shape}")
        rel = f"{split}/{key}.npy"
        path = self.tmp / rel
        path.parent.mkdir(exist_ok=True)
        header = io.BytesIO()
        np.lib.format.write_array_header_2_0(header, {"descr": dtype, "fortran_order": False, "shape": shape})
        h, rows = hashlib.sha256(header.getvalue()), 0
        with open(path, "wb") as f:
            f.write(header.getvalue())
            for chunk in chunks:
                chunk = np.ascontiguousarray(chunk, dtype=np.dtype(dtype))
                if chunk.shape[1:] != shape[1:]:
                    raise DatasetError(f"{rel}: chunk of shape {chunk.shape} does not fit {shape}")
                if key == "text_bert" and chunk.size:
                    self.text["max_token_id"] = max(self.text.get("max_token_id", 0), int(chunk[:, 0].max()))
                    self.text["max_segment_id"] = max(self.text.get("max_segment_id", 0), int(chunk[:, 2].max()))
                    self.text["text_len"] = shape[2]
                data = memoryview(chunk).cast("B")
                f.write(data)
                h.update(data)
                rows += len(chunk)
            f.flush()
            os.fsync(f.fileno())
        if rows != shape[0]:
            raise DatasetError(f"{rel}: {rows} rows written, the shape says {shape[0]}")
        self.splits[split][key] = {"file": rel, "shape": list(shape), "dtype": dtype, "sha256": h.hexdigest()}

    def write_whole(self, split: str, key: str, arr: np.ndarray) -> None:
        """Write an in-memory (or mapped) array in row chunks of about 64 MiB."""
        step = row_chunks(len(arr), arr[0].nbytes if len(arr) else 1).step

        def chunks():
            for start in range(0, len(arr), step):
                yield arr[start:start + step]
                release_pages(arr, np.arange(start, min(start + step, len(arr))))
        self.write_array(split, key, arr.shape, chunks())

    def write_strings(self, split: str, key: str, values: Sequence[str]) -> None:
        """Write strings as their concatenated UTF-8 bytes and (N + 1,) offsets."""
        encoded = [str(v).encode("utf-8") for v in values]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
        self.write_whole(split, f"{key}.utf8", np.frombuffer(b"".join(encoded), dtype=np.uint8))
        self.write_whole(split, f"{key}.offsets", offsets)

    def manifest(self) -> dict[str, Any]:
        digests = {e["file"]: e["sha256"] for arrays in self.splits.values() for e in arrays.values()}
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "aligned": self.aligned,
                "splits": {name: {"arrays": arrays} for name, arrays in self.splits.items()},
                "text": self.text, "extra": self.extra, "source": self.source,
                "content_sha256": _content_hash(digests, self.aligned, self.extra)}

    def commit(self) -> Path:
        """Write the manifest and move the directory into place (replacing an old mapped dataset)."""
        (self.tmp / MANIFEST).write_text(json.dumps(self.manifest(), indent=1) + "\n", encoding="utf-8")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o777 & ~umask)  # mkdtemp creates 0700; the finished directory gets the usual mode
        old = None
        if self.out.exists():
            old = self.out.with_name(f".{self.out.name}.old-{os.getpid()}")
            os.replace(self.out, old)
        os.replace(self.tmp, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.out


def split_arrays(split: Split, aligned: bool) -> dict[str, np.ndarray]:
    """The arrays the mapped form stores for ``split`` (strings excluded)."""
    out = {"text_bert": split.text_bert, "audio": split.audio, "vision": split.vision,
           "regression_labels": split.regression_labels, "classification_labels": split.classification_labels}
    if not aligned:
        out["audio_lengths"], out["vision_lengths"] = split.audio_lengths, split.vision_lengths
    return out


def write_mapped(data: MerDataset, out: str | Path, force: bool = False) -> Path:
    """Write ``data`` as a mapped dataset directory (atomically); returns its path."""
    source = Path(data.path).name if data.path else None
    with MappedWriter(out, data.aligned, data.extra, source, force) as w:
        for name, split in data.splits.items():
            for key, arr in split_arrays(split, data.aligned).items():
                w.write_whole(name, key, arr)
            for key, values in (("raw_text", split.raw_text), ("id", split.ids)):
                if values is not None:
                    w.write_strings(name, key, values.tolist())
        return w.commit()


def convert_dataset(src: str | Path, out: str | Path, force: bool = False) -> MerDataset:
    """``cider data convert``: load ``src`` (any form, validated), write it mapped to ``out`` and
    return the mapped dataset as loaded back (checked like any other)."""
    from cider_mer.data.dataset import load_dataset

    write_mapped(load_dataset(src), out, force=force)
    return load_dataset(out)


# ----------------------------------------------------------------------------------------------
# reading


def _fail(path: Path, expectation: str) -> DatasetError:
    return DatasetError(f"{path}: {expectation}")


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The checked manifest of a mapped dataset directory; raises :class:`DatasetError`."""
    d = Path(directory)
    path = d / MANIFEST
    if not path.is_file():
        raise _fail(d, f"a directory without {MANIFEST}; expected a dataset file or a directory written by "
                       "`cider data convert`")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise _fail(path, f"{path.stat().st_size} bytes, more than a manifest may hold ({MAX_MANIFEST_BYTES})")
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _fail(path, f"not valid JSON ({exc})") from exc
    if not isinstance(m, dict):
        raise _fail(path, "expected a JSON object")
    if m.get("format") != FORMAT or m.get("format_version") != FORMAT_VERSION:
        raise _fail(path, f"expected format '{FORMAT}' version {FORMAT_VERSION}, got "
                          f"'{m.get('format')}' version {m.get('format_version')}")
    if not isinstance(m.get("aligned"), bool):
        raise _fail(path, "field 'aligned': expected true or false")
    if not isinstance(m.get("extra", {}), dict):
        raise _fail(path, "field 'extra': expected an object")
    if not isinstance(m.get("content_sha256"), str) or not _HEX64.match(m["content_sha256"]):
        raise _fail(path, "field 'content_sha256': expected 64 hex digits")
    splits = m.get("splits")
    if not isinstance(splits, dict) or sorted(splits) != sorted(SPLITS):
        raise _fail(path, f"field 'splits': expected exactly {list(SPLITS)}")
    root = d.resolve()
    for name in SPLITS:
        arrays = splits[name].get("arrays") if isinstance(splits[name], dict) else None
        if not isinstance(arrays, dict):
            raise _fail(path, f"splits.{name}.arrays: expected an object")
        for key, e in arrays.items():
            where = f"splits.{name}.arrays.{key}"
            if key not in ARRAYS:
                raise _fail(path, f"{where}: unknown array (known: {', '.join(ARRAYS)})")
            if not isinstance(e, dict) or not isinstance(e.get("file"), str):
                raise _fail(path, f"{where}: expected an object with 'file', 'shape', 'dtype' and 'sha256'")
            dtype, ndim = ARRAYS[key]
            shape = e.get("shape")
            if (not isinstance(shape, list) or len(shape) != ndim
                    or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in shape)):
                raise _fail(path, f"{where}.shape: expected {ndim} non-negative integers, got {shape!r}")
            if e.get("dtype") != dtype:
                raise _fail(path, f"{where}.dtype: expected '{dtype}', got {e.get('dtype')!r}")
            if not isinstance(e.get("sha256"), str) or not _HEX64.match(e["sha256"]):
                raise _fail(path, f"{where}.sha256: expected 64 hex digits")
            target = (d / e["file"]).resolve()
            if os.path.isabs(e["file"]) or root not in target.parents:
                raise _fail(path, f"{where}.file: '{e['file']}' is outside the dataset directory")
    return m


def _header(path: Path, entry: dict[str, Any]) -> int:
    """Check an array file's header and size against the manifest; returns the data offset."""
    if not path.is_file():
        raise _fail(path, "missing (listed in the manifest)")
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in read:
                raise ValueError(f"unsupported .npy version {version}")
            shape, fortran, dtype = read[version](f)
            offset = f.tell()
    except (ValueError, OSError, SyntaxError) as exc:
        raise _fail(path, f"not a readable .npy file ({exc})") from exc
    want = tuple(entry["shape"])
    if tuple(shape) != want:
        raise _fail(path, f"shape {tuple(shape)} differs from the manifest's {want}")
    if dtype.str != entry["dtype"] or fortran or dtype.hasobject:
        raise _fail(path, f"dtype {dtype.str}{' (Fortran order)' if fortran else ''} differs from the manifest's "
                          f"{entry['dtype']} (C order)")
    expected = offset + int(np.prod(want, dtype=object)) * dtype.itemsize
    if size != expected:
        raise _fail(path, f"{size} bytes, but its header claims {expected} ({want} x {dtype.itemsize} bytes + "
                          f"{offset} header)")
    return offset


def _scan(path: Path, offset: int, entry: dict[str, Any], check: Optional[FiniteCheck]) -> None:
    """Read a file once in chunks: verify its SHA-256 (and the finiteness rule with ``check``)."""
    shape, dtype = entry["shape"], np.dtype(entry["dtype"])
    row = int(np.prod(shape[1:], dtype=object)) * dtype.itemsize if len(shape) > 1 else dtype.itemsize
    step_rows = max(1, min(row_chunks(shape[0], row).step, shape[0]))
    buf = bytearray(step_rows * row)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(offset))
        for start in range(0, shape[0], step_rows):
            n = min(step_rows, shape[0] - start)
            view = memoryview(buf)[:n * row]
            if f.readinto(view) != n * row:
                raise _fail(path, "shorter than its header claims")
            h.update(view)
            if check is not None:
                check.update(np.frombuffer(view, dtype=dtype).reshape(n, *shape[1:]), start)
    if check is not None:
        check.finish()
    if h.hexdigest() != entry["sha256"]:
        raise _fail(path, "content differs from the manifest's sha256 (changed after conversion?); convert the "
                          "dataset again")


def _strings(directory: Path, arrays: dict[str, np.ndarray], entries: dict[str, Any], key: str) -> np.ndarray:
    """(N,) object array of str from ``key.utf8`` / ``key.offsets``."""
    data, offsets = arrays.pop(f"{key}.utf8"), arrays.pop(f"{key}.offsets")
    where = directory / entries[f"{key}.offsets"]["file"]
    if len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(data) or (np.diff(offsets) < 0).any():
        raise _fail(where, f"expected offsets rising from 0 to {len(data)} (the byte count of '{key}.utf8')")
    raw = data.tobytes()
    try:
        return np.array([raw[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())],
                        dtype=object)
    except UnicodeDecodeError as exc:
        raise _fail(directory / entries[f"{key}.utf8"]["file"], f"expected UTF-8 strings ({exc})") from exc


def load_mapped(directory: str | Path) -> MerDataset:
    """Load and validate a mapped dataset directory (audio/vision stay memory-mapped)."""
    d = Path(directory)
    m = read_manifest(d)
    files = {(name, key): (d / e["file"], e) for name in SPLITS for key, e in m["splits"][name]["arrays"].items()}
    offsets = {k: _header(path, e) for k, (path, e) in files.items()}  # every bound before any data is read
    digests = {e["file"]: e["sha256"] for _, e in files.values()}
    if _content_hash(digests, m["aligned"], m.get("extra", {})) != m["content_sha256"]:
        raise _fail(d / MANIFEST, "field 'content_sha256' does not match the array digests it lists")
    obj: dict[str, Any] = dict(m.get("extra", {}))
    for name in SPLITS:
        entries = m["splits"][name]["arrays"]
        arrays: dict[str, Any] = {}
        for key, e in entries.items():
            path = d / e["file"]
            mapped = key in MAPPED_KEYS
            _scan(path, offsets[(name, key)], e, FiniteCheck(str(d), name, key) if mapped else None)
            mode = "r" if mapped and int(np.prod(e["shape"], dtype=object)) > 0 else None
            arrays[key] = np.load(path, mmap_mode=mode, allow_pickle=False)
        for key in STRING_KEYS:
            if f"{key}.utf8" in arrays or f"{key}.offsets" in arrays:
                if f"{key}.utf8" not in arrays or f"{key}.offsets" not in arrays:
                    raise _fail(d / MANIFEST, f"splits.{name}: '{key}' needs both '{key}.utf8' and '{key}.offsets'")
                arrays[key] = _strings(d, arrays, entries, key)
        obj[name] = arrays
    return dataset_from_dict(obj, source=str(d), scanned=True)


def mapped_key(directory: str | Path) -> str:
    """The content key of a mapped dataset (first 16 hex digits of its manifest's content hash)."""
    return read_manifest(directory)["content_sha256"][:16]
