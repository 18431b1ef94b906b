import pickle

import joblib
import numpy as np
import pytest

from cider_mer.data.dataset import DatasetError, dataset_from_dict, load_dataset, save_dataset
from cider_mer.data.labels import seven_classes, sign_classes
from cider_mer.data.safe_pickle import UnsafePickleError, safe_load

from conftest import make_dataset_dict


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


class _EvilEval:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


def test_roundtrip_unaligned_and_aligned(tmp_path):
    for aligned in (False, True):
        d = make_dataset_dict(aligned=aligned)
        path = tmp_path / f"d{aligned}.pkl"
        save_dataset(d, path)
        ds = load_dataset(path)
        assert ds.aligned == aligned
        assert ds.text_len == 12 and ds.audio_dim == 5 and ds.vision_dim == 7
        assert [ds[s].n for s in ("train", "valid", "test")] == [30, 10, 12]
        assert ds["train"].text_bert.dtype == np.int64 and ds["train"].audio.dtype == np.float32
        if aligned:
            assert np.array_equal(ds["train"].audio_lengths, ds["train"].text_lengths)


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    d = make_dataset_dict()
    d["train"]["extra"] = _Evil(str(marker))
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump(d, f)
    with pytest.raises(UnsafePickleError, match="posix.system|os.system|nt.system"):
        safe_load(path)
    with pytest.raises(DatasetError, match="Nothing was executed"):
        load_dataset(path)
    assert not marker.exists()


def test_malicious_eval_pickle_refused(tmp_path):
    path = tmp_path / "evil2.pkl"
    with open(path, "wb") as f:
        pickle.dump({"train": _EvilEval()}, f, protocol=2)
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        safe_load(path)


@pytest.mark.parametrize("compress", [0, 3])
def test_joblib_files_load_safely(tmp_path, compress):
    d = make_dataset_dict()
    path = tmp_path / "d.joblib"
    joblib.dump(d, path, compress=compress)
    ds = load_dataset(path)
    assert ds["test"].n == 12
    assert list(ds["train"].raw_text[:2]) == ["sample 0", "sample 1"]


def test_malicious_joblib_refused(tmp_path):
    marker = tmp_path / "pwned"
    d = make_dataset_dict()
    d["valid"]["raw_text"] = np.array([_Evil(str(marker))] * 10, dtype=object)
    path = tmp_path / "evil.joblib"
    joblib.dump(d, path)
    with pytest.raises(UnsafePickleError):
        safe_load(path)
    assert not marker.exists()


def test_truncated_file(tmp_path):
    d = make_dataset_dict()
    path = tmp_path / "t.pkl"
    save_dataset(d, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="truncated or corrupted"):
        load_dataset(path)


def test_not_a_pickle(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_text("hello")
    with pytest.raises(DatasetError, match="not a pickle"):
        load_dataset(path)


def bad(d, match):
    with pytest.raises(DatasetError, match=match):
        dataset_from_dict(d, source="f.pkl")


def test_missing_split_named():
    d = make_dataset_dict()
    del d["valid"]
    bad(d, r"f.pkl \[split 'valid'\]: missing split")


def test_wrong_shapes_named():
    d = make_dataset_dict()
    d["train"]["audio"] = d["train"]["audio"][:, :, 0]
    bad(d, r"split 'train', key 'audio'\]: expected shape \(N, T, d\)")
    d = make_dataset_dict()
    d["test"]["vision"] = d["test"]["vision"][:, :, :3]
    bad(d, r"split 'test', key 'vision'\]: expected per-sample shape")
    d = make_dataset_dict()
    d["valid"]["regression_labels"] = d["valid"]["regression_labels"][:-1]
    bad(d, r"split 'valid', key 'regression_labels'\]: expected 10 entries")


def test_nan_labels_and_features():
    d = make_dataset_dict()
    d["train"]["regression_labels"][3] = np.nan
    bad(d, r"key 'regression_labels'\]: expected finite scores")
    d = make_dataset_dict()
    d["train"]["vision"][2, 0, 0] = np.inf
    bad(d, r"key 'vision'\]: expected finite values.*sample 2")
    d = make_dataset_dict()
    d["train"]["regression_labels"][0] = 3.5
    bad(d, r"expected scores in \[-3, 3\]")


def test_minus_inf_audio_becomes_zero():
    d = make_dataset_dict()
    d["train"]["audio"][0, 0, :] = -np.inf
    ds = dataset_from_dict(d)
    assert np.all(ds["train"].audio[0, 0] == 0)


def test_lengths_and_mask_checks():
    d = make_dataset_dict()
    d["train"]["audio_lengths"][0] = 999
    bad(d, r"key 'audio_lengths'\]: expected values in \[0, 20\]")
    d = make_dataset_dict()
    del d["train"]["vision_lengths"]
    bad(d, "vision_lengths")
    d = make_dataset_dict()
    d["train"]["text_bert"][0, 1, 5:] = 1 - d["train"]["text_bert"][0, 1, 5:]
    d["train"]["text_bert"][0, 1, -1] = 1
    bad(d, "ones then zeros")
    d = make_dataset_dict()
    d["train"]["classification_labels"] = np.full(30, 5)
    bad(d, r"classification_labels'\]: expected values in \[0, 2\]")
    d = make_dataset_dict()
    d["train"]["text_bert"] = d["train"]["text_bert"].astype(object)
    bad(d, "expected a numeric array")


def test_labels_derived_when_absent_and_tasks():
    d = make_dataset_dict()
    ds = dataset_from_dict(d)
    y = ds["train"].regression_labels
    assert np.array_equal(ds["train"].classification_labels, sign_classes(y))
    assert np.array_equal(ds["train"].labels("seven"), seven_classes(y))
    assert list(seven_classes(np.array([-2.5, 0.5, 2.5, -3.4, 0.0]))) == [1, 3, 5, 0, 3]  # half to even
    assert list(sign_classes(np.array([-0.1, 0.0, 0.2]))) == [0, 1, 2]


def test_summary_has_priors_per_task():
    ds = dataset_from_dict(make_dataset_dict())
    s = ds.summary()
    assert set(s["splits"]) == {"train", "valid", "test"}
    assert len(s["splits"]["train"]["priors"]["binary"]) == 3
    assert len(s["splits"]["train"]["priors"]["seven"]) == 7
    assert abs(sum(s["splits"]["train"]["priors"]["seven"]) - 1) < 1e-3


def test_save_is_atomic_on_failure(tmp_path):
    path = tmp_path / "keep.pkl"
    save_dataset(make_dataset_dict(), path)
    before = path.read_bytes()
    with pytest.raises(Exception):
        save_dataset({"train": {"x": _Unpicklable()}}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.pkl"]


class _Unpicklable:
    def __reduce__(self):
        raise TypeError("cannot pickle")


# ----------------------------------------------------------------------------------------------
# issue 19, item 7: empty splits, repeated ids, token ids beyond the encoder


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_empty_split_is_named(tmp_path, split):
    d = make_dataset_dict()
    d[split] = {k: v[:0] for k, v in d[split].items()}
    path = tmp_path / "empty.pkl"
    save_dataset(d, path)
    with pytest.raises(DatasetError,
                       match=rf"empty\.pkl \[split '{split}'\]: expected at least one sample, found 0 rows"):
        load_dataset(path)


def test_repeated_id_within_a_split_is_named(tmp_path):
    d = make_dataset_dict()
    d["valid"]["id"][7] = d["valid"]["id"][2]
    path = tmp_path / "dup.pkl"
    save_dataset(d, path)
    with pytest.raises(DatasetError, match=r"dup\.pkl \[split 'valid', key 'id'\]: expected unique ids, "
                                           r"'vid0\$_\$2' appears more than once \(samples 2 and 7\)"):
        load_dataset(path)


def test_ids_repeated_across_splits():
    from cider_mer.data.dataset import check_unique_ids

    d = make_dataset_dict()
    for name in ("train", "valid", "test"):
        d[name]["id"] = np.array([f"{name}{i}" for i in range(len(d[name]["id"]))], dtype=object)
    check_unique_ids(dataset_from_dict(d, source="f.pkl"))
    d["test"]["id"][4] = "train9"
    with pytest.raises(DatasetError, match=r"f\.pkl \[split 'test', key 'id'\]: expected ids unique across the splits, "
                                           r"'train9' \(sample 4\) is also sample 9 of split 'train'"):
        check_unique_ids(dataset_from_dict(d, source="f.pkl"))


def test_token_ids_beyond_the_encoder_vocabulary():
    from cider_mer.data.dataset import check_vocabulary

    d = make_dataset_dict()  # token ids 101, 102 and 1000..4999
    ds = dataset_from_dict(d, source="f.pkl")
    assert ds.max_token_id() == int(max(d[s]["text_bert"][:, 0].max() for s in d))
    check_vocabulary(ds, 6000, "tiny-bert", type_vocab_size=2, max_positions=64)
    d["valid"]["text_bert"][3, 0, 1] = 31000
    ds = dataset_from_dict(d, source="f.pkl")
    assert ds.max_token_id() == 31000
    with pytest.raises(DatasetError, match=r"f\.pkl \[split 'valid', key 'text_bert'\]: largest token id 31000 "
                                           r"\(sample 3\) is beyond the vocabulary of text encoder 'tiny-bert' "
                                           r"\(6000 entries, ids 0\.\.5999\)"):
        check_vocabulary(ds, 6000, "tiny-bert")
    d = make_dataset_dict()
    d["train"]["text_bert"][0, 2, 0] = 5
    with pytest.raises(DatasetError, match=r"split 'train', key 'text_bert'\]: largest segment id 5 \(sample 0\)"):
        check_vocabulary(dataset_from_dict(d, source="f.pkl"), 6000, "tiny-bert", type_vocab_size=2)
    with pytest.raises(DatasetError, match=r"text length L_t=12 is beyond the 8 positions of text encoder 'tiny-bert'"):
        check_vocabulary(dataset_from_dict(make_dataset_dict(), source="f.pkl"), 6000, "tiny-bert", max_positions=8)


def test_vocabulary_check_stops_what_would_crash_the_encoder():
    """Without the check, an out-of-vocabulary id is an IndexError deep in the embedding lookup."""
    import torch

    from cider_mer.data.dataset import check_vocabulary

    d = make_dataset_dict()
    d["train"]["text_bert"][0, 0, 1] = 7000
    ds = dataset_from_dict(d, source="f.pkl")
    with pytest.raises(IndexError):
        torch.nn.Embedding(6000, 4)(torch.as_tensor(ds["train"].text_ids))
    with pytest.raises(DatasetError, match="largest token id 7000"):
        check_vocabulary(ds, 6000, "tiny-bert")
