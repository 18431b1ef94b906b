"""MACI statistics, counterfactual vocabulary/text and tau selection."""

import numpy as np
import pytest
import torch

from cider_mer.data.dataset import dataset_from_dict
from cider_mer.maci.counterfactual import build_bias_vocabulary, counterfactual_ids
from cider_mer.maci.statistics import compute_statistics, sample_features
from cider_mer.maci.tau import TAU_GRID, debias, select_tau

from conftest import make_dataset_dict


def biased_dataset():
    """Token 2000 appears only in positive texts, 3000 only in negative, 4000 everywhere equally."""
    d = make_dataset_dict(sizes=(40, 10, 10))
    tr = d["train"]
    n = len(tr["regression_labels"])
    y = np.where(np.arange(n) % 2 == 0, 2.0, -2.0).astype(np.float32)
    tr["regression_labels"] = y
    tb = np.zeros((n, 3, 12), dtype=np.float32)
    for i in range(n):
        word = 2000 if y[i] > 0 else 3000
        tb[i, 0, :6] = [101, word, 4000, 4000, 5000 + i, 102]
        tb[i, 1, :6] = 1
    tr["text_bert"] = tb
    return dataset_from_dict(d)


def test_vocabulary_reads_training_split_only_and_finds_bias():
    ds = biased_dataset()
    vocab = build_bias_vocabulary(ds["train"], "binary", top_k=100)
    ids = set(vocab.token_ids.tolist())
    assert {2000, 3000} <= ids
    assert 4000 not in ids  # same relative frequency in both classes: CV 0
    assert not ids & {0, 100, 101, 102, 103}
    with pytest.raises(ValueError, match="training split only"):
        build_bias_vocabulary(ds["valid"], "binary")
    # changing valid/test text cannot change the vocabulary
    ds2 = biased_dataset()
    ds2["valid"].text_bert[:, 0, 1] = 2000
    ds2["test"].text_bert[:, 0, 1] = 3000
    assert np.array_equal(build_bias_vocabulary(ds2["train"], "binary").token_ids, vocab.token_ids)


def test_vocabulary_top_k_keeps_most_frequent():
    ds = biased_dataset()
    vocab = build_bias_vocabulary(ds["train"], "binary", top_k=2)
    assert set(vocab.token_ids.tolist()) == {2000, 3000}
    assert np.all(vocab.cv >= 0.1)


def test_counterfactual_keeps_exactly_specials_and_biased_tokens():
    ids = torch.tensor([[101, 2000, 4000, 100, 3000, 102, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0]], dtype=torch.float)
    cf = counterfactual_ids(ids, mask, torch.tensor([2000, 3000]))
    assert cf.tolist() == [[101, 2000, 103, 100, 3000, 102, 0, 0]]


def test_statistics_from_training_split_only():
    ds = biased_dataset()
    tr = ds["train"]
    states = np.random.default_rng(0).normal(size=(tr.n, tr.text_bert.shape[2], 8)).astype(np.float32)
    stats = compute_statistics(tr, "binary", states)
    labels = tr.labels("binary")
    assert np.allclose(stats.priors, np.bincount(labels, minlength=3) / tr.n)
    feats = sample_features(tr, states)
    assert np.allclose(stats.class_means[2], feats[labels == 2].mean(0), atol=1e-5)
    assert np.all(stats.class_means[1] == 0)  # no neutral sample in this training split
    with pytest.raises(ValueError, match="training split only"):
        compute_statistics(ds["valid"], "binary", states[: ds["valid"].n])


def test_sample_features_mean_over_valid_steps_only():
    ds = biased_dataset()
    tr = ds["train"]
    states = np.zeros((tr.n, 12, 2), dtype=np.float32)
    states[:, :6] = 1.0
    states[:, 6:] = 99.0  # padding positions must not count
    f = sample_features(tr, states)
    assert np.allclose(f[:, :2], 1.0)
    i = 0
    a_len = tr.audio_lengths[i]
    assert np.allclose(f[i, 2:2 + tr.audio.shape[2]], tr.audio[i, :a_len].mean(0), atol=1e-5)


def test_select_tau_reads_only_given_predictions_and_prefers_small_tau():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=200)
    labels[labels == 1] = 0
    # factual predictions are biased towards class 0; the counterfactual carries the same bias
    lp = np.log(np.full((200, 3), 1 / 3))
    lp[:, 0] += 1.0
    lp[np.arange(200), labels] += 0.6
    cf = np.log(np.full((200, 3), 1 / 3))
    cf[:, 0] += 1.0
    tau, value = select_tau("binary", lp, cf, labels)
    assert tau > 0
    assert value > select_tau("binary", lp, None, labels)[1]
    # with a useless counterfactual, tau stays 0 (ties go to the smaller tau)
    tau0, _ = select_tau("binary", lp, np.zeros_like(lp), labels)
    assert tau0 == 0.0
    assert np.allclose(debias(lp, cf, 0.5), lp - 0.5 * cf)
    assert TAU_GRID[0] == 0.0 and TAU_GRID[-1] == 3.0 and len(TAU_GRID) == 31
