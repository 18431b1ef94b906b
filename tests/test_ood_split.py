"""OOD re-partition (SPEC §7): exact sizes, determinism, disjoint ids, grouping, files, real shift."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from cider_mer.data.dataset import SPLITS, DatasetError, dataset_from_dict, load_dataset
from cider_mer.data.ood_split import (
    format_summary,
    manifest_path,
    ood_split,
    tokenize,
    video_of,
    write_ood_split,
)

from conftest import MOSI_CSV  # ../shared/data/mosi/label.csv beside the checkout (or $CIDER_SHARED_DIR)

MANIFEST_KEYS = {"seed", "task", "group_by_video", "source", "sizes", "ids", "biased_words", "priors", "scoring"}


def _split_dict(texts, scores, ids, length: int = 6) -> dict:
    """A valid split without any text encoder: dummy BERT ids, (N, 1, 1) audio/vision, lengths 0."""
    n = len(texts)
    tb = np.zeros((n, 3, length), dtype=np.int64)
    tb[:, 0, :4] = [101, 2023, 2003, 102]  # [CLS] a few ids [SEP]
    tb[:, 1, :4] = 1
    return {
        "text_bert": tb,
        "audio": np.zeros((n, 1, 1), dtype=np.float32),
        "vision": np.zeros((n, 1, 1), dtype=np.float32),
        "audio_lengths": np.zeros(n, dtype=np.int64),
        "vision_lengths": np.zeros(n, dtype=np.int64),
        "regression_labels": np.asarray(scores, dtype=np.float32),
        "raw_text": np.asarray(texts, dtype=object),
        "id": np.asarray(ids, dtype=object),
    }


def _toy_dict(sizes=(60, 20, 40), seed: int = 0, sep: str = "_") -> dict:
    """Videos of 1-6 clips; sentiment words agree with the label 75% of the time."""
    rng = np.random.default_rng(seed)
    pos, neg, topic = ["good", "great", "loved"], ["bad", "awful", "boring"], ["movie", "actor", "plot", "scene"]
    total = sum(sizes)
    texts, scores, ids = [], [], []
    video, left = 0, 0
    for i in range(total):
        if left == 0:
            video, left = video + 1, int(rng.integers(1, 7))
        left -= 1
        y = float(np.round(rng.uniform(-3, 3), 1))
        agree = rng.random() < 0.75
        lexicon = (pos if y > 0 else neg) if agree else (neg if y > 0 else pos)
        words = [str(rng.choice(lexicon)), str(rng.choice(topic)), "the", "was", "really!"]
        texts.append(" ".join(rng.permutation(words)))
        scores.append(y)
        ids.append(f"vid{video}{sep}{i}")
    out, start = {}, 0
    for name, n in zip(SPLITS, sizes):
        sl = slice(start, start + n)
        out[name] = _split_dict(texts[sl], scores[sl], ids[sl])
        start += n
    return out


def _mosi_dict() -> dict:
    import pandas as pd

    df = pd.read_csv(MOSI_CSV)
    out = {}
    for mode, name in (("train", "train"), ("dev", "valid"), ("test", "test")):
        part = df[df["mode"] == mode]
        out[name] = _split_dict(part["text"].astype(str).tolist(), part["label"].to_numpy(), part["id"].astype(str).tolist())
    return out


def _ids(ds) -> dict[str, list[str]]:
    return {name: ds[name].ids.tolist() for name in SPLITS}


@pytest.fixture(scope="module")
def toy():
    return dataset_from_dict(_toy_dict(), source="toy.pkl")


# ----------------------------------------------------------------------------------------------


def test_tokenize_and_video_ids():
    assert tokenize("It was GREAT, wasn't it?! The actor...") == ["great", "wasnt", "actor"]
    assert video_of("03bSnISJMiM_12") == "03bSnISJMiM"
    assert video_of("-3g5yACwYnA$_$10") == "-3g5yACwYnA"
    assert video_of("a_b$_$3") == "a_b"
    assert video_of("noclip") == "noclip"


@pytest.mark.parametrize("group", [False, True])
def test_sizes_preserved_and_ids_partitioned(toy, group):
    out, manifest = ood_split(toy, task="binary", seed=3, group_by_video=group)
    assert {n: out[n].n for n in SPLITS} == {n: toy[n].n for n in SPLITS} == manifest["sizes"]
    ids = _ids(out)
    assert manifest["ids"] == ids
    flat = [i for name in SPLITS for i in ids[name]]
    assert len(flat) == len(set(flat))  # no id in two splits
    assert set(flat) == {i for name in SPLITS for i in toy[name].ids.tolist()}
    # every row moved whole: text and label still belong to the same id
    truth = {i: (t, y) for n in SPLITS for i, t, y in zip(toy[n].ids, toy[n].raw_text, toy[n].regression_labels)}
    for name in SPLITS:
        s = out[name]
        assert s.text_bert.shape[1:] == toy["train"].text_bert.shape[1:]
        for i, t, y in zip(s.ids, s.raw_text, s.regression_labels):
            assert truth[i] == (t, y)
    if group:
        where = {}
        for name in SPLITS:
            for i in ids[name]:
                assert where.setdefault(video_of(i), name) == name  # a video never straddles splits
        assert sum(manifest["videos"].values()) == len(where)


@pytest.mark.parametrize("group", [False, True])
def test_deterministic_for_a_seed_and_seeds_differ(toy, group):
    a = _ids(ood_split(toy, seed=7, group_by_video=group)[0])
    b = _ids(ood_split(toy, seed=7, group_by_video=group)[0])
    c = _ids(ood_split(toy, seed=8, group_by_video=group)[0])
    assert a == b
    assert a != c


def test_seven_task_and_dollar_ids():
    data = dataset_from_dict(_toy_dict(sep="$_$"), source="toy7.pkl")
    out, manifest = ood_split(data, task="seven", seed=0, group_by_video=True)
    assert manifest["sizes"] == {"train": 60, "valid": 20, "test": 40}
    assert all(len(p) == 7 for p in manifest["priors"].values())
    assert len(manifest["biased_words"][0]["counts_per_class"]) == 7


def test_test_split_breaks_the_planted_bias(toy):
    _, m = ood_split(toy, seed=0)
    assert m["mean_agreement"]["test"] < m["mean_agreement"]["train"]
    assert {w["word"] for w in m["biased_words"][:6]} >= {"good", "bad"}
    assert "the" not in {w["word"] for w in m["biased_words"]}  # stop words are removed


def test_grouping_that_cannot_be_exact_fails_clearly():
    d = _toy_dict(sizes=(20, 15, 15))
    ids = [f"v{i // 10}_{i}" for i in range(50)]  # five videos of 10 clips: 15 is unreachable
    start = 0
    for name, size in zip(SPLITS, (20, 15, 15)):
        d[name]["id"] = np.asarray(ids[start:start + size], dtype=object)
        start += size
    data = dataset_from_dict(d, source="tens.pkl")
    with pytest.raises(DatasetError, match="exactly 15 clips"):
        ood_split(data, group_by_video=True)
    ood_split(data, group_by_video=False)  # without grouping the same file is fine


def test_missing_raw_text_fails_naming_the_key(tmp_path):
    d = _toy_dict()
    del d["valid"]["raw_text"]
    src = tmp_path / "noraw.pkl"
    src.write_bytes(pickle.dumps(d, protocol=4))
    out = tmp_path / "ood.pkl"
    with pytest.raises(DatasetError) as err:
        write_ood_split(src, out, task="binary", seed=0, group_by_video=False, report=False)
    msg = str(err.value)
    assert "raw_text" in msg and "noraw.pkl" in msg and "valid" in msg and "every split" in msg
    assert not out.exists() and not manifest_path(out).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noraw.pkl"]  # nothing half-written


def test_write_ood_split_files_and_manifest(tmp_path):
    src = tmp_path / "toy.pkl"
    src.write_bytes(pickle.dumps(_toy_dict(), protocol=4))
    out = tmp_path / "sub" / "toy_ood.pkl"
    manifest = write_ood_split(src, out, task="binary", seed=1, group_by_video=True, report=True)
    mpath = Path(str(out) + ".manifest.json")
    assert manifest_path(out) == mpath and mpath.is_file() and out.is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["toy_ood.pkl", "toy_ood.pkl.manifest.json"]  # no temp left
    on_disk = json.loads(mpath.read_text())
    assert MANIFEST_KEYS <= set(on_disk) and "shift" in on_disk
    assert on_disk["source"] == "toy.pkl" and on_disk["seed"] == 1 and on_disk["task"] == "binary"
    assert on_disk["group_by_video"] is True
    for key in ("bow_acc_iid_test", "bow_acc_ood_test"):
        assert 0.0 <= on_disk["shift"][key] <= 100.0
    assert {"word", "counts_per_class", "log_odds"} <= set(on_disk["biased_words"][0])
    assert all(len(p) == 3 and abs(sum(p) - 1) < 1e-3 for p in on_disk["priors"].values())
    reloaded = load_dataset(out)
    assert _ids(reloaded) == on_disk["ids"] == manifest["ids"]
    assert {n: reloaded[n].n for n in SPLITS} == {"train": 60, "valid": 20, "test": 40}
    assert "BoW" in format_summary(manifest)
    with pytest.raises(DatasetError, match="differ"):
        write_ood_split(out, out, "binary", 0, False, False)


def test_real_mosi_bow_shift():
    if not MOSI_CSV.is_file():
        pytest.skip(f"{MOSI_CSV} not available")
    data = dataset_from_dict(_mosi_dict(), source=str(MOSI_CSV))
    sizes = {n: data[n].n for n in SPLITS}
    assert sizes == {"train": 1281, "valid": 229, "test": 685}
    out, m = ood_split(data, task="binary", seed=0, report=True)
    assert m["sizes"] == sizes
    shift = m["shift"]
    print("MOSI seed 0:", json.dumps({k: shift[k] for k in ("bow_acc_iid_test", "bow_acc_ood_test")}))
    assert shift["bow_acc_ood_test"] <= shift["bow_acc_iid_test"] - 5.0  # the acceptance bar
    assert shift["bow_acc_ood_valid"] > shift["bow_acc_ood_test"]  # valid keeps train's correlations
    _, g = ood_split(data, task="binary", seed=0, group_by_video=True, report=True)
    assert g["sizes"] == sizes
    assert g["shift"]["bow_acc_ood_test"] < g["shift"]["bow_acc_iid_test"]
