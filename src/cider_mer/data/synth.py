"""The embedded default dataset: a synthetic, MOSI-shaped file (SPEC §1.3).

Real MOSI/MOSEI features cannot be shipped, so the tool generates a stand-in with the same keys,
dims, lengths and split sizes as CMU-MOSI (unaligned: L_t=50, T_a=375 x 5, T_v=500 x 20;
aligned: 50 x 50 x 50), MOSI-like label priors and real BERT word-piece ids. It is built to be
learnable the way real data is:

- **text** carries most of the signal: short spoken-review sentences of real English words whose
  sentiment words (a lexicon of mild/moderate/strong words and phrases, with negations and
  contrasting remarks as noise) grow in number and strength with the score's magnitude;
- **audio and vision** carry a weaker signal: a score-dependent shift of a few dimensions on a
  random 20-40% of the valid frames, under per-speaker and per-clip offsets and frame noise, so
  that accuracy falls smoothly as frames go missing;
- a planted **language bias**: two groups of topic words with no sentiment of their own, group A
  mostly in positive clips and group B mostly in negative clips (train and valid). With
  ``ood=True`` the test split reverses that correlation and is also more negative than train
  (label-prior shift); train and valid are then byte-identical to the IID file of the same seed.

Everything is drawn from numpy Generators seeded from ``seed`` (one independent stream per split
and purpose), so a seed gives byte-identical arrays. See ``docs/synthetic_data.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cider_mer.data.dataset import MerDataset, dataset_from_dict, save_dataset

# ----------------------------------------------------------------------------------------------
# shapes, sizes and label priors (CMU-MOSI)

SPLIT_SIZES: dict[str, int] = {"train": 1284, "valid": 229, "test": 686}
MIN_SPLIT_SIZE = 12
TEXT_LEN = 50
UNALIGNED_SHAPES = {"audio": (375, 5), "vision": (500, 20)}
ALIGNED_LEN = 50

#: neg / neu / pos priors of every split of the IID file (MOSI train: 0.430 / 0.041 / 0.528).
PRIORS = (0.43, 0.04, 0.53)
#: test priors of the OOD file: more negative than train (MOSI's own test split is 0.55 / 0.04 / 0.40).
OOD_TEST_PRIORS = (0.55, 0.04, 0.41)
#: |score| of non-neutral clips: piecewise uniform over these bins (MOSI-like 7-class spread).
_MAG_BINS = np.array([[0.1, 0.5], [0.5, 1.5], [1.5, 2.5], [2.5, 3.0]])
_MAG_PROBS = np.array([0.17, 0.38, 0.40, 0.05])

# ----------------------------------------------------------------------------------------------
# the planted language bias

#: Topic words with no sentiment of their own. In train/valid (and the IID test) a clip that
#: mentions a biased topic takes it from group A with probability ``TOPIC_BIAS`` when positive and
#: ``1 - TOPIC_BIAS`` when negative; the OOD test swaps the two.
TOPIC_WORDS_A = ("soundtrack", "music", "costumes", "scenery", "camera", "colors", "city", "island")
TOPIC_WORDS_B = ("plot", "script", "budget", "sequel", "dialogue", "editing", "studio", "villain")
#: Unbiased topic words, common in every class.
TOPIC_WORDS_COMMON = ("movie", "film", "story", "characters", "actors", "scene", "director", "cast", "trailer")
TOPIC_BIAS = 0.8
TOPIC_RATE = 0.75  # probability that a clip mentions a biased topic at all

# ----------------------------------------------------------------------------------------------
# the sentiment lexicon: polarity -> strength (1 mild, 2 moderate, 3 strong) -> words or phrases

LEXICON: dict[int, dict[int, tuple[str, ...]]] = {
    +1: {
        1: ("nice", "fine", "decent", "okay", "pleasant", "fun", "cute", "solid", "interesting",
            "enjoyable", "sweet", "watchable", "charming", "likable", "not too shabby"),
        2: ("good", "great", "funny", "beautiful", "impressive", "clever", "exciting", "touching",
            "refreshing", "memorable", "smart", "powerful", "liked it", "enjoyed it", "worth watching",
            "made me laugh"),
        3: ("amazing", "awesome", "fantastic", "excellent", "brilliant", "wonderful", "perfect",
            "incredible", "hilarious", "outstanding", "superb", "phenomenal", "loved it",
            "highly recommend it", "best movie ever", "a masterpiece"),
    },
    -1: {
        1: ("boring", "slow", "weird", "bland", "predictable", "confusing", "silly", "mediocre",
            "forgettable", "dull", "cliche", "meh", "kind of a letdown", "too long"),
        2: ("bad", "disappointing", "annoying", "poor", "weak", "stupid", "messy", "lame", "cheesy",
            "pointless", "frustrating", "overrated", "did not like it", "not worth it", "fell asleep"),
        3: ("terrible", "awful", "horrible", "worst", "garbage", "pathetic", "a disaster", "painful",
            "unwatchable", "ridiculous", "atrocious", "dreadful", "hated it", "a waste of time",
            "a waste of money", "a complete mess"),
    },
}
#: Single words only (so "not X" reads naturally); used negated to express the other polarity.
_NEGATABLE: dict[int, tuple[str, ...]] = {
    +1: ("good", "great", "funny", "interesting", "exciting", "clever", "fun", "impressive"),
    -1: ("bad", "boring", "terrible", "awful", "stupid", "dull", "annoying", "slow"),
}
_PREFIXES = ("it was", "the movie was", "that was", "this is", "i thought it was", "it is", "honestly it was",
             "i found it", "overall it was", "the whole thing was")
_INTENSIFIERS = ("really", "very", "so", "pretty", "super", "extremely", "just", "totally")
_TOPIC_FRAMES = ("the {}", "the {}", "{}", "the {} was", "about the {}", "and the {}", "with the {}")
#: Filler chunks (spoken-transcript function words and hedges) with Zipf-like weights, plus the
#: unbiased topic words; they pad each clip up to its drawn length.
_FILLER = ("the", "and", "i", "it", "um", "uh", "so", "like", "you know", "i mean", "i think", "but",
           "was", "that", "a", "of", "to", "in", "this", "just", "kind of", "basically", "and then",
           "they", "she", "he", "we", "there was", "what", "about", "when", "at the end", "a lot of",
           "going to", "see", "watch", "actually", "i guess", "well", "know", "get", "because", "if",
           "one", "some", "all", "time", "part", "little", "first", "then", "saw", "went", "with")
_FILLER = _FILLER + TOPIC_WORDS_COMMON  # unbiased topic words fill like function words
_FILLER_WEIGHTS = np.concatenate([1.0 / (np.arange(len(_FILLER) - len(TOPIC_WORDS_COMMON)) + 4.0),
                                  np.full(len(TOPIC_WORDS_COMMON), 0.05)])
_FILLER_WEIGHTS = _FILLER_WEIGHTS / _FILLER_WEIGHTS.sum()

# word-piece budget of a clip's content (without [CLS]/[SEP]): lognormal, MOSI-like lengths
_LEN_LOG_MEDIAN = np.log(8.5)
_LEN_LOG_SD = 0.85
# audio / vision frames per text token (unaligned) and the non-verbal signal
_FRAMES_PER_TOKEN = {"audio": 8.0, "vision": 11.0}
_SIGNAL_DIMS = {"audio": ((0, 1.0), (2, -0.8)), "vision": ((1, 0.9), (4, -0.7), (7, 0.8), (11, -0.6))}
_SIGNAL_GAIN = 0.55  # shift per signal frame at |score| = 1.5, in units of the frame noise
_SIGNAL_FRAC = (0.2, 0.4)  # fraction of valid frames carrying the shift, uniform per clip
_SPEAKER_SD, _CLIP_SD = 0.5, 0.5  # per-video (speaker) and per-clip offsets; frame noise has sd 1

_STREAMS = {"labels": 0, "text": 1, "audio": 2, "vision": 3, "videos": 4}


# ----------------------------------------------------------------------------------------------
# tokenised vocabulary


class _Pieces:
    """Every word the generator can emit, tokenised once (no per-sample tokenizer calls).

    BERT tokenisation splits on whitespace before word-pieces, so the ids of a chunk of words are
    the concatenated ids of its words: tokenising ``raw_text`` gives the same ids.
    """

    def __init__(self, tokenizer: Any):
        chunks: set[str] = set(_FILLER) | set(_PREFIXES) | set(_INTENSIFIERS) | set(_TOPIC_FRAMES) | {"not", "but"}
        chunks.update(TOPIC_WORDS_A + TOPIC_WORDS_B + TOPIC_WORDS_COMMON)
        for by_level in LEXICON.values():
            for words in by_level.values():
                chunks.update(words)
        for words in _NEGATABLE.values():
            chunks.update(words)
        vocab = sorted({w for c in chunks for w in c.split() if w != "{}"})
        ids = tokenizer(vocab, add_special_tokens=False)["input_ids"]
        self.word_ids: dict[str, tuple[int, ...]] = {w: tuple(int(i) for i in x) for w, x in zip(vocab, ids)}
        self._chunks: dict[str, tuple[int, ...]] = {}
        from cider_mer.text.encoder import CLS_ID, PAD_ID, SEP_ID  # lazy: keeps torch out of this import

        self.cls = int(getattr(tokenizer, "cls_token_id", None) or CLS_ID)
        self.sep = int(getattr(tokenizer, "sep_token_id", None) or SEP_ID)
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad = int(PAD_ID if pad is None else pad)

    def ids(self, chunk: str) -> tuple[int, ...]:
        out = self._chunks.get(chunk)
        if out is None:
            out = self._chunks[chunk] = tuple(i for w in chunk.split() for i in self.word_ids[w])
        return out


_DEFAULT_PIECES: _Pieces | None = None


def _pieces(tokenizer: Any) -> _Pieces:
    global _DEFAULT_PIECES
    if tokenizer is not None:
        return _Pieces(tokenizer)
    if _DEFAULT_PIECES is None:
        from cider_mer.text.encoder import load_tokenizer

        _DEFAULT_PIECES = _Pieces(load_tokenizer())
    return _DEFAULT_PIECES


# ----------------------------------------------------------------------------------------------
# helpers


def _rng(seed: int, split: int, stream: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, split, _STREAMS[stream]]))


def split_sizes(scale: float = 1.0) -> dict[str, int]:
    """Samples per split at ``scale``: round(MOSI size * scale), at least 12."""
    return {k: max(MIN_SPLIT_SIZE, int(round(v * scale))) for k, v in SPLIT_SIZES.items()}


def _class_counts(n: int, priors: Sequence[float]) -> np.ndarray:
    """Exact class counts for n samples (largest remainder), every class at least once."""
    p = np.asarray(priors, dtype=np.float64)
    raw = p / p.sum() * n
    counts = np.floor(raw).astype(np.int64)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    while counts.min() < 1:  # tiny splits: take one from the largest class
        counts[np.argmax(counts)] -= 1
        counts[np.argmin(counts)] += 1
    return counts


def _labels(rng: np.random.Generator, n: int, priors: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    cls = np.repeat(np.arange(3, dtype=np.int64), _class_counts(n, priors))
    cls = cls[rng.permutation(n)]
    bins = rng.choice(len(_MAG_PROBS), size=n, p=_MAG_PROBS)
    mag = rng.uniform(_MAG_BINS[bins, 0], _MAG_BINS[bins, 1])
    y = np.where(cls == 0, -mag, np.where(cls == 2, mag, 0.0)).astype(np.float32)
    return y, cls


def _videos(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Video index (0-based within the split) and clip number (1-based) of each sample."""
    sizes: list[int] = []
    while sum(sizes) < n:
        sizes.append(int(rng.integers(8, 41)))
    sizes[-1] -= sum(sizes) - n
    video = np.repeat(np.arange(len(sizes)), sizes)
    clip = np.concatenate([np.arange(1, s + 1) for s in sizes])
    return video, clip


def _sentiment_chunks(rng: np.random.Generator, polarity: int, mag: float) -> list[str]:
    """Sentiment expressions of a non-neutral clip: more and stronger for larger |score|."""
    out: list[str] = []
    for _ in range(int(rng.poisson(0.5 + 0.9 * mag))):
        level = int(np.clip(np.rint(mag + rng.normal(0.0, 0.7)), 1, 3))
        if rng.random() < 0.12:  # negated opposite: "not boring" (positive), "not great" (negative)
            out.append("not " + str(rng.choice(_NEGATABLE[-polarity])))
            continue
        words = LEXICON[polarity][level]
        chunk = str(words[rng.integers(len(words))])
        if " " not in chunk and rng.random() < 0.15 + 0.15 * level:
            chunk = f"{_INTENSIFIERS[rng.integers(len(_INTENSIFIERS))]} {chunk}"
        if rng.random() < 0.35:
            chunk = f"{_PREFIXES[rng.integers(len(_PREFIXES))]} {chunk}"
        out.append(chunk)
    if rng.random() < 0.15:  # a contrasting remark of the other polarity: "but it was slow"
        words = LEXICON[-polarity][1 + int(rng.random() < 0.3)]
        out.append("but " + str(words[rng.integers(len(words))]))
    return out


def _topic_chunks(rng: np.random.Generator, group: int) -> list[str]:
    out: list[str] = []
    if group >= 0:
        words = TOPIC_WORDS_A if group == 0 else TOPIC_WORDS_B
        for _ in range(1 + int(rng.random() < 0.4)):
            frame = _TOPIC_FRAMES[rng.integers(len(_TOPIC_FRAMES))]
            out.append(frame.format(words[rng.integers(len(words))]))
    return out


def _text(
    rng: np.random.Generator, pieces: _Pieces, y: np.ndarray, cls: np.ndarray, topic_bias: float, length: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 3, L) float32 text_bert, (N,) object raw text and (N,) untruncated word-piece counts."""
    n = len(y)
    budgets = np.maximum(1, np.rint(rng.lognormal(_LEN_LOG_MEDIAN, _LEN_LOG_SD, size=n))).astype(np.int64)
    has_topic = rng.random(n) < TOPIC_RATE
    p_a = np.where(cls == 2, topic_bias, np.where(cls == 0, 1.0 - topic_bias, 0.5))
    group = np.where(has_topic, np.where(rng.random(n) < p_a, 0, 1), -1)
    filler = rng.choice(len(_FILLER), size=(n, 4 * length), p=_FILLER_WEIGHTS)

    text_bert = np.zeros((n, 3, length), dtype=np.float32)
    raw = np.empty(n, dtype=object)
    full_len = np.zeros(n, dtype=np.int64)
    for i in range(n):
        if cls[i] == 1:  # neutral: occasionally a mild word of either polarity
            chunks = [] if rng.random() >= 0.15 else [str(rng.choice(LEXICON[1 if rng.random() < 0.5 else -1][1]))]
        else:
            chunks = _sentiment_chunks(rng, 1 if cls[i] == 2 else -1, float(abs(y[i])))
        chunks += _topic_chunks(rng, int(group[i]))
        count = sum(len(pieces.ids(c)) for c in chunks)
        k = 0
        while count < budgets[i] and k < filler.shape[1]:
            chunk = _FILLER[filler[i, k]]
            chunks.append(chunk)
            count += len(pieces.ids(chunk))
            k += 1
        chunks = [chunks[j] for j in rng.permutation(len(chunks))]
        ids = [pid for c in chunks for pid in pieces.ids(c)]
        full_len[i] = len(ids)
        ids = [pieces.cls, *ids[: length - 2], pieces.sep]
        text_bert[i, 0, : len(ids)] = ids
        text_bert[i, 1, : len(ids)] = 1.0
        if pieces.pad != 0:
            text_bert[i, 0, len(ids):] = pieces.pad
        raw[i] = " ".join(chunks)
    return text_bert, raw, full_len


def _frames(
    rng: np.random.Generator, kind: str, y: np.ndarray, video: np.ndarray, lengths: np.ndarray, steps: int, dim: int
) -> np.ndarray:
    """(N, T, d) float32 features: speaker + clip offsets + noise, a score shift on some frames."""
    n = len(y)
    speakers = rng.normal(0.0, _SPEAKER_SD, size=(int(video.max()) + 1, dim)).astype(np.float32)
    x = rng.standard_normal((n, steps, dim), dtype=np.float32)
    x += (speakers[video] + rng.normal(0.0, _CLIP_SD, size=(n, dim)).astype(np.float32))[:, None, :]
    frac = rng.uniform(*_SIGNAL_FRAC, size=n)
    carries = rng.random((n, steps)) < frac[:, None]
    shift = (y.astype(np.float32) * np.float32(_SIGNAL_GAIN / 1.5))[:, None] * carries
    for d, weight in _SIGNAL_DIMS[kind]:
        if d < dim:
            x[:, :, d] += np.float32(weight) * shift
    x[np.arange(steps)[None, :] >= lengths[:, None]] = 0.0
    return x


def _split(
    seed: int, index: int, n: int, priors: Sequence[float], topic_bias: float, aligned: bool,
    pieces: _Pieces, video_offset: int,
) -> tuple[dict[str, np.ndarray], int]:
    y, cls = _labels(_rng(seed, index, "labels"), n, priors)
    text_bert, raw, full_len = _text(_rng(seed, index, "text"), pieces, y, cls, topic_bias, TEXT_LEN)
    video, clip = _videos(_rng(seed, index, "videos"), n)
    text_len = text_bert[:, 1].sum(axis=1).astype(np.int64)
    out: dict[str, np.ndarray] = {"text_bert": text_bert}
    for kind in ("audio", "vision"):
        rng = _rng(seed, index, kind)
        if aligned:
            steps, dim = ALIGNED_LEN, UNALIGNED_SHAPES[kind][1]
            lengths = text_len
        else:
            steps, dim = UNALIGNED_SHAPES[kind]
            rate = _FRAMES_PER_TOKEN[kind] * rng.lognormal(0.0, 0.25, size=n)
            lengths = np.clip(np.rint((full_len + 2) * rate), 1, steps).astype(np.int64)
        out[kind] = _frames(rng, kind, y, video, lengths, steps, dim)
        if not aligned:
            out[f"{kind}_lengths"] = lengths
    out["regression_labels"] = y
    out["classification_labels"] = cls
    out["raw_text"] = raw
    out["id"] = np.array([f"synth{seed}_v{video_offset + v:05d}$_${c}" for v, c in zip(video, clip)], dtype=object)
    return out, int(video.max()) + 1


# ----------------------------------------------------------------------------------------------
# public API


def generate_synthetic(
    seed: int = 0, scale: float = 1.0, aligned: bool = False, ood: bool = False, tokenizer: Any = None
) -> dict[str, dict[str, np.ndarray]]:
    """Generate the synthetic MOSI-shaped dataset as the dict of SPEC §1.1.

    Args:
        seed: non-negative integer; the same seed gives byte-identical arrays.
        scale: multiplies the MOSI split sizes 1284/229/686 (rounded, at least 12 per split).
        aligned: 50-step aligned file (L_t = T_a = T_v = 50, no length keys) instead of MOSI
            unaligned shapes (L_t=50, audio 375x5, vision 500x20, with length keys).
        ood: the test split reverses the topic-label correlation of train/valid and is more
            negative (priors ``OOD_TEST_PRIORS``); train and valid equal those of ``ood=False``.
        tokenizer: a Hugging Face BERT-family tokenizer; default: the one of the default text
            encoder (all-MiniLM-L6-v2, bert-base-uncased vocabulary), loaded offline once.

    Returns:
        ``{"train": S, "valid": S, "test": S}``; each ``S`` holds ``text_bert`` (N, 3, 50) float32,
        ``audio``/``vision`` float32, ``audio_lengths``/``vision_lengths`` int64 (unaligned only),
        ``regression_labels`` float32 in [-3, 3], ``classification_labels`` int64 in {0, 1, 2},
        ``raw_text`` and ``id`` (object arrays of str).
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    seed = int(seed)
    pieces = _pieces(tokenizer)
    sizes = split_sizes(scale)
    data: dict[str, dict[str, np.ndarray]] = {}
    video_offset = 0
    for index, name in enumerate(("train", "valid", "test")):
        shifted = ood and name == "test"
        priors = OOD_TEST_PRIORS if shifted else PRIORS
        bias = 1.0 - TOPIC_BIAS if shifted else TOPIC_BIAS
        data[name], n_videos = _split(seed, index, sizes[name], priors, bias, aligned, pieces, video_offset)
        video_offset += n_videos
    return data


def write_synthetic(path: str | Path, **kwargs: Any) -> MerDataset:
    """Generate (same keyword arguments as :func:`generate_synthetic`), validate, write atomically."""
    data = generate_synthetic(**kwargs)
    dataset = dataset_from_dict(data, source=str(path))
    save_dataset(data, path)
    return dataset
