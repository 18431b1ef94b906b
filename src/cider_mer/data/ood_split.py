"""OOD re-partition of a dataset file by word-label correlation (SPEC §7).

The three splits of an IID file are pooled and re-assigned so that the words which predict the
label in train/valid predict it badly in test, while the split sizes stay exactly those of the
input. The idea follows CLUE (Sun et al., 2022) and the OOD MOSI/MOSEI files of the CIDer paper.

Outline (details and the reasons in ``docs/ood_split.md``):

1. **Tokens.** Lower-case, drop apostrophes, turn every other punctuation mark into a space,
   split on whitespace and remove English stop words (scikit-learn's list). Each sample is a
   *set* of content words (document frequency).
2. **Word statistics.** On the pooled data, ``n[w, c]`` = number of samples of class ``c``
   containing word ``w``. The smoothed pointwise association of a word with a class is
   ``pmi(w, c) = log((n[w, c] + a * p[c]) / (n[w] + a)) - log(p[c])`` with class priors ``p``
   and ``a`` pseudo-counts spread as the prior (rare words shrink to 0).
3. **Agreement.** All statistics leave out the sample's own **unit** (the sample itself, or
   its whole video with ``group_by_video``), so a word seen only in that unit says nothing.
   A sample's agreement is the mean ``pmi(w, y)`` of its words with its own label ``y``.
4. **Assignment without grouping.** Keys = agreement z-scored within each class + seeded
   ``N(0, noise^2)`` jitter (``noise`` 1.5). Per class, test takes the lowest keys up to its
   class quota (the pooled priors, largest-remainder rounding), valid a seeded random draw of
   its quota from the rest, train what is left.
   With ``prior_shift`` the test quota is not stratified: keys = agreement z-scored over all
   samples (not per class) + jitter, test takes the lowest keys of any class, so the classes whose
   words agree less with their labels go to test more often and the split carries a label-prior
   shift (like the authors' OOD files); valid is then a stratified random draw of the rest, so it
   keeps train's priors.
5. **Assignment with ``group_by_video``.** A video's key is the share of its clips that naive
   Bayes on the *other* videos' words (``log p[c] + sum_w pmi(w, c)``) classifies correctly,
   z-scored over videos + jitter (``noise`` 0.25). Test is the set of whole videos with exactly
   ``N_test`` clips and the lowest summed key (an exact 0/1 knapsack), valid a seeded random set
   of whole videos with exactly ``N_valid`` clips (the same knapsack on random keys), train the
   rest. When no set of whole videos has the exact size, :class:`DatasetError` says so.

The API is :func:`ood_split` (in memory) and :func:`write_ood_split` (file to file, plus a JSON
manifest next to the output), which the ``cider data ood-split`` command wraps.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cider_mer.data.dataset import SPLITS, DatasetError, MerDataset, Split, load_dataset, save_dataset
from cider_mer.data.labels import CLASS_NAMES, check_task, class_priors, num_classes
from cider_mer.errors import ConfigError
from cider_mer.io_utils import atomic_write_json

__all__ = [
    "ood_split",
    "write_ood_split",
    "measure_shift",
    "tokenize",
    "video_of",
    "format_summary",
    "manifest_path",
]

# Defaults of the scoring and assignment (recorded in every manifest).
SMOOTHING = 5.0  # pseudo-counts a of the smoothed pmi
NOISE = 1.5  # std of the seeded jitter on the z-scored sample agreement (0 = fully greedy)
NOISE_VIDEO = 0.25  # the same for the z-scored video keys of group_by_video (fewer, averaged units)
TOP_WORDS = 50  # biased words listed in the manifest
MIN_WORD_COUNT = 5  # a listed word occurs in at least this many samples

_APOSTROPHES = re.compile(r"['\u2019`]")
_NON_WORD = re.compile(r"[\W_]+", flags=re.UNICODE)

SCORING = (
    "content words (lower-cased, punctuation stripped, scikit-learn English stop words removed); "
    "smoothed pmi(w, c) = log((n_wc + a*p_c)/(n_w + a)) - log p_c on the pooled splits, leaving "
    "out the sample's own unit (the sample, or its video with group_by_video). Samples: agreement "
    "= mean pmi of the words with the own label, z-scored per class, + seeded N(0, noise^2); per "
    "class the lowest go to test at the pooled priors, valid is a seeded random draw of the rest. "
    "Videos: key = share of clips that leave-video-out naive Bayes gets right, z-scored, + noise; "
    "test = whole videos with exactly N_test clips and the lowest summed key (0/1 knapsack), "
    "valid = random whole videos with exactly N_valid clips; train the remainder. prior_shift: agreement "
    "z-scored over all samples, test = the lowest keys of any class (no class quota), valid stratified"
)


def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def tokenize(text: str, stop_words: frozenset[str] | None = None) -> list[str]:
    """Content words of ``text``: lower-cased, punctuation stripped, English stop words removed."""
    sw = _stop_words() if stop_words is None else stop_words
    cleaned = _NON_WORD.sub(" ", _APOSTROPHES.sub("", str(text).lower()))
    return [t for t in cleaned.split() if t not in sw]


def video_of(sample_id: str) -> str:
    """The video part of a clip id: before the last ``$_$`` if present, else before the last ``_``."""
    s = str(sample_id)
    if "$_$" in s:
        return s.rsplit("$_$", 1)[0]
    if "_" in s:
        return s.rsplit("_", 1)[0]
    return s


def manifest_path(out_path: str | Path) -> Path:
    """Where :func:`write_ood_split` puts the manifest: ``str(out_path) + '.manifest.json'``."""
    return Path(str(out_path) + ".manifest.json")


# ----------------------------------------------------------------------------------------------
# pooling and gathering


class _Pool:
    """The three input splits seen as one sequence of samples (no feature arrays are copied)."""

    def __init__(self, data: MerDataset, task: str) -> None:
        source = data.path or "<memory>"
        for name in SPLITS:
            if data[name].raw_text is None:
                raise DatasetError(
                    f"{source} [split '{name}', key 'raw_text']: missing: the OOD re-partition needs "
                    "the transcripts as 'raw_text' ((N,) str) in every split (train, valid, test); "
                    "re-create the file with raw text, e.g. with the CSV importer"
                )
        self.data = data
        self.source = source
        self.sizes = {name: data[name].n for name in SPLITS}
        self.offsets = np.cumsum([0] + [self.sizes[n] for n in SPLITS])
        self.text = np.concatenate([np.asarray(data[n].raw_text, dtype=object) for n in SPLITS])
        self.labels = np.concatenate([data[n].labels(task) for n in SPLITS]).astype(np.int64)
        self.synthetic_ids = any(data[n].ids is None for n in SPLITS)
        ids = [
            np.asarray(data[n].ids, dtype=object)
            if data[n].ids is not None
            else np.array([f"{n}:{i}" for i in range(data[n].n)], dtype=object)
            for n in SPLITS
        ]
        self.ids = np.concatenate(ids)
        uniq, counts = np.unique(self.ids.astype(str), return_counts=True)
        if (counts > 1).any():
            dup = uniq[counts > 1]
            raise DatasetError(
                f"{source} [key 'id']: expected every sample id to be unique across the splits, "
                f"found {int(dup.size)} repeated (e.g. {', '.join(map(repr, dup[:3].tolist()))})"
            )

    @property
    def n(self) -> int:
        return int(self.offsets[-1])

    def gather(self, index: np.ndarray, name: str) -> Split:
        """A split holding the pooled samples at ``index`` (in increasing pooled order)."""
        index = np.sort(np.asarray(index, dtype=np.int64))
        parts = []  # (source split, rows in source, positions in output)
        for k, src in enumerate(SPLITS):
            lo, hi = self.offsets[k], self.offsets[k + 1]
            pos = np.nonzero((index >= lo) & (index < hi))[0]
            parts.append((self.data[src], index[pos] - lo, pos))
        ref = self.data["train"]

        def take(field: str) -> np.ndarray:
            first = getattr(ref, field)
            out = np.empty((index.size,) + first.shape[1:], dtype=first.dtype)
            for split, rows, pos in parts:
                out[pos] = getattr(split, field)[rows]
            return out

        ids = np.empty(index.size, dtype=object)
        ids[:] = self.ids[index]
        raw = np.empty(index.size, dtype=object)
        raw[:] = self.text[index]
        return Split(
            name=name,
            text_bert=take("text_bert"),
            audio=take("audio"),
            vision=take("vision"),
            audio_lengths=take("audio_lengths"),
            vision_lengths=take("vision_lengths"),
            regression_labels=take("regression_labels"),
            classification_labels=take("classification_labels"),
            raw_text=raw,
            ids=ids,
        )


# ----------------------------------------------------------------------------------------------
# word statistics and agreement


def _incidence(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(rows, cols, vocabulary): one entry per (sample, distinct content word)."""
    sw = _stop_words()
    vocab: dict[str, int] = {}
    rows: list[int] = []
    cols: list[int] = []
    for i, text in enumerate(texts):
        for w in dict.fromkeys(tokenize(text, sw)):  # distinct, first-seen order
            rows.append(i)
            cols.append(vocab.setdefault(w, len(vocab)))
    words = [""] * len(vocab)
    for w, j in vocab.items():
        words[j] = w
    return np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64), words


def _pmi(n_wc: np.ndarray, n_w: np.ndarray, prior: np.ndarray, alpha: float) -> np.ndarray:
    return np.log((n_wc + alpha * prior) / (n_w + alpha)) - np.log(prior)


def _smoothed_prior(labels: np.ndarray, n_classes: int) -> np.ndarray:
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    return (counts + 1.0) / (counts.sum() + n_classes)


def _evidence(
    rows: np.ndarray, cols: np.ndarray, n_words: int, labels: np.ndarray, units: np.ndarray,
    n_classes: int, alpha: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Leave-own-unit-out word evidence per sample and class.

    Returns ``(pmi_sum, n_content_words, prior)``: ``pmi_sum[i, c]`` is the sum over the distinct
    content words of sample ``i`` of ``pmi(w, c)``, computed from the pooled counts minus those
    of the sample's own unit (the sample itself, or its whole video).
    """
    n = labels.size
    prior = _smoothed_prior(labels, n_classes)
    pmi_sum = np.zeros((n, n_classes))
    count = np.bincount(rows, minlength=n)
    if rows.size == 0:
        return pmi_sum, count, prior
    y = labels[rows]
    n_wc = np.zeros((n_words, n_classes))
    np.add.at(n_wc, (cols, y), 1.0)
    n_w = n_wc.sum(axis=1)
    # entries sharing (unit, word): what the own unit contributes to that word's counts
    _, inv, cnt = np.unique(units[rows] * n_words + cols, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    own_w = cnt[inv].astype(np.float64)
    for c in range(n_classes):
        own_wc = np.bincount(inv, weights=(y == c).astype(np.float64))[inv]
        score = _pmi(n_wc[cols, c] - own_wc, n_w[cols] - own_w, prior[c], alpha)
        pmi_sum[:, c] = np.bincount(rows, weights=score, minlength=n)
    return pmi_sum, count, prior


def _zscore_per_class(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    out = np.zeros_like(values, dtype=np.float64)
    for c in np.unique(labels):
        m = labels == c
        v = values[m]
        sd = v.std()
        out[m] = (v - v.mean()) / sd if sd > 0 else 0.0
    return out


def _biased_words(
    rows: np.ndarray, cols: np.ndarray, words: list[str], labels: np.ndarray, in_test: np.ndarray,
    task: str, alpha: float, top: int = TOP_WORDS, min_count: int = MIN_WORD_COUNT,
) -> list[dict[str, Any]]:
    """The most label-skewed words on the pooled data, with their class counts before/after."""
    c_n = num_classes(task)
    prior = _smoothed_prior(labels, c_n)
    n_wc = np.zeros((len(words), c_n))
    np.add.at(n_wc, (cols, labels[rows]), 1.0)
    test_wc = np.zeros((len(words), c_n))
    t = in_test[rows]
    np.add.at(test_wc, (cols[t], labels[rows][t]), 1.0)
    n_w = n_wc.sum(axis=1)
    pmi = _pmi(n_wc, n_w[:, None], prior[None, :], alpha)
    p_cw = (n_wc + alpha * prior) / (n_w[:, None] + alpha)
    skew = (p_cw * pmi).sum(axis=1)  # KL(P(c|w) || P(c)), smoothed
    strength = np.where(n_w >= min_count, n_w * skew, -np.inf)
    order = sorted(range(len(words)), key=lambda j: (-strength[j], words[j]))
    names = CLASS_NAMES[task]
    out = []
    for j in order[:top]:
        if not np.isfinite(strength[j]):
            break
        out.append({
            "word": words[j],
            "count": int(n_w[j]),
            "class": names[int(np.argmax(pmi[j]))],
            "counts_per_class": n_wc[j].astype(int).tolist(),
            "counts_per_class_train_valid": (n_wc[j] - test_wc[j]).astype(int).tolist(),
            "counts_per_class_test": test_wc[j].astype(int).tolist(),
            "log_odds": np.round(pmi[j], 4).tolist(),
            "skew": round(float(skew[j]), 5),
        })
    return out


# ----------------------------------------------------------------------------------------------
# assignment


def _quotas(class_counts: np.ndarray, total: int) -> np.ndarray:
    """Per-class counts summing to ``total``, proportional to ``class_counts`` (largest remainder)."""
    avail = class_counts.sum()
    if total >= avail:
        return class_counts.copy()
    exact = class_counts * (total / avail)
    base = np.floor(exact).astype(np.int64)
    rest = total - int(base.sum())
    # largest fractional part first; ties broken by the larger class, then the class index
    order = sorted(range(class_counts.size), key=lambda c: (-(exact[c] - base[c]), -class_counts[c], c))
    for c in order[:rest]:
        base[c] += 1
    return np.minimum(base, class_counts)


def _stratified(
    keys_test: np.ndarray, keys_valid: np.ndarray, labels: np.ndarray, n_classes: int,
    n_valid: int, n_test: int, stratify_test: bool = True,
) -> np.ndarray:
    """Split code per sample (0 train, 1 valid, 2 test): lowest ``keys_test`` per class go to test,
    then lowest ``keys_valid`` per class among the rest go to valid, at the pooled class priors.
    ``stratify_test=False``: test takes the lowest ``keys_test`` of any class instead (its class
    quotas are whatever that gives); valid stays stratified on the rest."""
    code = np.zeros(labels.size, dtype=np.int64)
    counts = np.bincount(labels, minlength=n_classes)
    if stratify_test:
        q_test = _quotas(counts, n_test)
    else:
        idx_all = np.arange(labels.size)
        lowest = idx_all[np.lexsort((idx_all, keys_test))][:n_test]
        q_test = np.bincount(labels[lowest], minlength=n_classes)
    q_valid = _quotas(counts - q_test, n_valid)
    idx = np.arange(labels.size)
    for c in range(n_classes):
        members = idx[labels == c]
        order = members[np.lexsort((members, keys_test[members]))]
        code[order[: q_test[c]]] = 2
        rest = order[q_test[c]:]
        rest = rest[np.lexsort((rest, keys_valid[rest]))]
        code[rest[: q_valid[c]]] = 1
    return code


def _knapsack(sizes: np.ndarray, costs: np.ndarray, target: int) -> np.ndarray | None:
    """Indices of items whose sizes sum to exactly ``target`` with the least total cost, or None."""
    inf = np.inf
    best = np.full(target + 1, inf)
    best[0] = 0.0
    chosen = np.zeros((sizes.size, target + 1), dtype=bool)
    for j, (w, c) in enumerate(zip(sizes.tolist(), costs.tolist())):
        if w > target or w <= 0:
            continue
        cand = best[: target + 1 - w] + c
        better = cand < best[w:]
        if better.any():
            chosen[j, w:] = better
            best[w:] = np.where(better, cand, best[w:])
    if not np.isfinite(best[target]):
        return None
    picked = []
    s = target
    for j in range(sizes.size - 1, -1, -1):
        if s == 0:
            break
        if chosen[j, s]:
            picked.append(j)
            s -= int(sizes[j])
    return np.asarray(picked[::-1], dtype=np.int64)


def _grouped(
    unit_keys_test: np.ndarray, unit_keys_valid: np.ndarray, units: np.ndarray, n_valid: int,
    n_test: int, source: str, sizes: dict[str, int],
) -> np.ndarray:
    """Split code per sample with whole units (videos): exact sizes by two 0/1 knapsacks."""
    n_units = int(units.max()) + 1 if units.size else 0
    unit_size = np.bincount(units, minlength=n_units)
    unit_code = np.zeros(n_units, dtype=np.int64)

    def fail(which: str, target: int, pool: np.ndarray) -> DatasetError:
        return DatasetError(
            f"{source}: cannot keep the split sizes train/valid/test = "
            f"{sizes['train']}/{sizes['valid']}/{sizes['test']} exactly with group_by_video: no set of "
            f"whole videos has exactly {target} clips for '{which}' ({pool.size} videos available, "
            f"clip counts {sorted(unit_size[pool].tolist())[:20]}{'...' if pool.size > 20 else ''}); "
            "run without group_by_video"
        )

    every = np.arange(n_units)
    # cost of a video = its clips' summed key: the test set has the lowest mean key of any exact set
    test_units = _knapsack(unit_size, unit_keys_test * unit_size, n_test)
    if test_units is None:
        raise fail("test", n_test, every)
    unit_code[test_units] = 2
    rest = every[unit_code == 0]
    valid_local = _knapsack(unit_size[rest], unit_keys_valid[rest] * unit_size[rest], n_valid)
    if valid_local is None:
        raise fail("valid", n_valid, rest)
    unit_code[rest[valid_local]] = 1
    return unit_code[units]


# ----------------------------------------------------------------------------------------------
# public API


def _unit_index(ids: np.ndarray, group_by_video: bool) -> np.ndarray:
    if not group_by_video:
        return np.arange(ids.size, dtype=np.int64)
    videos = [video_of(s) for s in ids.tolist()]
    _, inv = np.unique(np.asarray(videos, dtype=str), return_inverse=True)
    return inv.reshape(-1).astype(np.int64)


def _assign(pool: _Pool, task: str, seed: int, group_by_video: bool, ood: bool,
            alpha: float, noise: float, prior_shift: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """(split code per pooled sample: 0 train, 1 valid, 2 test; extra info). ``ood=False`` gives
    the IID reference of the same sizes: the same machinery on purely random keys (stratified)."""
    if group_by_video and prior_shift:
        raise ConfigError("prior_shift applies to the split without group_by_video (the grouped split never "
                          "stratifies its class priors)")
    if group_by_video and pool.synthetic_ids:
        raise DatasetError(
            f"{pool.source} [key 'id']: missing: group_by_video needs the 'id' of every sample "
            "('video$_$clip' or 'video_clip') in every split"
        )
    c_n = num_classes(task)
    units = _unit_index(pool.ids, group_by_video)
    n_units = int(units.max()) + 1 if units.size else 0
    info: dict[str, Any] = {"units": units}
    if ood:
        rows, cols, words = _incidence(pool.text.tolist())
        pmi_sum, n_content, prior = _evidence(rows, cols, len(words), pool.labels, units, c_n, alpha)
        own = np.arange(pool.n)
        agreement = pmi_sum[own, pool.labels] / np.maximum(n_content, 1)
        nb_correct = (pmi_sum + np.log(prior)).argmax(axis=1) == pool.labels
        info.update(rows=rows, cols=cols, words=words, agreement=agreement, nb_correct=nb_correct)
    ss = np.random.SeedSequence([int(seed), 0 if ood else 1])
    rng_test, rng_valid = (np.random.default_rng(s) for s in ss.spawn(2))
    n_valid, n_test = pool.sizes["valid"], pool.sizes["test"]
    if not group_by_video:
        shifted = ood and prior_shift
        if ood:
            sd = agreement.std()
            z = ((agreement - agreement.mean()) / (sd if sd > 0 else 1.0) if shifted
                 else _zscore_per_class(agreement, pool.labels))
            keys_test = z + noise * rng_test.standard_normal(pool.n)
        else:
            keys_test = rng_test.random(pool.n)
        keys_valid = rng_valid.random(pool.n)
        code = _stratified(keys_test, keys_valid, pool.labels, c_n, n_valid, n_test, stratify_test=not shifted)
    else:
        if ood:
            # a video's agreement: the share of its clips that naive Bayes on the other videos'
            # word statistics classifies correctly (what a BoW model trained elsewhere would get)
            unit_mean = np.bincount(units, weights=nb_correct.astype(np.float64), minlength=n_units)
            unit_mean /= np.bincount(units, minlength=n_units)
            sd = unit_mean.std()
            unit_z = (unit_mean - unit_mean.mean()) / sd if sd > 0 else np.zeros(n_units)
            keys_test = unit_z + noise * rng_test.standard_normal(n_units)
        else:
            keys_test = rng_test.standard_normal(n_units)
        keys_valid = rng_valid.standard_normal(n_units)
        code = _grouped(keys_test, keys_valid, units, n_valid, n_test, pool.source, pool.sizes)
    return code, info


def _noise(noise: float | None, group_by_video: bool) -> float:
    if noise is None:
        return NOISE_VIDEO if group_by_video else NOISE
    return float(noise)


def _build(pool: _Pool, code: np.ndarray) -> MerDataset:
    splits = {name: pool.gather(np.nonzero(code == k)[0], name) for k, name in enumerate(SPLITS)}
    return MerDataset(splits=splits, aligned=pool.data.aligned, path=None, extra=dict(pool.data.extra))


def _bow_score(train_text, train_y, eval_text, eval_y, task: str, seed: int) -> float:
    """Accuracy in percent of a bag-of-words logistic regression: Non0 Acc2 (binary) or Acc7."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    sw = _stop_words()
    vec = CountVectorizer(analyzer=lambda s: tokenize(s, sw))
    x_train = vec.fit_transform(list(train_text))
    clf = LogisticRegression(max_iter=2000, random_state=seed)
    # one BLAS thread: this problem is tiny, and threads contending on a busy machine cost 100x
    with threadpool_limits(limits=1):
        clf.fit(x_train, np.asarray(train_y))
        proba = clf.predict_proba(vec.transform(list(eval_text)))
    full = np.zeros((proba.shape[0], num_classes(task)))
    full[:, clf.classes_] = proba  # classes absent from train can never be predicted
    pred = full.argmax(axis=1)
    y = np.asarray(eval_y)
    if task == "binary":
        keep = y != 1
        if not keep.any():
            return float("nan")
        return float((pred[keep] == y[keep]).mean() * 100.0)
    return float((pred == y).mean() * 100.0)


def _split_scores(pool: _Pool, code: np.ndarray, task: str, seed: int) -> dict[str, float]:
    tr = code == 0
    return {
        name: _bow_score(pool.text[tr], pool.labels[tr], pool.text[code == k], pool.labels[code == k], task, seed)
        for k, name in ((1, "valid"), (2, "test"))
    }


def _priors(labels: np.ndarray, code: np.ndarray, n_classes: int) -> dict[str, list[float]]:
    return {
        name: np.round(class_priors(labels[code == k], n_classes), 4).tolist() for k, name in enumerate(SPLITS)
    }


def measure_shift(data: MerDataset, ood_code: np.ndarray | None = None, *, task: str = "binary",
                  seed: int = 0, group_by_video: bool = False, alpha: float = SMOOTHING,
                  noise: float | None = None, prior_shift: bool = False) -> dict[str, Any]:
    """The measured effect of the re-partition: BoW accuracy (percent) on the OOD test and on an
    IID re-split of the same sizes and seed, plus the priors of the IID re-split.

    ``ood_code`` (0 train, 1 valid, 2 test per pooled sample, in train-valid-test order) defaults
    to the OOD assignment of ``data`` for these settings. The IID re-split is a seeded random
    stratified draw (with ``group_by_video``: random whole videos, exact sizes by the knapsack),
    with or without ``prior_shift``.
    """
    task = check_task(task)
    noise = _noise(noise, group_by_video)
    pool = _Pool(data, task)
    if ood_code is None:
        ood_code, _ = _assign(pool, task, seed, group_by_video, True, alpha, noise, prior_shift)
    iid_code, _ = _assign(pool, task, seed, group_by_video, False, alpha, noise)
    ood = _split_scores(pool, ood_code, task, seed)
    iid = _split_scores(pool, iid_code, task, seed)
    metric = "non0_acc2" if task == "binary" else "acc7"
    return {
        "metric": metric,
        "bow_acc_iid_test": round(iid["test"], 2),
        "bow_acc_ood_test": round(ood["test"], 2),
        "bow_acc_iid_valid": round(iid["valid"], 2),
        "bow_acc_ood_valid": round(ood["valid"], 2),
        "drop_points": round(iid["test"] - ood["test"], 2),
        "priors_iid": _priors(pool.labels, iid_code, num_classes(task)),
    }


def ood_split(
    data: MerDataset, task: str = "binary", seed: int = 0, group_by_video: bool = False, *,
    report: bool = False, alpha: float = SMOOTHING, noise: float | None = None, prior_shift: bool = False,
) -> tuple[MerDataset, dict[str, Any]]:
    """Pool the three splits of ``data`` and re-assign them so that test breaks the word-label
    correlations of train/valid; sizes are kept exactly. ``prior_shift``: test is not stratified by
    class, so it also carries a label-prior shift (without ``group_by_video`` only).

    Returns the new dataset and its manifest (a JSON-ready dict: seed, task, group_by_video,
    source, sizes, ids per split, biased_words, priors per split, scoring, params and, with
    ``report=True``, the measured BoW ``shift``). Raises :class:`DatasetError` when a split has
    no ``raw_text``, ids repeat, or (``group_by_video``) whole videos cannot fill the sizes.
    """
    task = check_task(task)
    noise = _noise(noise, group_by_video)
    if noise < 0 or alpha <= 0:
        raise ValueError(f"expected noise >= 0 and alpha > 0, got noise={noise}, alpha={alpha}")
    pool = _Pool(data, task)
    code, info = _assign(pool, task, seed, group_by_video, True, alpha, noise, prior_shift)
    agreement = info["agreement"]
    out = _build(pool, code)
    c_n = num_classes(task)
    manifest: dict[str, Any] = {
        "seed": int(seed),
        "task": task,
        "group_by_video": bool(group_by_video),
        "prior_shift": bool(prior_shift),
        "source": Path(data.path).name if data.path else None,
        "sizes": {name: out[name].n for name in SPLITS},
        "ids": {name: out[name].ids.tolist() for name in SPLITS},
        "biased_words": _biased_words(info["rows"], info["cols"], info["words"], pool.labels, code == 2, task, alpha),
        "priors": _priors(pool.labels, code, c_n),
        "classes": CLASS_NAMES[task],
        "mean_agreement": {
            name: round(float(agreement[code == k].mean()), 4) if (code == k).any() else None
            for k, name in enumerate(SPLITS)
        },
        "nb_correct_share": {
            name: round(float(info["nb_correct"][code == k].mean()), 4) if (code == k).any() else None
            for k, name in enumerate(SPLITS)
        },
        "scoring": SCORING,
        "params": {"alpha": alpha, "noise": noise, "stop_words": "sklearn ENGLISH_STOP_WORDS"},
        "synthetic_ids": pool.synthetic_ids,
    }
    if group_by_video:
        manifest["videos"] = {name: int(np.unique(info["units"][code == k]).size) for k, name in enumerate(SPLITS)}
    if report:
        manifest["shift"] = measure_shift(data, code, task=task, seed=seed, group_by_video=group_by_video,
                                          alpha=alpha, noise=noise, prior_shift=prior_shift)
    return out, manifest


def write_ood_split(
    in_path: str | Path, out_path: str | Path, task: str = "binary", seed: int = 0,
    group_by_video: bool = False, report: bool = False, *, alpha: float = SMOOTHING, noise: float | None = None,
    prior_shift: bool = False,
) -> dict[str, Any]:
    """Load ``in_path``, re-partition it (:func:`ood_split`), write ``out_path`` (a normal dataset
    file) and ``str(out_path) + '.manifest.json'``, both atomically; return the manifest."""
    if Path(in_path).resolve() == Path(out_path).resolve():
        raise DatasetError(f"{out_path}: the output must differ from the input file")
    data = load_dataset(in_path)
    out, manifest = ood_split(data, task=task, seed=seed, group_by_video=group_by_video, report=report,
                              alpha=alpha, noise=noise, prior_shift=prior_shift)
    manifest["source"] = Path(in_path).name
    save_dataset(out, out_path)
    atomic_write_json(manifest_path(out_path), manifest)
    return manifest


def format_summary(manifest: dict[str, Any]) -> str:
    """A few human-readable lines about a manifest (what the CLI prints)."""
    classes = manifest.get("classes") or CLASS_NAMES[manifest["task"]]
    lines = [
        f"OOD re-partition of {manifest.get('source')} (task {manifest['task']}, seed {manifest['seed']}, "
        f"group_by_video={manifest['group_by_video']}, prior_shift={manifest.get('prior_shift', False)})",
        "sizes: " + ", ".join(f"{k} {v}" for k, v in manifest["sizes"].items()),
    ]
    for name, pri in manifest["priors"].items():
        lines.append(f"priors {name:5s}: " + " / ".join(f"{c} {p:.4f}" for c, p in zip(classes, pri)))
    top = [w["word"] for w in manifest.get("biased_words", [])[:10]]
    if top:
        lines.append("most biased words: " + ", ".join(top))
    shift = manifest.get("shift")
    if shift:
        lines.append(
            f"BoW {shift['metric']} on test: IID {shift['bow_acc_iid_test']:.2f}, "
            f"OOD {shift['bow_acc_ood_test']:.2f} (drop {shift['drop_points']:.2f} points)"
        )
    return "\n".join(lines)
