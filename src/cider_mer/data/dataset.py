"""The dataset file of the field (SPEC §1.1): loading, validation, in-memory form and saving.

A file is a pickle dict ``{"train": S, "valid": S, "test": S}`` with an optional ``"meta"`` entry;
each ``S`` maps keys to arrays over N samples:

=========================  ============================  =========================================
key                        shape / type                  meaning
=========================  ============================  =========================================
``text_bert``              (N, 3, L_t) float or int      token ids, attention mask, segment ids
``audio``                  (N, T_a, d_a) float           acoustic frames
``vision``                 (N, T_v, d_v) float           facial frames
``audio_lengths``          (N,) int                      valid audio frames (unaligned files)
``vision_lengths``         (N,) int                      valid vision frames (unaligned files)
``regression_labels``      (N,) float in [-3, 3]         sentiment score ([-1, 1] for ``sims``;
                                                         ignored, and not written, for ``categorical``)
``classification_labels``  (N,) int in {0, 1, 2}         optional; derived from the sign if absent
                                                         (``categorical``: required, ids 0..C-1)
``raw_text``, ``id``       (N,) str                      optional transcript and sample id
=========================  ============================  =========================================

``meta`` (plain types only) declares the label convention (:mod:`cider_mer.data.labels`):
``{"label_convention": "mosi" | "sims" | "categorical", "class_names": [str, ...]}``, the class names
for ``categorical`` only (class id k is ``class_names[k]``). A file without ``meta`` is ``mosi``, and
``mosi`` files are written without it, as before. In memory, a categorical split's
``regression_labels`` are NaN; no task of that convention reads them.

Aligned files have no length keys and T_a = T_v = L_t; their lengths are the text lengths.
Every split needs at least one sample, and ``id`` values (when present) are unique within a split;
:func:`check_unique_ids` checks them across splits and :func:`check_vocabulary` checks the token
ids against a text encoder.
Every shape is read from the file. Loading goes through :mod:`cider_mer.data.safe_pickle`.

:func:`load_dataset` also reads the memory-mapped form (a directory with ``dataset.json`` written by
``cider data convert``; see :mod:`cider_mer.data.mapped`): its arrays go through the same rules
(:func:`dataset_from_dict`), feature values checked chunk by chunk while the files are hashed.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cider_mer.data.labels import (CONVENTIONS, MOSI, LabelConvention, class_priors, is_regression, sign_classes,
                                   task_labels)
from cider_mer.data.safe_pickle import UnsafePickleError, safe_load
from cider_mer.errors import CiderError
from cider_mer.io_utils import atomic_path

SPLITS = ("train", "valid", "test")
REQUIRED_KEYS = ("text_bert", "audio", "vision", "regression_labels")  # sentiment files (mosi, sims)
CATEGORICAL_REQUIRED_KEYS = ("text_bert", "audio", "vision", "classification_labels")


class DatasetError(CiderError):
    """A dataset file is missing, unsafe or does not follow the format; the message says where."""


def _fail(source: str, split: str | None, key: str | None, expectation: str) -> DatasetError:
    where = source
    if split is not None:
        where += f" [split '{split}'"
        where += f", key '{key}']" if key is not None else "]"
    return DatasetError(f"{where}: {expectation}")


@dataclass
class Split:
    """One split held as numpy arrays (features float32, ids/labels int64); no per-sample objects."""

    name: str
    text_bert: np.ndarray  # (N, 3, L_t) int64: ids, attention mask, segment ids
    audio: np.ndarray  # (N, T_a, d_a) float32
    vision: np.ndarray  # (N, T_v, d_v) float32
    audio_lengths: np.ndarray  # (N,) int64
    vision_lengths: np.ndarray  # (N,) int64
    regression_labels: np.ndarray  # (N,) float32 (NaN for categorical labels)
    classification_labels: np.ndarray  # (N,) int64 in {0, 1, 2} (categorical: 0..C-1)
    raw_text: np.ndarray | None = None  # (N,) object (str)
    ids: np.ndarray | None = None  # (N,) object (str)
    convention: LabelConvention = MOSI  # set by the MerDataset holding the split

    @property
    def n(self) -> int:
        return int(self.text_bert.shape[0])

    @property
    def text_ids(self) -> np.ndarray:
        return self.text_bert[:, 0]

    @property
    def text_mask(self) -> np.ndarray:
        return self.text_bert[:, 1]

    @property
    def text_segment(self) -> np.ndarray:
        return self.text_bert[:, 2]

    @property
    def text_lengths(self) -> np.ndarray:
        return self.text_bert[:, 1].sum(axis=1)

    def labels(self, task: str) -> np.ndarray:
        """(N,) labels for ``task``, a task of the split's convention: int64 class ids, or float32
        scores for the regression tasks."""
        self.convention.check_task(task, f"split '{self.name}'")
        return task_labels(task, self.regression_labels, self.classification_labels)

    def num_classes(self, task: str) -> int:
        """The model's output width for ``task`` on this split's labels."""
        return self.convention.num_classes(task)

    def subset(self, index: np.ndarray, name: str | None = None) -> "Split":
        """A new split holding the samples at ``index`` (copies the selected rows)."""
        idx = np.asarray(index, dtype=np.int64)
        pick = lambda a: None if a is None else a[idx]  # noqa: E731
        return Split(
            name=name or self.name,
            text_bert=self.text_bert[idx],
            audio=self.audio[idx],
            vision=self.vision[idx],
            audio_lengths=self.audio_lengths[idx],
            vision_lengths=self.vision_lengths[idx],
            regression_labels=self.regression_labels[idx],
            classification_labels=self.classification_labels[idx],
            raw_text=pick(self.raw_text),
            ids=pick(self.ids),
            convention=self.convention,
        )

    def to_dict(self, aligned: bool) -> dict[str, np.ndarray]:
        out: dict[str, Any] = {
            "text_bert": self.text_bert.astype(np.float32),
            "audio": self.audio,
            "vision": self.vision,
            "regression_labels": self.regression_labels,
            "classification_labels": self.classification_labels,
        }
        if self.convention.score_range is None:
            del out["regression_labels"]
        if not aligned:
            out["audio_lengths"] = self.audio_lengths
            out["vision_lengths"] = self.vision_lengths
        if self.raw_text is not None:
            out["raw_text"] = self.raw_text
        if self.ids is not None:
            out["id"] = self.ids
        return out


@dataclass
class MerDataset:
    """A validated dataset: three splits sharing feature dims and sequence lengths."""

    splits: dict[str, Split]
    aligned: bool
    path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # the file's entries besides the splits ("meta")
    convention: LabelConvention = field(init=False)  # read from extra["meta"]

    def __post_init__(self) -> None:
        self.convention = convention_from_meta(self.extra.get("meta"), self.path or "<memory>")
        for split in self.splits.values():
            split.convention = self.convention

    def __getitem__(self, name: str) -> Split:
        return self.splits[name]

    def check_task(self, task: str) -> str:
        """``task`` when it fits the file's label convention; else a LabelError naming the file."""
        return self.convention.check_task(task, self.path or "<memory>")

    @property
    def text_len(self) -> int:
        return int(self.splits["train"].text_bert.shape[2])

    @property
    def audio_len(self) -> int:
        return int(self.splits["train"].audio.shape[1])

    @property
    def vision_len(self) -> int:
        return int(self.splits["train"].vision.shape[1])

    @property
    def audio_dim(self) -> int:
        return int(self.splits["train"].audio.shape[2])

    @property
    def vision_dim(self) -> int:
        return int(self.splits["train"].vision.shape[2])

    def shapes(self) -> dict[str, int | bool]:
        return {
            "aligned": self.aligned,
            "text_len": self.text_len,
            "audio_len": self.audio_len,
            "vision_len": self.vision_len,
            "audio_dim": self.audio_dim,
            "vision_dim": self.vision_dim,
        }

    def summary(self) -> dict[str, Any]:
        """Splits, sizes, shapes, label convention, length statistics and label priors per class task
        of the convention (for ``data check``)."""
        conv = self.convention
        out: dict[str, Any] = {"file": self.path, **self.shapes(), "label_convention": conv.name, "splits": {}}
        if conv.class_names:
            out["class_names"] = list(conv.class_names)
        class_tasks = [t for t in conv.tasks if not is_regression(t)]
        for name, s in self.splits.items():
            info: dict[str, Any] = {"n": s.n}
            for key, lengths in (("text", s.text_lengths), ("audio", s.audio_lengths), ("vision", s.vision_lengths)):
                info[f"{key}_length"] = {
                    "min": int(lengths.min()) if s.n else 0,
                    "mean": float(lengths.mean()) if s.n else 0.0,
                    "max": int(lengths.max()) if s.n else 0,
                }
            info["priors"] = {t: class_priors(s.labels(t), conv.num_classes(t)).round(4).tolist() for t in class_tasks}
            info["has_raw_text"] = s.raw_text is not None
            out["splits"][name] = info
        return out

    def to_dict(self) -> dict[str, Any]:
        """The file's dict: the splits, and ``meta`` unless the convention is ``mosi``."""
        out: dict[str, Any] = {name: s.to_dict(self.aligned) for name, s in self.splits.items()}
        meta = self.convention.to_meta()
        if meta is not None:
            out["meta"] = meta
        return out

    def max_token_id(self) -> int:
        """The largest token id (row 0 of ``text_bert``) over all splits and positions, padding included."""
        return max((int(s.text_ids.max()) for s in self.splits.values() if s.text_ids.size), default=0)


# ----------------------------------------------------------------------------------------------
# validation


def _as_1d(source: str, split: str, key: str, value: Any, n: int | None) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise _fail(source, split, key, f"expected shape (N,), got {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise _fail(source, split, key, f"expected {n} entries (N of 'text_bert'), got {arr.shape[0]}")
    return arr


def _numeric(source: str, split: str, key: str, value: Any) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise _fail(source, split, key, f"expected a numeric array, got dtype {arr.dtype}")
    return arr


def _integral(source: str, split: str, key: str, arr: np.ndarray, lo: int, hi: int | None) -> np.ndarray:
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise _fail(source, split, key, "expected integers, found NaN or inf")
        if not np.array_equal(arr, np.round(arr)):
            raise _fail(source, split, key, "expected integer values, found fractions")
    out = arr.astype(np.int64)
    if out.size and (out.min() < lo or (hi is not None and out.max() > hi)):
        rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise _fail(source, split, key, f"expected values in {rng}, found [{out.min()}, {out.max()}]")
    return out


class FiniteCheck:
    """The finiteness rule of feature arrays, applied chunk by chunk over rows (no whole-array temporaries)."""

    def __init__(self, source: str, split: str, key: str):
        self.source, self.split, self.key = source, split, key
        self.count, self.first = 0, None

    def update(self, chunk: np.ndarray, first_row: int) -> None:
        """Count NaN/inf in ``chunk`` (rows ``first_row`` ...)."""
        bad = ~np.isfinite(chunk)
        if bad.any():
            self.count += int(bad.sum())
            if self.first is None:
                self.first = first_row + int(np.argmax(bad.reshape(len(chunk), -1).any(axis=1)))

    def finish(self) -> None:
        if self.count:
            raise _fail(self.source, self.split, self.key,
                        f"expected finite values, found {self.count} NaN/inf (first in sample {self.first})")


def row_chunks(n_rows: int, row_bytes: int, target_bytes: int = 64 << 20) -> range:
    """Start rows of chunks of about ``target_bytes`` (at least one row each)."""
    return range(0, n_rows, max(1, target_bytes // max(row_bytes, 1)))


def _features(source: str, split: str, key: str, value: Any, n: int, scanned: bool = False) -> np.ndarray:
    """Checked (N, T, d) float32 features; ``scanned``: values were already checked chunk by chunk
    (the mapped form checks them while hashing its files)."""
    arr = _numeric(source, split, key, value)
    if arr.ndim != 3:
        raise _fail(source, split, key, f"expected shape (N, T, d), got {arr.shape}")
    if arr.shape[0] != n:
        raise _fail(source, split, key, f"expected N={n} samples (N of 'text_bert'), got {arr.shape[0]}")
    arr = np.asarray(arr, dtype=np.float32)
    if scanned:
        return arr
    check = FiniteCheck(source, split, key)
    step = row_chunks(n, arr[0].nbytes if n else 1).step
    for start in range(0, n, step):
        chunk = arr[start:start + step]
        if key == "audio":
            neg_inf = np.isneginf(chunk)
            if neg_inf.any():  # the field's convention: -inf audio (log of silence) becomes 0
                if not arr.flags.writeable:
                    arr = arr.copy()
                    chunk = arr[start:start + step]
                chunk[neg_inf] = 0.0
        check.update(chunk, start)
    check.finish()
    return arr


def _strings(source: str, split: str, key: str, value: Any, n: int) -> np.ndarray:
    arr = _as_1d(source, split, key, value, n)
    try:
        return np.array([x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in arr.tolist()], dtype=object)
    except UnicodeDecodeError as exc:
        raise _fail(source, split, key, f"expected UTF-8 strings ({exc})") from exc


def _first_repeat(values: np.ndarray) -> tuple[int, int] | None:
    """(first index, index of its first repeat) of the earliest repeated value, or None."""
    seen: dict[Any, int] = {}
    for i, v in enumerate(values.tolist()):
        if v in seen:
            return seen[v], i
        seen[v] = i
    return None


def convention_from_meta(meta: Any, source: str = "<memory>") -> LabelConvention:
    """The label convention a file's ``meta`` entry declares (None: ``mosi``); raises DatasetError."""
    if meta is None:
        return MOSI
    where = f"{source} [key 'meta']"
    if not isinstance(meta, dict):
        raise DatasetError(f"{where}: expected a dict with 'label_convention' (and 'class_names'), "
                           f"got {type(meta).__name__}")
    name = meta.get("label_convention", "mosi")
    if name not in CONVENTIONS:
        raise DatasetError(f"{where}: expected 'label_convention' one of {list(CONVENTIONS)}, got {name!r}")
    names = meta.get("class_names")
    if name != "categorical":
        if names is not None:
            raise DatasetError(f"{where}: 'class_names' go with the categorical convention only, not '{name}'")
        return LabelConvention(name)
    if not isinstance(names, (list, tuple)) or len(names) < 2 or not all(isinstance(n, str) and n for n in names):
        raise DatasetError(f"{where}: expected 'class_names', a list of at least two non-empty strings, for "
                           f"categorical labels; got {names!r}")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DatasetError(f"{where}: expected unique 'class_names', '{dup}' appears more than once")
    return LabelConvention(name, tuple(names))


def _validate_split(source: str, name: str, raw: Any, convention: LabelConvention = MOSI,
                    scanned: bool = False) -> tuple[Split, bool]:
    if not isinstance(raw, dict):
        raise _fail(source, name, None, f"expected a dict of arrays, got {type(raw).__name__}")
    required = REQUIRED_KEYS if convention.score_range is not None else CATEGORICAL_REQUIRED_KEYS
    for key in required:
        if key not in raw:
            raise _fail(source, name, key, f"missing required key (required for {convention.name} labels: "
                        f"{', '.join(required)})")

    tb = _numeric(source, name, "text_bert", raw["text_bert"])
    if tb.ndim != 3 or tb.shape[1] != 3:
        raise _fail(source, name, "text_bert", f"expected shape (N, 3, L_t), got {tb.shape}")
    n, _, length = tb.shape
    if n == 0:
        raise _fail(source, name, None, "expected at least one sample, found 0 rows (shape of 'text_bert' is "
                    f"{tb.shape}); every split needs samples")
    if length < 2:
        raise _fail(source, name, "text_bert", f"expected L_t >= 2 ([CLS] and [SEP]), got {length}")
    tb = _integral(source, name, "text_bert", tb, 0, None)
    mask = tb[:, 1]
    if mask.size and (mask.min() < 0 or mask.max() > 1):
        raise _fail(source, name, "text_bert", "expected row 1 (attention mask) to hold only 0 and 1")
    text_len = mask.sum(axis=1)
    prefix = np.arange(length)[None, :] < text_len[:, None]
    if not np.array_equal(mask.astype(bool), prefix):
        bad = int(np.argwhere((mask.astype(bool) != prefix).any(axis=1))[0][0])
        raise _fail(source, name, "text_bert", f"expected the attention mask to be ones then zeros (sample {bad} is not)")
    if n and text_len.min() < 2:
        bad = int(np.argmin(text_len))
        raise _fail(source, name, "text_bert", f"expected at least [CLS] and [SEP] in every text (sample {bad} has length {text_len[bad]})")

    audio = _features(source, name, "audio", raw["audio"], n, scanned)
    vision = _features(source, name, "vision", raw["vision"], n, scanned)

    has_a, has_v = "audio_lengths" in raw, "vision_lengths" in raw
    if has_a != has_v:
        missing = "vision_lengths" if has_a else "audio_lengths"
        raise _fail(source, name, missing, "missing: unaligned files need both audio_lengths and vision_lengths")
    aligned = not has_a
    if aligned:
        if audio.shape[1] != length or vision.shape[1] != length:
            raise _fail(
                source, name, "audio_lengths",
                f"missing: without length keys the file is aligned and needs T_a = T_v = L_t = {length}, "
                f"got T_a={audio.shape[1]}, T_v={vision.shape[1]}",
            )
        a_len = v_len = text_len.astype(np.int64)
    else:
        a_len = _integral(source, name, "audio_lengths", _numeric(source, name, "audio_lengths",
                          _as_1d(source, name, "audio_lengths", raw["audio_lengths"], n)), 0, audio.shape[1])
        v_len = _integral(source, name, "vision_lengths", _numeric(source, name, "vision_lengths",
                          _as_1d(source, name, "vision_lengths", raw["vision_lengths"], n)), 0, vision.shape[1])

    reg, cls = _labels(source, name, raw, n, convention)

    raw_text = _strings(source, name, "raw_text", raw["raw_text"], n) if "raw_text" in raw else None
    ids = _strings(source, name, "id", raw["id"], n) if "id" in raw else None
    if ids is not None:
        repeat = _first_repeat(ids)
        if repeat is not None:
            first, again = repeat
            raise _fail(source, name, "id", f"expected unique ids, '{ids[again]}' appears more than once "
                        f"(samples {first} and {again})")
    split = Split(name, tb, audio, vision, a_len, v_len, reg, cls, raw_text, ids, convention)
    return split, aligned


def _labels(source: str, name: str, raw: dict, n: int, convention: LabelConvention) -> tuple[np.ndarray, np.ndarray]:
    """(scores (N,) float32, class labels (N,) int64) of a split under ``convention``."""
    if convention.score_range is None:  # categorical: class ids only; scores are never read
        cls = _numeric(source, name, "classification_labels",
                       _as_1d(source, name, "classification_labels", raw["classification_labels"], n))
        top = len(convention.class_names) - 1
        cls = _integral(source, name, "classification_labels", cls, 0, top)
        return np.full(n, np.nan, dtype=np.float32), cls
    reg = _numeric(source, name, "regression_labels", _as_1d(source, name, "regression_labels", raw["regression_labels"], n))
    reg = reg.astype(np.float32)
    if not np.isfinite(reg).all():
        bad = int(np.argwhere(~np.isfinite(reg))[0][0])
        raise _fail(source, name, "regression_labels", f"expected finite scores, found NaN/inf (first in sample {bad})")
    lo, hi = convention.score_range
    if reg.size and (reg.min() < lo or reg.max() > hi):
        bad = int(np.argwhere((reg < lo) | (reg > hi))[0][0])
        raise _fail(source, name, "regression_labels",
                    f"expected scores in [{lo:g}, {hi:g}] (label convention '{convention.name}'), found "
                    f"[{reg.min():.3f}, {reg.max():.3f}] (first outside in sample {bad}: {reg[bad]:g})")
    if "classification_labels" in raw and raw["classification_labels"] is not None:
        cls = _numeric(source, name, "classification_labels",
                       _as_1d(source, name, "classification_labels", raw["classification_labels"], n))
        cls = _integral(source, name, "classification_labels", cls, 0, 2)
    else:
        cls = sign_classes(reg)
    return reg, cls


def dataset_from_dict(obj: Any, source: str = "<memory>", scanned: bool = False) -> MerDataset:
    """Validate a loaded dict and return a :class:`MerDataset`; raises :class:`DatasetError`.

    ``scanned``: the audio/vision values were already checked (finite) chunk by chunk, so they are
    not read again here (memory-mapped arrays stay on disk).
    """
    if not isinstance(obj, dict):
        raise _fail(source, None, None, f"expected a dict with splits {list(SPLITS)}, got {type(obj).__name__}")
    splits: dict[str, Split] = {}
    aligned_flags = {}
    convention = convention_from_meta(obj.get("meta"), source)
    for name in SPLITS:
        if name not in obj:
            raise _fail(source, name, None, f"missing split (the file needs {', '.join(SPLITS)}; found {sorted(map(str, obj))})")
        splits[name], aligned_flags[name] = _validate_split(source, name, obj[name], convention, scanned)
    if len(set(aligned_flags.values())) != 1:
        raise _fail(source, None, None, f"splits disagree on aligned/unaligned (length keys present: {aligned_flags})")
    ref = splits["train"]
    for name in ("valid", "test"):
        s = splits[name]
        for key in ("text_bert", "audio", "vision"):
            a, b = getattr(ref, key).shape[1:], getattr(s, key).shape[1:]
            if a != b:
                raise _fail(source, name, key, f"expected per-sample shape {a} (as in 'train'), got {b}")
    extra = {k: v for k, v in obj.items() if k not in SPLITS}
    return MerDataset(splits=splits, aligned=next(iter(aligned_flags.values())), path=source, extra=extra)


def check_unique_ids(data: MerDataset) -> None:
    """Raise :class:`DatasetError` if a sample id occurs in more than one split (ids are already unique
    within each split). Files without ids pass."""
    source = data.path or "<memory>"
    seen: dict[Any, tuple[str, int]] = {}
    for name, s in data.splits.items():
        if s.ids is None:
            continue
        for i, v in enumerate(s.ids.tolist()):
            if v in seen:
                other, j = seen[v]
                raise _fail(source, name, "id", f"expected ids unique across the splits, '{v}' (sample {i}) is also "
                            f"sample {j} of split '{other}'")
            seen[v] = (name, i)


def check_vocabulary(data: MerDataset, vocab_size: int, encoder_name: str, type_vocab_size: int | None = None,
                     max_positions: int | None = None, splits: tuple[str, ...] | None = None) -> None:
    """Raise :class:`DatasetError` if the file's token ids (of ``splits``, default all) do not fit the
    text encoder.

    Token ids (row 0 of ``text_bert``) must be below ``vocab_size``; with ``type_vocab_size``, segment
    ids (row 2) below it; with ``max_positions``, the text length L_t at most that. Each of these
    would otherwise stop training with an ``IndexError`` inside the encoder's embeddings.
    """
    source = data.path or "<memory>"
    rows = [("token id", 0, vocab_size, "vocabulary")]
    if type_vocab_size is not None:
        rows.append(("segment id", 2, type_vocab_size, "segment types"))
    for what, row, size, kind in rows:
        worst = None
        for name in splits or tuple(data.splits):
            values = data[name].text_bert[:, row]
            if values.size and (worst is None or int(values.max()) > worst[0]):
                worst = (int(values.max()), name, int(np.argwhere(values == values.max())[0][0]))
        if worst is not None and worst[0] >= size:
            top, name, sample = worst
            raise _fail(source, name, "text_bert",
                        f"largest {what} {top} (sample {sample}) is beyond the {kind} of text encoder "
                        f"'{encoder_name}' ({size} entries, ids 0..{size - 1}); the file was tokenised for "
                        "another encoder")
    if max_positions is not None and data.text_len > max_positions:
        raise _fail(source, "train", "text_bert", f"text length L_t={data.text_len} is beyond the {max_positions} "
                    f"positions of text encoder '{encoder_name}'")


def load_dataset(path: str | Path) -> MerDataset:
    """Load and validate a dataset: a pickle/joblib file (read safely), or a directory written by
    ``cider data convert`` (memory-mapped arrays, :mod:`cider_mer.data.mapped`); raises :class:`DatasetError`."""
    p = str(path)
    if Path(p).is_dir():
        from cider_mer.data.mapped import load_mapped

        return load_mapped(p)
    if not Path(p).is_file():
        raise DatasetError(f"{p}: {'is a directory; expected a dataset file' if Path(p).is_dir() else 'no such file'}")
    try:
        obj = safe_load(p)
    except UnsafePickleError as exc:
        raise DatasetError(str(exc)) from exc
    except ValueError as exc:
        raise DatasetError(str(exc)) from exc
    except OSError as exc:
        raise DatasetError(f"{p}: cannot read the file ({exc.strerror or exc})") from exc
    return dataset_from_dict(obj, source=p)


def save_dataset(data: MerDataset | dict, path: str | Path) -> None:
    """Write a dataset file atomically (pickle protocol 4, arrays only: loadable by the field's code)."""
    obj = data.to_dict() if isinstance(data, MerDataset) else data
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            pickle.dump(obj, f, protocol=4)
