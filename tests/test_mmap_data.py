"""The memory-mapped dataset form: convert round trip, validation errors, streaming batches, and
identical training/evaluation from the pickle and the mapped directory."""

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from cider_mer.batches import DeviceSplit, HostRows, keeps_resident
from cider_mer.cli import main
from cider_mer.config import TrainConfig
from cider_mer.data.dataset import DatasetError, dataset_from_dict, load_dataset, save_dataset
from cider_mer.data.mapped import MANIFEST, convert_dataset, is_mapped, release_pages, write_mapped
from cider_mer.text.cache import dataset_key

from conftest import make_dataset_dict
from helpers import tiny_bert_dir, tiny_data_file

SPLIT_FIELDS = ("text_bert", "audio", "vision", "audio_lengths", "vision_lengths", "regression_labels",
                "classification_labels", "raw_text", "ids")


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CIDER_CACHE_DIR", str(tmp_path / "cache"))


def assert_same_data(a, b):
    assert a.aligned == b.aligned and a.extra == b.extra
    for name in a.splits:
        for f in SPLIT_FIELDS:
            x, y = getattr(a[name], f), getattr(b[name], f)
            assert x.dtype == y.dtype and x.shape == y.shape, (name, f)
            assert (x == y).all(), (name, f)


@pytest.mark.parametrize("aligned", [False, True])
def test_convert_round_trip_is_exact(tmp_path, aligned):
    raw = make_dataset_dict(seed=4, aligned=aligned)
    # strings that a fixed-width or lossy encoding would change: non-ASCII, empty, trailing NUL
    raw["train"]["raw_text"][:3] = ["naïve — 😀", "", "ends with nul\x00"]
    raw["train"]["audio"][0, 0, 0] = -np.inf  # the pickle rule turns it into 0 before writing
    raw["labels"] = {"convention": "mosi", "range": [-3, 3]}
    pkl = tmp_path / "d.pkl"
    save_dataset(raw, pkl)
    original = load_dataset(pkl)
    mapped = convert_dataset(pkl, tmp_path / "d_mm")
    assert is_mapped(mapped["train"].audio) and is_mapped(mapped["test"].vision)
    assert mapped["train"].raw_text[2] == "ends with nul\x00" and mapped["train"].audio[0, 0, 0] == 0.0
    assert mapped.extra == {"labels": {"convention": "mosi", "range": [-3, 3]}}
    assert_same_data(original, mapped)
    assert_same_data(original, load_dataset(tmp_path / "d_mm"))
    manifest = json.loads((tmp_path / "d_mm" / MANIFEST).read_text())
    assert manifest["text"]["max_token_id"] == original.max_token_id()
    assert manifest["splits"]["train"]["arrays"]["audio"]["shape"] == list(original["train"].audio.shape)


def test_cli_convert_check_and_force(tmp_path, capsys):
    pkl = tiny_data_file(tmp_path)
    out = tmp_path / "mm"
    main(["data", "convert", str(pkl), "--out", str(out)])
    capsys.readouterr()
    main(["data", "check", str(out), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["file"] == str(out) and summary["splits"]["train"]["n"] == 60
    with pytest.raises(SystemExit) as exc:  # an existing directory is not replaced without --force
        main(["data", "convert", str(pkl), "--out", str(out)])
    assert exc.value.code == 2 and "--force" in capsys.readouterr().err
    main(["data", "convert", str(pkl), "--out", str(out), "--force"])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary directories left


def test_failed_write_leaves_nothing(tmp_path):
    from cider_mer.data.mapped import MappedWriter

    with pytest.raises(DatasetError, match="rows written"):
        with MappedWriter(tmp_path / "mm", aligned=False) as w:
            w.write_array("train", "audio", (4, 2, 3), [np.zeros((3, 2, 3))])
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def mapped_dir(tmp_path):
    out = tmp_path / "mm"
    write_mapped(load_dataset(tiny_data_file(tmp_path)), out)
    return out


def _edit_manifest(directory, edit):
    path = directory / MANIFEST
    m = json.loads(path.read_text())
    edit(m)
    path.write_text(json.dumps(m))


def _rewrite_npy(path, arr):
    with open(path, "wb") as f:  # np.save on a path would add ".npy" to the temp name: write by handle
        np.save(f, arr, allow_pickle=False)


@pytest.mark.parametrize("corrupt, message, names", [
    (lambda d: _edit_manifest(d, lambda m: m["splits"]["train"]["arrays"]["audio"].update(shape=[60, 20, 6])),
     r"shape \(60, 20, 5\) differs from the manifest's \(60, 20, 6\)", "train/audio.npy"),
    (lambda d: _rewrite_npy(d / "valid" / "vision.npy", np.zeros((20, 24, 8), np.float32)),
     r"shape \(20, 24, 8\) differs", "valid/vision.npy"),
    (lambda d: _rewrite_npy(d / "test" / "audio_lengths.npy", np.zeros(24, np.int32)),
     "dtype <i4 differs", "test/audio_lengths.npy"),
    (lambda d: os.truncate(d / "train" / "vision.npy", 1000), "bytes, but its header claims", "train/vision.npy"),
    (lambda d: _edit_manifest(d, lambda m: m["splits"]["train"]["arrays"]["audio"].update(file="../x.npy")),
     "outside the dataset directory", MANIFEST),
    (lambda d: _edit_manifest(d, lambda m: m.update(format_version=99)), "version 99", MANIFEST),
    (lambda d: (d / MANIFEST).write_text("{not json"), "not valid JSON", MANIFEST),
    (lambda d: _edit_manifest(d, lambda m: m["splits"]["test"]["arrays"].update(bogus={})), "unknown array",
     MANIFEST),
    (lambda d: _edit_manifest(d, lambda m: m["splits"]["train"]["arrays"].pop("regression_labels")),
     "content_sha256", MANIFEST),
    (lambda d: _edit_manifest(d, lambda m: m.update(extra={"x": 1})), "content_sha256", MANIFEST),
])
def test_corrupted_mapped_dataset_gives_a_clear_error(mapped_dir, corrupt, message, names):
    corrupt(mapped_dir)
    with pytest.raises(DatasetError, match=message) as exc:
        load_dataset(mapped_dir)
    assert names in str(exc.value)


def test_the_pickle_rules_apply_to_mapped_arrays(tmp_path):
    from cider_mer.data.mapped import MappedWriter, split_arrays

    data = dataset_from_dict(make_dataset_dict(seed=3))

    def write(out, change):  # a writer fed arrays that break a rule of the format
        with MappedWriter(out, aligned=False) as w:
            for name, split in data.splits.items():
                for key, arr in split_arrays(split, aligned=False).items():
                    arr = change(name, key, arr.copy())
                    if arr is not None:
                        w.write_whole(name, key, arr)
            w.commit()
        return out

    def no_labels(name, key, arr):
        return None if (name, key) == ("train", "regression_labels") else arr

    def bad_mask(name, key, arr):
        if (name, key) == ("valid", "text_bert"):
            arr[2, 1, -1] = 1  # the attention mask is no longer ones then zeros
        return arr

    with pytest.raises(DatasetError, match=r"mm1 \[split 'train', key 'regression_labels'\]: missing required key"):
        load_dataset(write(tmp_path / "mm1", no_labels))
    with pytest.raises(DatasetError, match=r"mm2 \[split 'valid', key 'text_bert'\]: expected the attention mask to "
                                           r"be ones then zeros \(sample 2 is not\)"):
        load_dataset(write(tmp_path / "mm2", bad_mask))


def test_changed_values_are_caught_by_the_rules_and_the_hashes(mapped_dir):
    path = mapped_dir / "train" / "audio.npy"
    arr = np.load(path)
    arr[7, 3, 1] = np.nan
    _rewrite_npy(path, arr)
    with pytest.raises(DatasetError, match=r"expected finite values, found 1 NaN/inf \(first in sample 7\)"):
        load_dataset(mapped_dir)
    arr[7, 3, 1] = 1.5  # finite, so only the digest notices
    _rewrite_npy(path, arr)
    with pytest.raises(DatasetError, match="train/audio.npy: content differs"):
        load_dataset(mapped_dir)


def test_a_directory_without_manifest_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="without dataset.json"):
        load_dataset(tmp_path)


def test_dataset_key_is_the_manifest_content_hash(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_mapped(dataset_from_dict(make_dataset_dict(seed=1)), a)
    write_mapped(dataset_from_dict(make_dataset_dict(seed=1)), b)
    c = tmp_path / "c"
    write_mapped(dataset_from_dict(make_dataset_dict(seed=2)), c)
    manifest = json.loads((a / MANIFEST).read_text())
    assert dataset_key(a) == manifest["content_sha256"][:16] == dataset_key(b) != dataset_key(c)


def test_release_pages_drops_mapped_pages_from_the_resident_set(tmp_path):
    smaps = Path("/proc/self/smaps")
    if not smaps.is_file():
        pytest.skip("needs /proc")
    path = tmp_path / "big.npy"

    def resident_kb():  # resident pages of this file's mappings
        total, ours = 0, False
        for line in smaps.read_text().splitlines():
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):  # a mapping's header line
                ours = line.rstrip().endswith(str(path))
            elif ours and line.startswith("Rss:"):
                total += int(line.split()[1])
        return total

    np.save(path, np.ones((256, 64, 256), np.float32))  # 16 MiB, 64 KiB rows
    arr = np.load(path, mmap_mode="r")
    assert float(arr[::2].sum()) == 256 * 64 * 256 / 2  # touch every other row
    assert resident_kb() > 6_000
    release_pages(arr, np.arange(0, 256, 2))
    assert resident_kb() < 1_000
    assert float(arr.sum()) == 256 * 64 * 256  # the data is still there (from the page cache)
    release_pages(arr)
    # streamed batches: pages mapped around each fault are released too, so an epoch of random
    # batches does not pile the file up in the resident set
    rows = HostRows(arr, torch.device("cpu"))
    for batch in np.random.default_rng(0).permutation(256).reshape(-1, 8):
        assert rows.gather(batch).shape == (8, 64, 256)
    assert resident_kb() < 512


def test_placement_rule(monkeypatch):
    import cider_mer.batches as batches

    monkeypatch.setattr(batches, "available_memory", lambda device: 8_000)
    cpu = torch.device("cpu")
    assert keeps_resident(1_000, cpu) and not keeps_resident(1_001, cpu)  # 1/8 of what is available
    assert keeps_resident(10**12, cpu, "always") and not keeps_resident(1, cpu, "never")
    with pytest.raises(ValueError, match="data_on_device"):
        keeps_resident(1, cpu, "sometimes")
    with pytest.raises(ValueError, match="data_on_device"):
        TrainConfig(data_on_device="sometimes")


def test_streamed_split_gives_the_resident_batches(tmp_path):
    data = convert_dataset(tiny_data_file(tmp_path), tmp_path / "mm")
    feats = np.random.default_rng(0).normal(size=(data["train"].n, data.text_len, 4)).astype(np.float32)
    resident = DeviceSplit.from_split(data["train"], "binary", "cpu", feats, placement="always")
    streamed = DeviceSplit.from_split(data["train"], "binary", "cpu", feats, placement="never")
    assert resident.resident and not streamed.resident and isinstance(streamed.audio, HostRows)
    idx = torch.tensor([5, 3, 59, 0, 3, 17])  # unsorted, with a repeat
    some = torch.tensor([4, 1])
    for a, b in ((resident.inputs(idx), streamed.inputs(idx)),
                 (resident.subset(idx).inputs(some), streamed.subset(idx).inputs(some))):
        for f in ("text_ids", "text_mask", "audio", "audio_mask", "vision", "vision_mask", "text_features"):
            assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert torch.equal(streamed.inputs(idx).audio, torch.from_numpy(data["train"].audio[idx.numpy()]))


def test_mapped_text_feature_cache_and_chunked_statistics(tmp_path):
    from cider_mer.maci.statistics import sample_features
    from cider_mer.text.cache import cached_text_features, encode_texts
    from cider_mer.text.encoder import TextEncoder

    mm = tmp_path / "mm"
    data = convert_dataset(tiny_data_file(tmp_path), mm)
    enc = TextEncoder.from_pretrained(str(tiny_bert_dir(tmp_path)), frozen=True)
    s = data["train"]
    feats = cached_text_features(mm, "train", s.text_ids, s.text_mask, s.text_segment, enc, batch_size=8)
    assert is_mapped(feats) and not feats.flags.writeable
    assert np.array_equal(feats, encode_texts(enc, s.text_ids, s.text_mask, s.text_segment, batch_size=8))
    again = cached_text_features(mm, "train", s.text_ids, s.text_mask, s.text_segment, enc)
    assert again.filename == feats.filename
    assert np.array_equal(sample_features(s, feats, chunk=7), sample_features(s, np.array(feats), chunk=10_000))


def _train_and_eval(data_path, run_dir, bert, **kw):
    from cider_mer.evaluation.protocol import evaluate
    from cider_mer.runs import load_run
    from cider_mer.training.trainer import train

    cfg = TrainConfig(text_encoder=str(bert), freeze_text_encoder=True, epochs=2, batch_size=16, eval_batch_size=32,
                      model_config={"layers": 1, "heads": 2}, device="cpu", seed=5, **kw)
    train(cfg, load_dataset(data_path), run_dir, progress=False)
    log = (run_dir / "train_log.csv").read_text().splitlines()
    run = load_run(run_dir, device="cpu")
    weights = {k: v.clone() for k, v in run.model.state_dict().items()}
    results = evaluate(run, load_dataset(data_path), rates=[0.0, 0.5], seeds=[0], progress=False)
    return log, weights, results.metrics


def test_mapped_and_pickled_files_train_and_evaluate_identically(tmp_path, one_torch_thread):
    bert, pkl = tiny_bert_dir(tmp_path), tiny_data_file(tmp_path)
    mm = tmp_path / "mm"
    write_mapped(load_dataset(pkl), mm)
    runs = {
        "pickle": _train_and_eval(pkl, tmp_path / "r_pkl", bert),
        "mapped": _train_and_eval(mm, tmp_path / "r_mm", bert, data_on_device="always"),
        "streamed": _train_and_eval(mm, tmp_path / "r_stream", bert, data_on_device="never"),
    }
    ref_log, ref_w, ref_metrics = runs["pickle"]
    timing = ref_log[0].split(",").index("train_seconds")

    def strip(log):  # the log without its timing column
        return [[c for i, c in enumerate(row.split(",")) if i != timing] for row in log]
    for name, (log, weights, metrics) in runs.items():
        assert strip(log) == strip(ref_log), name  # same losses and validation metrics, epoch by epoch
        assert all(torch.equal(weights[k], ref_w[k]) for k in ref_w), name
        assert {k: v.per_seed for k, v in metrics.items()} == {k: v.per_seed for k, v in ref_metrics.items()}, name
    cfg = json.loads((tmp_path / "r_mm" / "config.json").read_text())
    assert cfg["data"]["sha256_16"] == dataset_key(mm) and cfg["data"]["file"] == "mm"


def test_convert_keeps_the_label_convention(tmp_path):
    """A categorical (emotion) file keeps its class names and NaN scores in the mapped form."""
    d = make_dataset_dict(seed=0, sizes=(20, 8, 8))
    for name in ("train", "valid", "test"):
        n = len(d[name].pop("regression_labels"))
        d[name]["classification_labels"] = np.arange(n) % 4
    d["meta"] = {"label_convention": "categorical", "class_names": ["anger", "joy", "neutral", "sad"]}
    save_dataset(dataset_from_dict(d), tmp_path / "emo.pkl")
    mapped = convert_dataset(tmp_path / "emo.pkl", tmp_path / "emo")
    again = load_dataset(tmp_path / "emo")
    for got in (mapped, again):
        assert got.convention.name == "categorical" and got.convention.class_names == ("anger", "joy", "neutral", "sad")
        assert got["train"].convention == got.convention
        assert np.array_equal(got["test"].classification_labels, np.arange(8) % 4)
        assert np.isnan(got["train"].regression_labels).all()
