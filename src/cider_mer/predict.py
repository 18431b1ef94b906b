"""Predictions of a trained run on new inputs: the one home of ``cider predict`` and
:meth:`cider_mer.runs.Run.predict_inputs`.

Inputs come as

- Python lists (:func:`predict_inputs`): texts, and per sample a (T_i, d) array of audio or
  vision frames (or ``None``);
- a transcripts CSV in the importer's format, ``label`` and ``mode`` optional, with ``.npz``
  feature files or a folder of recordings (:func:`predict_transcripts`, read and extracted by
  :mod:`cider_mer.data.import_csv`);
- a split of a dataset file (:func:`predict_dataset`), exactly as :meth:`Run.predict` sees it.

Texts are tokenised with the run's tokenizer to the run's text length L; frames are cut or
zero-padded to the run's windows T_a / T_v (aligned runs: one frame per token position, window L).

A modality a sample does not have (``None``, an id without features, a clip without a sound
track) is *missing* as the missing-modality simulator makes it missing in training and
evaluation (:func:`cider_mer.missing.apply_missing`): zero frames under the padding mask of a
full window (T_a / T_v; the text length for aligned runs), with every position marked not kept in
the :class:`~cider_mer.models.interface.KeepMasks`. A :class:`WhatIf` adds evaluation's masks
(:class:`~cider_mer.missing.EvalMissingness`) on top, for what-if checks.

MACI runs also give debiased predictions, log p(y|x) - tau * log p(y|x_cf), at the tau chosen on
the validation split at the selected epoch (:attr:`Run.val_tau`); tau is never chosen on the
predicted data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Union

import numpy as np
import torch

from cider_mer.batches import DeviceSplit, length_sorted_batches
from cider_mer.data.dataset import MerDataset, Split
from cider_mer.data.labels import LabelConvention, is_regression, sign_classes, task_labels
from cider_mer.errors import CiderError
from cider_mer.io_utils import atomic_write_json, atomic_write_text, to_jsonable
from cider_mer.maci.tau import debias
from cider_mer.metrics import task_metrics
from cider_mer.missing import EvalMissingness
from cider_mer.models.interface import KeepMasks
from cider_mer.text.encoder import CLS_ID, SEP_ID

if TYPE_CHECKING:
    from cider_mer.runs import Run

OUTPUT_SUFFIXES = (".csv", ".json")
MODALITIES = ("text", "audio", "vision")
Note = Optional[Callable[[str], None]]
Frames = Optional[Sequence[Optional[np.ndarray]]]


class PredictError(CiderError):
    """Inputs that cannot be predicted (wrong widths, no rows, bad output file); the message says where."""


@dataclass(frozen=True)
class WhatIf:
    """Evaluation's missing-modality masks applied on top of the inputs: ``mode`` (RMFM, RMFM_same,
    RMM, TMFM, STMFM, SMM) at ``point`` (a rate; an (r_l, r_a, r_v) triple for RMFM_same; the
    present modalities, e.g. ``"LA"``, for SMM), drawn from ``seed``."""

    mode: str
    point: Union[float, tuple[float, float, float], str]
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.point, str) and self.mode not in ("SMM", "RMFM_same"):
            raise PredictError(f"missing rate for {self.mode}: expected a number in [0, 1], got '{self.point}'")

    def masks(self, split: DeviceSplit, aligned: bool) -> KeepMasks:
        """(N, L), (N, T_a), (N, T_v) keep masks on the CPU, the same as ``cider eval`` draws."""
        return EvalMissingness(self.mode, *split.padding_masks(), seed=self.seed, aligned=aligned).masks(self.point)


def _softmax(scores: np.ndarray) -> np.ndarray:
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class PredictionTable:
    """A run's predictions on N samples (arrays are read-only).

    ``scores`` are the model's (N, C) class log-probabilities, or (N, 1) predicted scores for the
    regression task; ``debiased_scores`` are MACI's (N, C) debiased scores at ``tau`` (None
    without counterfactual text). ``present`` (N, 3) says whether text, audio and vision were
    present, after any what-if masks (text: a real token besides [CLS]/[SEP] kept). ``labels``
    (N,) are the task's truth (class ids, or scores for regression) when the input had labels.

    Columns of :meth:`to_pandas`: ``id``; ``pred`` (class name) and ``p_<class>`` per class, or
    ``score`` for regression; with debiasing ``pred_debiased`` and ``p_debiased_<class>``;
    ``has_text``, ``has_audio``, ``has_vision``; ``label`` when known.
    """

    task: str
    class_names: tuple[str, ...]  # index = class id (("score",) for regression)
    ids: np.ndarray  # (N,) str
    scores: np.ndarray  # (N, C) log-probabilities; (N, 1) scores for regression
    present: np.ndarray  # (N, 3) bool
    debiased_scores: Optional[np.ndarray] = None  # (N, C)
    tau: Optional[float] = None
    labels: Optional[np.ndarray] = None  # (N,)

    def __post_init__(self) -> None:
        for name in ("ids", "scores", "present", "debiased_scores", "labels"):
            value = getattr(self, name)
            if value is not None:  # a private, read-only copy
                value = np.array(value, copy=True)
                value.setflags(write=False)
                object.__setattr__(self, name, value)

    @property
    def n(self) -> int:
        return int(self.scores.shape[0])

    @property
    def is_regression(self) -> bool:
        return is_regression(self.task)

    @property
    def probs(self) -> Optional[np.ndarray]:
        """(N, C) class probabilities (None for regression)."""
        return None if self.is_regression else _softmax(self.scores)

    @property
    def predicted(self) -> np.ndarray:
        """(N,) int64 predicted class ids (argmax), or float predicted scores for regression."""
        return self.scores[:, 0].copy() if self.is_regression else self.scores.argmax(axis=1)

    @property
    def debiased_probs(self) -> Optional[np.ndarray]:
        """(N, C) probabilities of the debiased scores (softmax), when debiasing is active."""
        return None if self.debiased_scores is None else _softmax(self.debiased_scores)

    @property
    def debiased_predicted(self) -> Optional[np.ndarray]:
        """(N,) int64 argmax of the debiased scores, when debiasing is active."""
        return None if self.debiased_scores is None else self.debiased_scores.argmax(axis=1)

    def metrics(self) -> dict[str, dict[str, float]]:
        """``{"factual": {...}, "debiased": {...}}``: the task's metrics (those of ``cider eval``);
        ``debiased`` only with debiasing. Needs labels."""
        if self.labels is None:
            raise PredictError("these predictions have no labels to score against")
        out = {"factual": task_metrics(self.task, self.scores, self.labels)}
        if self.debiased_scores is not None:
            out["debiased"] = task_metrics(self.task, self.debiased_scores, self.labels)
        return out

    def to_pandas(self):
        """One row per sample; columns as in the class docstring."""
        import pandas as pd

        names = np.array(self.class_names, dtype=object)
        cols: dict[str, Any] = {"id": self.ids}
        if self.is_regression:
            cols["score"] = self.predicted
        else:
            cols["pred"] = names[self.predicted]
            cols.update({f"p_{c}": self.probs[:, k] for k, c in enumerate(self.class_names)})
            if self.debiased_scores is not None:
                cols["pred_debiased"] = names[self.debiased_predicted]
                cols.update({f"p_debiased_{c}": self.debiased_probs[:, k] for k, c in enumerate(self.class_names)})
        cols.update({f"has_{m}": self.present[:, k] for k, m in enumerate(MODALITIES)})
        if self.labels is not None:
            cols["label"] = self.labels if self.is_regression else names[self.labels]
        return pd.DataFrame(cols)

    def to_records(self) -> list[dict[str, Any]]:
        """The rows of :meth:`to_pandas` as plain (JSON-ready) dicts."""
        return to_jsonable(self.to_pandas().to_dict(orient="records"))


# ---------------------------------------------------------------------------------------------- core


def _presence(split: DeviceSplit, keep: Optional[KeepMasks]) -> np.ndarray:
    """(N, 3) bool: a real token besides [CLS]/[SEP], an audio frame, a vision frame kept."""
    if keep is None:
        keep = KeepMasks(split.text_mask > 0, split.audio_mask > 0, split.vision_mask > 0)
    ids = split.text_ids.to(keep.text.device)
    text = (keep.text & (ids != CLS_ID) & (ids != SEP_ID)).any(dim=1)
    return torch.stack([text, keep.audio.any(dim=1), keep.vision.any(dim=1)], dim=1).cpu().numpy()


def _predict(run: "Run", split: DeviceSplit, keep: Optional[KeepMasks], ids: np.ndarray,
             labels: Optional[np.ndarray], batch_size: Optional[int], missing: Optional[WhatIf],
             progress: bool) -> PredictionTable:
    """Batched factual (and counterfactual) passes over ``split`` with ``keep`` (None: complete)
    and the what-if masks applied; the batches are those of :meth:`Run.predict`."""
    from tqdm.auto import tqdm

    if missing is not None:
        what_if = missing.masks(split, run.shapes.aligned)
        keep = what_if if keep is None else KeepMasks(keep.text & what_if.text, keep.audio & what_if.audio,
                                                      keep.vision & what_if.vision)
    size = int(batch_size or run.cfg.eval_batch_size)
    if size < 1:
        raise PredictError(f"batch size must be at least 1, got {size}")
    debiaser = dataclasses.replace(run.debiaser, batch_size=size)
    tau = run.val_tau if debiaser.active else None
    scores: Optional[np.ndarray] = None
    cf: Optional[np.ndarray] = None
    batches = length_sorted_batches(split, size)
    for idx in tqdm(batches, desc="predicting", unit="batch", disable=not progress, leave=False):
        part = debiaser.predict(run.model, split.subset(idx), None if keep is None else keep.index(idx.cpu()))
        if scores is None:
            scores = np.zeros((split.n, part.log_probs.shape[1]), dtype=np.float32)
            cf = None if part.cf_log_probs is None else np.zeros_like(scores)
        i = idx.cpu().numpy()
        scores[i] = part.log_probs
        if cf is not None:
            cf[i] = part.cf_log_probs
    debiased = None if cf is None else np.asarray(debias(scores, cf, tau, debiaser.cf_centre), dtype=np.float32)
    return PredictionTable(run.cfg.task, tuple(run.class_names), np.asarray(ids, dtype=object), scores,
                           _presence(split, keep), debiased, tau, labels)


# ---------------------------------------------------------------------------------------------- entry points


def predict_dataset(run: "Run", data: MerDataset, split: str = "test", batch_size: Optional[int] = None,
                    missing: Optional[WhatIf] = None, progress: bool = False) -> PredictionTable:
    """Predictions on split ``split`` of ``data``, as :meth:`Run.predict` makes them (labels: the file's)."""
    run.check_compatible(data)
    target = run.split(data, split)
    s = data[split]
    ids = s.ids if s.ids is not None else np.array([str(i) for i in range(s.n)], dtype=object)
    return _predict(run, target, None, ids, target.labels.cpu().numpy(), batch_size, missing, progress)


@lru_cache(maxsize=4)
def _tokenizer(name: Optional[str]):
    from cider_mer.text.encoder import load_tokenizer

    return load_tokenizer(name)


def _frames(items: Frames, modality: str, n: int, width: int, window: int, aligned_lengths: Optional[np.ndarray],
            ids: np.ndarray, note: Note) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, window, width) frames, (N,) lengths and (N,) presence of one modality (module docstring)."""
    frames = np.zeros((n, window, width), dtype=np.float32)
    present = np.zeros(n, dtype=bool)
    if items is not None:
        if len(items) != n:
            raise PredictError(f"{modality}: expected {n} frame arrays (one per text, None where missing) or None, "
                               f"got {len(items)}")
        cut = 0
        for k, item in enumerate(items):
            if item is None:
                continue
            a = np.asarray(item)
            if a.ndim != 2 or a.shape[1] != width or not np.issubdtype(a.dtype, np.number):
                raise PredictError(f"{modality}[{k}] (id '{ids[k]}'): expected frames of shape (T, {width}) "
                                   f"(the run's {modality}_dim), got shape {a.shape} of dtype {a.dtype}")
            if not np.isfinite(a).all():
                raise PredictError(f"{modality}[{k}] (id '{ids[k]}'): expected finite values, found NaN or inf")
            cut += a.shape[0] > window
            frames[k, :min(a.shape[0], window)] = a[:window]
            present[k] = a.shape[0] > 0
        if cut and note is not None:
            note(f"{cut} {modality} sequence(s) longer than the run's {window} frames were cut to {window}")
    # Valid frames: the sample's own; a missing modality keeps a full window (masked as not kept).
    lengths = np.full(n, window, dtype=np.int64) if aligned_lengths is None else aligned_lengths.astype(np.int64)
    if items is not None and aligned_lengths is None:
        own = np.array([0 if it is None else min(np.asarray(it).shape[0], window) for it in items], dtype=np.int64)
        lengths = np.where(present, own, lengths)
    return frames, lengths, present


def _truth(run: "Run", labels: Sequence[Any], n: int) -> np.ndarray:
    """(N,) truth of the run's task from N labels: class names (or ids) of a class-named task, else
    sentiment scores in the run's label range."""
    conv = LabelConvention(run.meta.get("label_convention", "mosi"), tuple(run.class_names)
                           if run.meta.get("label_convention") == "categorical" else ())
    if conv.score_range is None:
        names = run.class_names
        try:
            ids = np.array([names.index(v) if isinstance(v, str) else int(v) for v in labels], dtype=np.int64)
        except ValueError:
            ids = np.full(n + 1, -1, dtype=np.int64)
        if len(ids) != n or (ids < 0).any() or (ids >= len(names)).any():
            raise PredictError(f"labels: expected {n} class names (or ids) among {names}")
        return ids
    lo, hi = conv.score_range
    try:
        y = np.asarray(labels, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError):
        y = np.full(n + 1, np.nan, dtype=np.float32)
    if len(y) != n or not np.isfinite(y).all() or (y < lo).any() or (y > hi).any():
        raise PredictError(f"labels: expected {n} scores in [{lo:g}, {hi:g}] (one per text)")
    return task_labels(run.cfg.task, y, sign_classes(y))


def predict_inputs(run: "Run", texts: Sequence[str], audio: Frames = None, vision: Frames = None,
                   ids: Optional[Sequence[str]] = None, labels: Optional[Sequence[float]] = None,
                   batch_size: Optional[int] = None, missing: Optional[WhatIf] = None, progress: bool = False,
                   note: Note = None) -> PredictionTable:
    """Predictions on raw inputs.

    Args:
        texts: N transcripts, tokenised with the run's tokenizer to its text length.
        audio, vision: None (the modality is missing for every sample) or N entries, each a
            (T_i, d) float array of frames (d: the run's width) or None (missing for that sample).
        ids: N unique sample ids (default ``"0"`` ... ``"N-1"``).
        labels: optional N labels (sentiment scores in the run's range, or class names); the\n            table can then be scored.
        batch_size: samples per forward pass (default: the run's ``eval_batch_size``).
        missing: what-if masks on top of the inputs.
    """
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise PredictError("texts: expected a list of strings (one transcript per sample)")
    n = len(texts)
    if n == 0:
        raise PredictError("texts: nothing to predict (an empty list)")
    ids_arr = np.array([str(i) for i in range(n)] if ids is None else [str(i) for i in ids], dtype=object)
    if len(ids_arr) != n:
        raise PredictError(f"ids: expected {n} ids (one per text), got {len(ids_arr)}")
    if len(set(ids_arr.tolist())) != n:
        raise PredictError("ids: expected unique ids")
    y = np.zeros(n, dtype=np.float32)
    truth = None if labels is None else _truth(run, labels, n)
    s = run.shapes
    text_bert = _tokenize(run, list(texts), s.text_len)
    text_len = text_bert[:, 1].sum(axis=1) if s.aligned else None
    a_win, v_win = (s.text_len, s.text_len) if s.aligned else (s.audio_len, s.vision_len)
    a, a_len, a_present = _frames(audio, "audio", n, s.audio_dim, a_win, text_len, ids_arr, note)
    v, v_len, v_present = _frames(vision, "vision", n, s.vision_dim, v_win, text_len, ids_arr, note)
    split = Split("predict", text_bert, a, v, a_len, v_len, y, sign_classes(y),
                  np.array(list(texts), dtype=object), ids_arr)
    target = DeviceSplit.from_split(split, run.cfg.task, run.device)
    keep = None
    if not (a_present.all() and v_present.all()):
        text_mask, audio_mask, vision_mask = (m.cpu() > 0 for m in target.padding_masks())
        keep = KeepMasks(text_mask, audio_mask & torch.from_numpy(a_present)[:, None],
                         vision_mask & torch.from_numpy(v_present)[:, None])
    return _predict(run, target, keep, ids_arr, truth, batch_size, missing, progress)


def _tokenize(run: "Run", texts: list[str], max_len: int) -> np.ndarray:
    from cider_mer.data.import_csv import tokenize

    return tokenize(_tokenizer(run.cfg.text_encoder), texts, max_len).astype(np.int64)


def predict_transcripts(run: "Run", csv_path: str | Path, audio_features: Optional[str | Path] = None,
                        vision_features: Optional[str | Path] = None, media_dir: Optional[str | Path] = None,
                        split: Optional[str] = None, audio_kind: str = "librosa", video_kind: str = "facemesh",
                        video_fps: Optional[float] = None, batch_size: Optional[int] = None,
                        missing: Optional[WhatIf] = None, progress: bool = False, note: Note = None) -> PredictionTable:
    """Predictions on a transcripts CSV (the importer's format; ``label`` and ``mode`` optional)
    with optional ``.npz`` feature files, or features extracted from ``media_dir`` (needs the
    ``media`` extra). ``split``: only the rows of that ``mode``. Ids without features have that
    modality missing."""
    from cider_mer.data.import_csv import feature_tables, read_transcripts

    df, conv = read_transcripts(csv_path, run.meta.get("label_convention"), for_prediction=True)
    if split is not None:
        if df["split"].isna().all():
            raise PredictError(f"{csv_path}: selecting split '{split}' needs a 'mode' column")
        df = df[df["split"] == split]
    if df.empty:
        raise PredictError(f"{csv_path}: no rows to predict" + (f" with mode '{split}'" if split else ""))
    ids = list(df["id"])
    tables = feature_tables(ids, csv_path, audio_features, vision_features, media_dir, audio_kind, video_kind,
                            video_fps=video_fps, progress=progress, note=note)
    frames: list[Frames] = []
    for modality, table, given, kind in zip(("audio", "vision"), tables, (audio_features, vision_features),
                                            (audio_kind, video_kind)):
        if not table:
            frames.append(None)
            continue
        source = str(given) if media_dir is None else f"{media_dir} ({kind} features)"
        width, want = next(iter(table.values()))[0].shape[1], getattr(run.shapes, f"{modality}_dim")
        if width != want:
            raise PredictError(f"{source}: {modality} features are {width}-d, the run in {run.run_dir} expects "
                               f"{want}-d {modality} frames (the features it was trained on)")
        frames.append([table[i][0][:table[i][1]] if i in table else None for i in ids])
        absent = sum(i not in table for i in ids)
        if absent and media_dir is None and note is not None:
            note(f"{absent} of {len(ids)} ids in {csv_path} have no {modality} features in {given}: "
                 f"predicted with {modality} missing")
    labels = None if df["label"].isna().all() else df["label"].to_numpy()
    if labels is not None and conv.class_names:  # the CSV's class ids -> names (the run's ids may differ)
        labels = [conv.class_names[int(k)] for k in labels]
    return predict_inputs(run, list(df["text"]), frames[0], frames[1], ids=ids, labels=labels,
                          batch_size=batch_size, missing=missing, progress=progress, note=note)


# ---------------------------------------------------------------------------------------------- output


def output_format(path: str | Path) -> str:
    """``"csv"`` or ``"json"`` from the output file's suffix; anything else is a :class:`PredictError`."""
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise PredictError(f"{path}: unsupported output suffix '{Path(path).suffix}'; expected "
                           f"{' or '.join(OUTPUT_SUFFIXES)}")
    return suffix[1:]


def write_predictions(table: PredictionTable, path: str | Path) -> Path:
    """Write the table atomically: CSV (pandas) or a JSON list of records, by the suffix."""
    if output_format(path) == "csv":
        atomic_write_text(path, table.to_pandas().to_csv(index=False))
    else:
        atomic_write_json(path, table.to_records())
    return Path(path)
