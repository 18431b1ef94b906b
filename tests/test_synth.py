"""The embedded synthetic MOSI-shaped dataset (SPEC §1.3): format, determinism, priors, the planted
language bias and its OOD reversal, and learnability (text strong, audio/vision weak)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from cider_mer.data import synth
from cider_mer.data.dataset import dataset_from_dict, load_dataset
from cider_mer.data.labels import seven_classes
from cider_mer.text.encoder import CLS_ID, MASK_ID, SEP_ID, UNK_ID, load_tokenizer

SPLITS = ("train", "valid", "test")
VOCAB = 30522


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def iid(tokenizer):
    synth.generate_synthetic(seed=0, scale=0.01, tokenizer=None)  # warm the tokenised vocabulary
    start = time.perf_counter()
    data = synth.generate_synthetic(seed=0)
    print(f"\ngenerate_synthetic(seed=0, scale=1): {time.perf_counter() - start:.2f} s")
    return data


@pytest.fixture(scope="module")
def ood():
    return synth.generate_synthetic(seed=0, ood=True)


# ----------------------------------------------------------------------------------------------
# helpers


def _ids(split):
    return split["text_bert"][:, 0].astype(np.int64), split["text_bert"][:, 1] > 0


def _word_ids(tokenizer, words):
    ids = [tokenizer.convert_tokens_to_ids(w) for w in words]
    assert UNK_ID not in ids  # every topic word is a single word-piece
    return np.array(ids)


def _topic_a_share(split, ids_a, ids_b, cls):
    """Among biased-topic word-pieces in samples of class ``cls``: the fraction from group A."""
    ids, mask = _ids(split)
    rows = split["classification_labels"] == cls
    tokens = ids[rows][mask[rows]]
    a, b = np.isin(tokens, ids_a).sum(), np.isin(tokens, ids_b).sum()
    return a / max(a + b, 1)


def _bow(split, vocab):
    """Binary bag of word-pieces over ``vocab`` (sorted ids seen in train; others dropped)."""
    from scipy import sparse

    ids, mask = _ids(split)
    rows, cols = np.nonzero(mask & (ids > MASK_ID))
    tokens = ids[rows, cols]
    col = np.searchsorted(vocab, tokens)
    known = (col < len(vocab)) & (vocab[np.minimum(col, len(vocab) - 1)] == tokens)
    x = sparse.csr_matrix((np.ones(known.sum()), (rows[known], col[known])), shape=(len(ids), len(vocab)))
    return x.minimum(1)


def _non0_acc2(pred, y):
    keep = y != 1
    return float((pred[keep] == y[keep]).mean())


def _majority_non0(y):
    keep = y != 1
    return float(max((y[keep] == 0).mean(), (y[keep] == 2).mean()))


def _mean_frames(split):
    feats = []
    for key in ("audio", "vision"):
        x = split[key]
        lengths = split.get(f"{key}_lengths", split["text_bert"][:, 1].sum(axis=1))
        feats.append(x.sum(axis=1) / np.maximum(lengths, 1)[:, None])
    return np.concatenate(feats, axis=1)


@pytest.fixture(scope="module")
def bow_model(iid):
    """(vocab, classifier): logistic regression on the train split's bag of word-pieces."""
    ids, mask = _ids(iid["train"])
    vocab = np.unique(ids[mask & (ids > MASK_ID)])
    return vocab, _fit(_bow(iid["train"], vocab), iid["train"]["classification_labels"])


def _fit(x, y):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, max_iter=3000).fit(x, y)


# ----------------------------------------------------------------------------------------------
# format


def _check_format(data, sizes, aligned):
    for name in SPLITS:
        s = data[name]
        n = sizes[name]
        keys = {"text_bert", "audio", "vision", "regression_labels", "classification_labels", "raw_text", "id"}
        if not aligned:
            keys |= {"audio_lengths", "vision_lengths"}
        assert set(s) == keys
        t_a, t_v = (50, 50) if aligned else (375, 500)
        assert s["text_bert"].shape == (n, 3, 50) and s["text_bert"].dtype == np.float32
        assert s["audio"].shape == (n, t_a, 5) and s["audio"].dtype == np.float32
        assert s["vision"].shape == (n, t_v, 20) and s["vision"].dtype == np.float32
        assert s["regression_labels"].shape == (n,) and s["regression_labels"].dtype == np.float32
        assert s["classification_labels"].shape == (n,) and s["classification_labels"].dtype == np.int64
        for key in ("raw_text", "id"):
            assert s[key].shape == (n,) and s[key].dtype == object
            assert all(isinstance(v, str) and v for v in s[key])
        ids, mask = _ids(s)
        lengths = mask.sum(axis=1)
        assert (ids[np.arange(n), 0] == CLS_ID).all() and (ids[np.arange(n), lengths - 1] == SEP_ID).all()
        assert (ids[~mask] == 0).all() and (s["text_bert"][:, 2] == 0).all()
        assert np.all(np.abs(s["regression_labels"]) <= 3.0)
        assert np.array_equal(s["classification_labels"], np.sign(s["regression_labels"]).astype(np.int64) + 1)
        assert set(np.unique(s["classification_labels"])) == {0, 1, 2}
        for key in ("audio", "vision"):
            frames = s[f"{key}_lengths"] if not aligned else lengths
            if not aligned:
                assert s[f"{key}_lengths"].dtype == np.int64
                assert frames.min() >= 1 and frames.max() <= s[key].shape[1]
            past = np.arange(s[key].shape[1])[None, :] >= frames[:, None]
            assert not s[key][past].any()  # frames past the length are zero
            assert np.all(np.abs(s[key][~past]).sum(axis=-1) > 0)
    ds = dataset_from_dict(data)
    assert ds.aligned == aligned
    return ds


def test_shapes_keys_dtypes_scale_1(iid):
    sizes = synth.split_sizes(1.0)
    assert sizes == {"train": 1284, "valid": 229, "test": 686}
    ds = _check_format(iid, sizes, aligned=False)
    assert ds.shapes() == {"aligned": False, "text_len": 50, "audio_len": 375, "vision_len": 500,
                           "audio_dim": 5, "vision_dim": 20}


@pytest.mark.parametrize("scale", [0.001, 0.05, 0.37])
def test_sizes_follow_scale(scale):
    sizes = {k: max(12, round(v * scale)) for k, v in {"train": 1284, "valid": 229, "test": 686}.items()}
    assert synth.split_sizes(scale) == sizes
    _check_format(synth.generate_synthetic(seed=3, scale=scale), sizes, aligned=False)


def test_aligned_variant():
    data = synth.generate_synthetic(seed=1, scale=0.05, aligned=True)
    ds = _check_format(data, synth.split_sizes(0.05), aligned=True)
    assert ds.text_len == ds.audio_len == ds.vision_len == 50
    unaligned = synth.generate_synthetic(seed=1, scale=0.05)
    for name in SPLITS:  # same clips and text; only the frames differ
        for key in ("text_bert", "regression_labels", "raw_text", "id"):
            assert np.array_equal(data[name][key], unaligned[name][key])


def test_write_and_load_roundtrip(tmp_path):
    path = tmp_path / "sub" / "synth.pkl"
    ds = synth.write_synthetic(path, seed=2, scale=0.02, ood=True)
    assert path.is_file() and not list(path.parent.glob(".*.tmp"))
    loaded = load_dataset(path)
    assert loaded.shapes() == ds.shapes()
    direct = synth.generate_synthetic(seed=2, scale=0.02, ood=True)
    for name in SPLITS:
        assert np.array_equal(loaded[name].audio, direct[name]["audio"])
        assert np.array_equal(loaded[name].text_bert, direct[name]["text_bert"].astype(np.int64))
        assert list(loaded[name].raw_text) == list(direct[name]["raw_text"])


def test_bad_arguments():
    for kwargs in ({"seed": -1}, {"seed": 1.5}, {"scale": 0}, {"scale": -2.0}, {"scale": float("nan")}):
        with pytest.raises(ValueError):
            synth.generate_synthetic(**kwargs)


# ----------------------------------------------------------------------------------------------
# determinism and ids


def test_deterministic_from_seed():
    a = synth.generate_synthetic(seed=5, scale=0.05)
    b = synth.generate_synthetic(seed=5, scale=0.05)
    c = synth.generate_synthetic(seed=6, scale=0.05)
    for name in SPLITS:
        for key, value in a[name].items():
            if value.dtype == object:
                assert list(value) == list(b[name][key])
            else:
                assert value.tobytes() == b[name][key].tobytes(), (name, key)
        for key in ("text_bert", "audio", "vision", "regression_labels"):
            assert not np.array_equal(a[name][key], c[name][key])


def test_ood_keeps_train_and_valid(iid, ood):
    for name in ("train", "valid"):
        for key, value in iid[name].items():
            assert np.array_equal(value, ood[name][key]), (name, key)
    assert not np.array_equal(iid["test"]["text_bert"], ood["test"]["text_bert"])


def test_ids_videos_not_shared_across_splits(iid):
    videos = {}
    for name in SPLITS:
        ids = list(iid[name]["id"])
        assert len(set(ids)) == len(ids)
        assert all(i.startswith("synth0_") and i.count("$_$") == 1 for i in ids)
        videos[name] = {i.split("$_$")[0] for i in ids}
        assert len(videos[name]) < len(ids) / 5  # several clips per video
    assert not (videos["train"] & videos["valid"]) and not (videos["train"] & videos["test"])
    assert not (videos["valid"] & videos["test"])


# ----------------------------------------------------------------------------------------------
# labels and lengths


def test_priors_mosi_like(iid, ood):
    for name in SPLITS:
        priors = np.bincount(iid[name]["classification_labels"], minlength=3) / len(iid[name]["id"])
        assert np.allclose(priors, synth.PRIORS, atol=0.01), (name, priors)
        assert np.allclose(priors, [0.43, 0.04, 0.53], atol=0.02)
    test = np.bincount(ood["test"]["classification_labels"], minlength=3) / len(ood["test"]["id"])
    assert np.allclose(test, synth.OOD_TEST_PRIORS, atol=0.01)
    assert test[0] > 0.5 > test[2]  # the OOD test is more negative than train


def test_neutral_and_seven_class_spread(iid):
    y = iid["train"]["regression_labels"]
    neutral = iid["train"]["classification_labels"] == 1
    assert neutral.sum() > 20 and np.all(y[neutral] == 0.0) and np.all(y[~neutral] != 0.0)
    assert 0.03 <= (y == 0).mean() <= 0.05
    seven = np.bincount(seven_classes(y), minlength=7) / len(y)
    assert np.all(seven > 0.01)  # every class occurs, extremes included
    assert seven[3] < 0.3 and seven[[1, 2, 4, 5]].min() > 0.1  # spread out, not all in the middle


def test_text_lengths_mosi_like_and_tokenisation(iid, tokenizer):
    lengths = np.concatenate([iid[n]["text_bert"][:, 1].sum(axis=1) for n in SPLITS])
    assert 14.0 <= lengths.mean() <= 17.5 and 11 <= np.median(lengths) <= 15
    assert 23 <= np.percentile(lengths, 90) <= 31 and lengths.min() >= 3 and lengths.max() == 50
    split = iid["valid"]
    ids, mask = _ids(split)
    for i in range(0, len(ids), 7):  # the ids are the tokenisation of the raw text
        expected = tokenizer(split["raw_text"][i], truncation=True, max_length=50)["input_ids"]
        assert ids[i][mask[i]].tolist() == expected
        assert split["raw_text"][i] == split["raw_text"][i].lower()


def test_frame_lengths_follow_text(iid):
    s = iid["train"]
    text = s["text_bert"][:, 1].sum(axis=1)
    for key in ("audio", "vision"):
        lengths = s[f"{key}_lengths"]
        assert len(np.unique(lengths)) > 50
        assert np.corrcoef(text, lengths)[0, 1] > 0.5


# ----------------------------------------------------------------------------------------------
# the planted language bias


def test_topic_bias_planted_and_reversed_under_ood(iid, ood, tokenizer):
    ids_a = _word_ids(tokenizer, synth.TOPIC_WORDS_A)
    ids_b = _word_ids(tokenizer, synth.TOPIC_WORDS_B)

    def gap(split):
        return _topic_a_share(split, ids_a, ids_b, 2) - _topic_a_share(split, ids_a, ids_b, 0)

    assert gap(iid["train"]) > 0.4 and gap(iid["valid"]) > 0.4
    assert gap(iid["test"]) > 0.4  # IID test follows train
    assert gap(ood["test"]) < -0.4  # OOD test reverses it


def test_frequency_bias_detector_finds_topic_words(iid, tokenizer):
    """SPEC §5's detector (per-class relative frequencies, CV >= 0.1, top 100 by count)."""
    s = iid["train"]
    ids, mask = _ids(s)
    counts = np.stack([np.bincount(ids[(s["classification_labels"] == c)[:, None] & mask], minlength=VOCAB)
                       for c in range(3)]).astype(np.float64)
    counts[:, :MASK_ID + 1] = 0
    rel = counts / counts.sum(axis=1, keepdims=True)
    mean = rel.mean(axis=0)
    cv = np.divide(rel.std(axis=0), mean, out=np.zeros_like(mean), where=mean > 0)
    total = counts.sum(axis=0)
    biased = np.nonzero(cv >= 0.1)[0]
    top = set(biased[np.argsort(-total[biased], kind="stable")][:100].tolist())
    topic = set(_word_ids(tokenizer, synth.TOPIC_WORDS_A + synth.TOPIC_WORDS_B).tolist())
    assert topic <= top
    # sentiment words are spread over a larger lexicon: each is rarer than every topic word
    single = [w for by_level in synth.LEXICON.values() for ws in by_level.values() for w in ws if " " not in w]
    sentiment_ids = [i for i in (tokenizer.convert_tokens_to_ids(w) for w in single) if i != UNK_ID]
    assert total[sentiment_ids].max() < total[sorted(topic)].min()


# ----------------------------------------------------------------------------------------------
# learnability


def test_bag_of_words_learns_and_breaks_under_ood(iid, ood, bow_model):
    vocab, clf = bow_model
    y_iid, y_ood = iid["test"]["classification_labels"], ood["test"]["classification_labels"]
    acc_iid = _non0_acc2(clf.predict(_bow(iid["test"], vocab)), y_iid)
    acc_ood = _non0_acc2(clf.predict(_bow(ood["test"], vocab)), y_ood)
    print(f"\nBoW Non0 Acc2: IID {acc_iid:.4f} (majority {_majority_non0(y_iid):.4f}), "
          f"OOD {acc_ood:.4f} (majority {_majority_non0(y_ood):.4f})")
    assert 0.78 <= acc_iid <= 0.95 and acc_iid > _majority_non0(y_iid) + 0.2
    assert acc_ood < acc_iid - 0.1


def test_text_accuracy_falls_smoothly_with_missing_tokens(iid, bow_model):
    vocab, clf = bow_model
    test = iid["test"]
    rng = np.random.default_rng(0)
    u = rng.random(test["text_bert"][:, 0].shape)
    accs = []
    for rate in (0.0, 0.3, 0.6, 0.9):
        dropped = dict(test)
        tb = test["text_bert"].copy()
        ids = tb[:, 0]
        drop = (u < rate) & (tb[:, 1] > 0) & (ids != CLS_ID) & (ids != SEP_ID)  # nested across rates
        ids[drop] = UNK_ID
        dropped["text_bert"] = tb
        accs.append(_non0_acc2(clf.predict(_bow(dropped, vocab)), test["classification_labels"]))
    print("\nBoW Non0 Acc2 at token missing rates 0/0.3/0.6/0.9:", np.round(accs, 4).tolist())
    assert accs[0] > accs[1] > accs[2] > accs[3]


def test_audio_vision_weaker_than_text(iid, bow_model):
    vocab, clf = bow_model
    y_train, y_test = iid["train"]["classification_labels"], iid["test"]["classification_labels"]
    av = _non0_acc2(_fit(_mean_frames(iid["train"]), y_train).predict(_mean_frames(iid["test"])), y_test)
    text = _non0_acc2(clf.predict(_bow(iid["test"], vocab)), y_test)
    print(f"\nmean audio+vision Non0 Acc2 {av:.4f} vs BoW text {text:.4f} (majority {_majority_non0(y_test):.4f})")
    assert _majority_non0(y_test) + 0.03 < av < text - 0.1
