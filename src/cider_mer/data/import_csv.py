"""Turn a transcript CSV (plus optional audio/vision feature files) into a dataset file.

Accepted CSV layouts (header row required):

- ``id,text,label,mode`` (for example the CMU-MOSI ``label.csv``);
- ``video_id,clip_id,text,label,mode`` (MMSA's layout; the id becomes ``video_id$_$clip_id``).

``label`` follows the label convention (:mod:`cider_mer.data.labels`): a sentiment score in [-3, 3]
(``mosi``) or [-1, 1] (``sims``), or a class name such as ``joy`` or ``anger`` (``categorical``).
Without an explicit convention, numbers mean ``mosi`` and names mean ``categorical`` (a mix is an
error; ``sims`` is always explicit). Categorical class ids follow the class names sorted
alphabetically over the whole CSV, so the same set of names always gives the same ids, whatever the
row order; the names are stored in the file's ``meta``. ``mode`` is ``train``, ``valid`` (or ``dev``) or
``test``. For prediction (``cider predict --csv``) both columns are optional: rows without
``label`` are unlabelled, and without ``mode`` they belong to no split. Text is tokenised with the
configured encoder's tokenizer to ``text_bert`` of length
``max_len`` (default 50, the field's choice).

Feature files (optional, one per modality): ``.npz`` archives read with ``allow_pickle=False``
holding ``ids`` (M,) distinct strings, ``features`` (M, T, d) finite numbers (M, T, d >= 1) and
``lengths`` (M,) whole numbers in [0, T]. Samples are matched by id; a sample without features
gets zero frames and length 0; ids that match no CSV row are ignored with a note, and a file none
of whose ids matches is an error. Without a feature file the modality is written as shape
(N, 1, 1) zeros with every length 0: the rest of the tool treats it as missing for every sample.

With ``media_dir`` the features are extracted from the recordings in that folder instead (see
:mod:`cider_mer.media`; needs the ``media`` extra): a file's id is its name without extension
(``VIDEO/CLIP.mp4`` also matches ``VIDEO$_$CLIP``); ids without a file have missing audio and
video; a CSV none of whose ids has a file is an error.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from cider_mer.data.dataset import DatasetError, MerDataset, dataset_from_dict, save_dataset
from cider_mer.data.labels import CONVENTIONS, LabelConvention, sign_classes
from cider_mer.data.npz_safety import check_npz_claims

LAYOUTS = (("id", "text", "label", "mode"), ("video_id", "clip_id", "text", "label", "mode"))
MODE_TO_SPLIT = {"train": "train", "valid": "valid", "dev": "valid", "val": "valid", "test": "test"}
FeatureTable = dict[str, tuple[np.ndarray, int]]  # {id: (features (T, d), length)}


def _labels(path: str, raw: pd.Series, convention: Optional[str]) -> tuple[np.ndarray, LabelConvention]:
    """The label column as (N,) float32 scores or int64 class ids, and the convention they follow."""
    text = raw.astype(str).str.strip()
    scores = pd.to_numeric(text, errors="coerce")
    if convention is None:
        if scores.isna().all():
            convention = "categorical"
        elif scores.isna().any():
            row = int(np.flatnonzero(scores.isna().to_numpy())[0])
            raise DatasetError(f"{path} [row {row + 2}, column 'label']: expected a score like the other rows, got "
                               f"{raw.iloc[row]!r} (labels are all scores or all class names; see --convention)")
        else:
            convention = "mosi"
    if convention not in CONVENTIONS:
        raise DatasetError(f"unknown label convention '{convention}': expected one of {list(CONVENTIONS)}")
    if convention == "categorical":
        if (text == "").any():
            row = int(np.flatnonzero((text == "").to_numpy())[0])
            raise DatasetError(f"{path} [row {row + 2}, column 'label']: expected a class name, got an empty label")
        names = sorted(set(text))
        if len(names) < 2:
            raise DatasetError(f"{path} [column 'label']: expected at least two classes, found only {names}")
        ids = {name: k for k, name in enumerate(names)}
        return text.map(ids).to_numpy(dtype=np.int64), LabelConvention("categorical", tuple(names))
    conv = LabelConvention(convention)
    lo, hi = conv.score_range
    bad = scores.isna() | (scores < lo) | (scores > hi)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DatasetError(f"{path} [row {row + 2}, column 'label']: expected a score in [{lo:g}, {hi:g}] "
                           f"(label convention '{convention}'), got {raw.iloc[row]!r}")
    return scores.to_numpy(dtype=np.float32), conv


def read_transcripts(csv_path: str | Path, convention: Optional[str] = None,
                     for_prediction: bool = False) -> tuple[pd.DataFrame, LabelConvention]:
    """Read and check a transcript CSV; returns columns id, text, label (scores or class ids), split, and
    the label convention (``convention``, or the one the labels imply when None).

    ``for_prediction``: the ``label`` and ``mode`` columns may be absent (their columns are then
    NaN / None) and the three splits need not all have rows.
    """
    path = str(csv_path)
    try:
        df = pd.read_csv(path, dtype={"id": str, "video_id": str, "clip_id": str, "text": str, "mode": str,
                                      "label": str},
                         keep_default_na=False)
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DatasetError(f"{path}: is a directory; expected a CSV file") from None
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError, OSError) as exc:
        raise DatasetError(f"{path}: cannot parse as CSV ({exc})") from exc
    cols = set(df.columns)
    optional = {"label", "mode"} if for_prediction else set()
    layouts = [[c for c in layout if c not in optional] for layout in LAYOUTS]
    if set(layouts[1]) <= cols:
        df = df.assign(id=df["video_id"].astype(str) + "$_$" + df["clip_id"].astype(str))
    elif not set(layouts[0]) <= cols:
        raise DatasetError(
            f"{path}: expected columns {','.join(layouts[0])} or {','.join(layouts[1])}, found {','.join(df.columns)}"
        )
    if "label" in cols:
        labels, conv = _labels(path, df["label"], convention)
    else:
        labels, conv = np.full(len(df), np.nan, dtype=np.float32), LabelConvention(convention or "mosi")
    splits = pd.Series(None, index=df.index, dtype=object)
    if "mode" in cols:
        modes = df["mode"].astype(str).str.strip().str.lower()
        unknown = ~modes.isin(list(MODE_TO_SPLIT))
        if unknown.any():
            row = int(np.flatnonzero(unknown.to_numpy())[0])
            raise DatasetError(f"{path} [row {row + 2}, column 'mode']: expected train, valid/dev or test, "
                               f"got {df['mode'].iloc[row]!r}")
        splits = modes.map(MODE_TO_SPLIT)
    if df["id"].duplicated().any():
        dup = df["id"][df["id"].duplicated()].iloc[0]
        raise DatasetError(f"{path} [column 'id']: expected unique ids, '{dup}' appears twice")
    out = pd.DataFrame({"id": df["id"].astype(str), "text": df["text"].astype(str), "label": labels,
                        "split": splits})
    for split in () if for_prediction else ("train", "valid", "test"):
        if not (out["split"] == split).any():
            raise DatasetError(f"{path} [column 'mode']: no rows for split '{split}'")
    return out, conv


def read_feature_file(path: str | Path, modality: str) -> FeatureTable:
    """Read and check an ``.npz`` feature file into {id: (features (T, d), length)}."""
    p = str(path)
    check_npz_claims(p, f"{modality} features")
    try:
        with np.load(p, allow_pickle=False) as z:
            missing = [k for k in ("ids", "features", "lengths") if k not in z.files]
            if missing:
                raise DatasetError(f"{p} [{modality} features]: missing array(s) {missing}; expected ids, features, lengths")
            ids, feats, lengths = z["ids"], z["features"], z["lengths"]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DatasetError(f"{p} [{modality} features]: cannot read as .npz without pickles ({exc})") from exc

    def fail(key: str, expectation: str) -> DatasetError:
        return DatasetError(f"{p} [{modality} features, key '{key}']: {expectation}")

    if ids.ndim != 1 or ids.dtype.kind not in "US" or len(ids) == 0:
        raise fail("ids", f"expected (M,) strings with M >= 1, got shape {ids.shape} of {ids.dtype}")
    if feats.ndim != 3 or feats.dtype.kind not in "iuf" or min(feats.shape, default=0) < 1:
        raise fail("features", f"expected (M, T, d) numbers with T, d >= 1, got shape {feats.shape} of {feats.dtype}")
    if lengths.ndim != 1 or lengths.dtype.kind not in "iuf":
        raise fail("lengths", f"expected (M,) whole numbers, got shape {lengths.shape} of {lengths.dtype}")
    if not len(ids) == len(feats) == len(lengths):
        raise DatasetError(f"{p} [{modality} features]: expected ids (M,), features (M, T, d), lengths (M,) with "
                           f"one M; got {ids.shape}, {feats.shape}, {lengths.shape}")
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise fail("ids", f"expected distinct ids, '{unique[counts > 1][0]}' appears {counts.max()} times")
    if not np.isfinite(feats).all():
        raise fail("features", "expected finite values")
    if not (np.isfinite(lengths).all() and (lengths == np.round(lengths)).all()):
        raise fail("lengths", f"expected whole numbers, got {lengths[lengths != np.round(lengths)][:1].tolist()}")
    if lengths.min() < 0 or lengths.max() > feats.shape[1]:
        raise fail("lengths", f"expected values in [0, {feats.shape[1]}] (T), got {lengths.min():g} .. "
                              f"{lengths.max():g}")
    return {str(i): (feats[k].astype(np.float32), int(lengths[k])) for k, i in enumerate(ids)}


def tokenize(tokenizer, texts: list[str], max_len: int) -> np.ndarray:
    """(N, 3, max_len) float32 ``text_bert`` rows (ids, attention mask, segment ids) of ``texts``,
    padded or truncated to ``max_len`` tokens with [CLS] and [SEP]."""
    enc = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_len,
                    return_token_type_ids=True, return_attention_mask=True)
    return np.stack([np.asarray(enc["input_ids"]), np.asarray(enc["attention_mask"]),
                     np.asarray(enc["token_type_ids"])], axis=1).astype(np.float32).reshape(len(texts), 3, max_len)
def _match_ids(table: dict, csv_ids: list[str], path: str | Path, modality: str, note) -> None:
    """A feature file must share ids with the CSV; ids the CSV lacks are ignored (with a note)."""
    known = set(csv_ids)
    unmatched = [i for i in table if i not in known]
    if len(unmatched) == len(table):
        raise DatasetError(f"{path} [{modality} features, key 'ids']: none of its {len(table)} ids matches an id of "
                           f"the CSV (e.g. '{unmatched[0]}' vs '{csv_ids[0]}'; the MMSA layout's id is "
                           "video_id$_$clip_id)")
    if unmatched and note is not None:
        note(f"{len(unmatched)} of {len(table)} ids in {path} match no CSV row and are ignored "
             f"(e.g. '{unmatched[0]}')")


def _modality_arrays(ids: np.ndarray, table: Optional[dict]) -> tuple[np.ndarray, np.ndarray]:
    if table is None:
        return np.zeros((len(ids), 1, 1), dtype=np.float32), np.zeros(len(ids), dtype=np.int64)
    t, d = next(iter(table.values()))[0].shape
    feats = np.zeros((len(ids), t, d), dtype=np.float32)
    lengths = np.zeros(len(ids), dtype=np.int64)
    for k, i in enumerate(ids):
        if i in table:
            f, n = table[i]
            feats[k, :n] = f[:n]
            lengths[k] = n
    return feats, lengths


def feature_tables(
    ids: list[str],
    csv_path: str | Path,
    audio_features: Optional[str | Path] = None,
    vision_features: Optional[str | Path] = None,
    media_dir: Optional[str | Path] = None,
    audio_kind: str = "librosa",
    video_kind: str = "facemesh",
    features_dir: Optional[str | Path] = None,
    video_fps: Optional[float] = None,
    progress: bool = True,
    note=None,
) -> tuple[Optional[FeatureTable], Optional[FeatureTable]]:
    """The audio and vision features of a transcript CSV's ``ids``: read from ``.npz`` files, or
    extracted from the recordings in ``media_dir`` (see :func:`import_csv`); None for a modality
    without any."""
    if media_dir is None:
        audio_table = read_feature_file(audio_features, "audio") if audio_features else None
        vision_table = read_feature_file(vision_features, "vision") if vision_features else None
        for table, file, modality in ((audio_table, audio_features, "audio"),
                                      (vision_table, vision_features, "vision")):
            if table is not None:
                _match_ids(table, ids, file, modality, note)
        return audio_table, vision_table
    if audio_features or vision_features:
        raise DatasetError("use either a media folder or feature files (audio/vision features), not both")
    from cider_mer.media.extract import media_for_import, write_features

    report = media_for_import(media_dir, ids, csv_path, audio=audio_kind, video=video_kind,
                              video_fps=video_fps, progress=progress, note=note)
    if features_dir is not None:
        write_features(report, features_dir)
    return (report.audio.table() if report.audio is not None else None,
            report.video.table() if report.video is not None else None)


def import_csv(
    csv_path: str | Path,
    out_path: Optional[str | Path] = None,
    text_encoder: Optional[str] = None,
    max_len: int = 50,
    audio_features: Optional[str | Path] = None,
    vision_features: Optional[str | Path] = None,
    tokenizer=None,
    media_dir: Optional[str | Path] = None,
    audio_kind: str = "librosa",
    video_kind: str = "facemesh",
    features_dir: Optional[str | Path] = None,
    video_fps: Optional[float] = None,
    progress: bool = True,
    note=None,
    convention: Optional[str] = None,
) -> MerDataset:
    """Build (and, with ``out_path``, atomically write) a dataset file from a transcript CSV.

    ``convention``: the labels' convention (mosi, sims or categorical; None: mosi for scores,
    categorical for class names).
    ``media_dir``: extract audio (``audio_kind``) and video (``video_kind``) features from the media
    files there, keeping the ``.npz`` files in ``features_dir`` when given; ``note`` receives
    one-line remarks (ids without media, files without a sound track).
    """
    if tokenizer is None:
        from cider_mer.text.encoder import load_tokenizer

        tokenizer = load_tokenizer(text_encoder)
    df, conv = read_transcripts(csv_path, convention)
    audio_table, vision_table = feature_tables(list(df["id"]), csv_path, audio_features, vision_features, media_dir,
                                               audio_kind, video_kind, features_dir, video_fps, progress, note)
    data: dict = {}
    for split in ("train", "valid", "test"):
        part = df[df["split"] == split]
        text_bert = tokenize(tokenizer, list(part["text"]), max_len)
        ids = part["id"].to_numpy(dtype=object)
        audio, a_len = _modality_arrays(ids, audio_table)
        vision, v_len = _modality_arrays(ids, vision_table)
        y = part["label"].to_numpy()
        labels = ({"classification_labels": y} if conv.score_range is None
                  else {"regression_labels": y, "classification_labels": sign_classes(y)})
        data[split] = {
            "text_bert": text_bert, "audio": audio, "vision": vision,
            "audio_lengths": a_len, "vision_lengths": v_len, **labels,
            "raw_text": part["text"].to_numpy(dtype=object), "id": ids,
        }
    if conv.to_meta() is not None:
        data["meta"] = conv.to_meta()
    ds = dataset_from_dict(data, source=str(out_path or csv_path))
    if out_path is not None:
        save_dataset(ds, out_path)
    return ds
