"""Label conventions per dataset (mosi, sims, categorical): files, tasks, CH-SIMS metrics, CSV import,
``data check`` and the encoder-vocabulary check of ``cider train``."""

import csv
import json
import pickle

import numpy as np
import pytest

from cider_mer.cli import main
from cider_mer.data.dataset import DatasetError, dataset_from_dict, load_dataset, save_dataset
from cider_mer.data.import_csv import import_csv
from cider_mer.data.labels import MOSI, LabelConvention, LabelError, sims_classes
from cider_mer.metrics import METRIC_NAMES, sims_score_metrics, task_metrics

from conftest import make_dataset_dict
from helpers import tiny_bert_dir

# Scores at and beside every CH-SIMS bin edge, with their bins worked out by hand from the intervals
# Acc2 [-1, 0], (0, 1]; Acc3 [-1, -0.1], (-0.1, 0.1], (0.1, 1]; Acc5 [-1, -0.7], (-0.7, -0.1], (-0.1, 0.1],
# (0.1, 0.7], (0.7, 1].
EDGES = [-1.0, -0.7, -0.69, -0.1, -0.09, 0.0, 0.01, 0.1, 0.11, 0.7, 0.71, 1.0]
BINS2 = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
BINS3 = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
BINS5 = [0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 4, 4]


def sims_dict(seed=0, sizes=(30, 10, 12)):
    d = make_dataset_dict(seed=seed, sizes=sizes)
    for name in ("train", "valid", "test"):
        d[name]["regression_labels"] = np.round(d[name]["regression_labels"] / 3, 1).astype(np.float32)
    d["meta"] = {"label_convention": "sims"}
    return d


def test_sims_bins_at_the_edges():
    for scores in (np.array(EDGES), np.array(EDGES, dtype=np.float32)):  # float32 labels land on the same side
        assert sims_classes(scores, "acc2").tolist() == BINS2
        assert sims_classes(scores, "acc3").tolist() == BINS3
        assert sims_classes(scores, "acc5").tolist() == BINS5


def test_sims_regression_metrics_by_hand():
    truth = np.array(EDGES, dtype=np.float32)
    # each prediction sits at or across the edge next to its truth; -1.5 and 2.0 are clipped to [-1, 1]
    pred = np.array([-1.5, -0.71, -0.7, -0.1, -0.1, 0.0, 0.0, 0.1, 0.1, 0.7, 0.7, 2.0])
    m = sims_score_metrics(pred, truth)
    assert m["acc2"] == pytest.approx(100 * 11 / 12)  # only 0.01 -> 0.0 crosses the Acc2 edge
    assert m["acc3"] == pytest.approx(100 * 10 / 12)  # -0.09 -> -0.1 and 0.11 -> 0.1
    assert m["acc5"] == pytest.approx(100 * 8 / 12)  # those two, -0.69 -> -0.7 and 0.71 -> 0.7
    # weighted F1 over the Acc2 bins: truth 6 / 6, one positive predicted negative
    f1_neg, f1_pos = 2 * 6 / (2 * 6 + 1), 2 * 5 / (2 * 5 + 1)
    assert m["f1"] == pytest.approx(100 * (f1_neg + f1_pos) / 2)
    assert m["mae"] == pytest.approx(6 * 0.01 / 12, abs=1e-6)  # after clipping, six predictions are 0.01 off
    assert set(m) == set(METRIC_NAMES["sims_regression"])
    assert task_metrics("sims_regression", pred[:, None], truth) == m


def test_sims_binary_labels_and_metrics():
    ds = dataset_from_dict(sims_dict())
    tr = ds["train"]
    assert tr.labels("sims_binary").tolist() == sims_classes(tr.regression_labels, "acc2").tolist()
    assert ds.convention.num_classes("sims_binary") == 2
    labels = np.array([0, 0, 1, 1])
    scores = np.log(np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]]))
    m = task_metrics("sims_binary", scores, labels)
    assert m["acc2"] == pytest.approx(75.0)
    assert m["f1"] == pytest.approx(100 * (0.5 * 2 / 3 + 0.5 * 0.8))


def test_sims_score_outside_its_range_names_file_split_and_key(tmp_path):
    d = sims_dict()
    d["valid"]["regression_labels"][3] = 2.5
    path = tmp_path / "sims.pkl"
    with open(path, "wb") as f:
        pickle.dump(d, f)
    with pytest.raises(DatasetError, match=r"sims.pkl \[split 'valid', key 'regression_labels'\]: expected scores "
                                           r"in \[-1, 1\] \(label convention 'sims'\).*sample 3: 2.5"):
        load_dataset(path)
    d["valid"]["regression_labels"][3] = 0.5  # the same file with the score fixed loads
    assert dataset_from_dict(d).convention.name == "sims"


def test_files_without_meta_are_mosi_and_are_written_as_before(tmp_path):
    d = make_dataset_dict()
    ds = dataset_from_dict(d)
    assert ds.convention == MOSI and ds["train"].labels("binary").max() <= 2
    save_dataset(ds, tmp_path / "m.pkl")
    with open(tmp_path / "m.pkl", "rb") as f:
        assert set(pickle.load(f)) == {"train", "valid", "test"}  # no meta entry for mosi files
    assert ds.summary()["label_convention"] == "mosi"


@pytest.mark.parametrize("meta", [{"label_convention": "sims"},
                                  {"label_convention": "categorical", "class_names": ["anger", "joy", "neutral"]}])
def test_meta_travels_through_save_and_the_safe_loader(tmp_path, meta):
    d = make_dataset_dict() if meta["label_convention"] != "sims" else sims_dict()
    if meta["label_convention"] == "categorical":
        for name in ("train", "valid", "test"):
            n = len(d[name]["regression_labels"])
            del d[name]["regression_labels"]
            d[name]["classification_labels"] = np.arange(n) % 3
    d["meta"] = meta
    save_dataset(dataset_from_dict(d), tmp_path / "f.pkl")
    back = load_dataset(tmp_path / "f.pkl")  # through safe_pickle: plain dict, str and list only
    assert back.convention.to_meta() == meta
    with open(tmp_path / "f.pkl", "rb") as f:
        raw = pickle.load(f)
    assert raw["meta"] == meta
    assert ("regression_labels" in raw["train"]) == (meta["label_convention"] == "sims")


@pytest.mark.parametrize(("meta", "message"), [
    ("sims", r"\[key 'meta'\]: expected a dict"),
    ({"label_convention": "likert"}, r"expected 'label_convention' one of \['mosi', 'sims', 'categorical'\]"),
    ({"label_convention": "categorical"}, r"expected 'class_names', a list of at least two"),
    ({"label_convention": "categorical", "class_names": ["joy", "joy"]}, r"'joy' appears more than once"),
    ({"label_convention": "sims", "class_names": ["a", "b"]}, r"categorical convention only"),
])
def test_bad_meta_is_a_clear_error(meta, message):
    d = make_dataset_dict()
    d["meta"] = meta
    with pytest.raises(DatasetError, match=message) as e:
        dataset_from_dict(d, source="f.pkl")
    assert str(e.value).startswith("f.pkl [key 'meta']: ")


def test_categorical_class_ids_are_checked_against_the_class_names():
    d = make_dataset_dict()
    for name in ("train", "valid", "test"):
        d[name]["classification_labels"] = np.zeros(len(d[name]["regression_labels"]), dtype=np.int64)
    d["train"]["classification_labels"][4] = 3
    d["meta"] = {"label_convention": "categorical", "class_names": ["a", "b", "c"]}
    with pytest.raises(DatasetError, match=r"\[split 'train', key 'classification_labels'\]: expected values in "
                                           r"\[0, 2\]"):
        dataset_from_dict(d, source="f.pkl")
    d["train"]["classification_labels"][4] = 2
    ds = dataset_from_dict(d, source="f.pkl")
    assert np.isnan(ds["train"].regression_labels).all()  # scores are not part of categorical labels
    del d["valid"]["classification_labels"]
    with pytest.raises(DatasetError, match=r"\[split 'valid', key 'classification_labels'\]: missing required key"):
        dataset_from_dict(d, source="f.pkl")


def test_tasks_follow_the_convention():
    sims = dataset_from_dict(sims_dict(), source="sims.pkl")
    for task in ("binary", "seven", "regression", "emotion"):
        with pytest.raises(LabelError, match=rf"sims.pkl: task '{task}' does not fit the label convention sims "
                                             r"\(scores in \[-1, 1\].*use --task sims_binary or sims_regression"):
            sims.check_task(task)
    with pytest.raises(LabelError, match="does not fit"):
        sims["train"].labels("seven")  # the split refuses as well: no silent wrong bins
    mosi = dataset_from_dict(make_dataset_dict(), source="mosi.pkl")
    with pytest.raises(LabelError, match="use --task binary or seven or regression"):
        mosi.check_task("sims_regression")
    assert LabelConvention("categorical", ("a", "b", "c", "d")).num_classes("emotion") == 4
    assert LabelConvention("categorical", ("a", "b")).names_for("emotion") == ["a", "b"]
    assert MOSI.names_for("binary") == ["negative", "neutral", "positive"]


def csv_text(rows):
    return "id,text,label,mode\n" + "".join(f"{i},{t},{y},{m}\n" for i, t, y, m in rows)


ROWS = [("a", "good", "0.4", "train"), ("b", "bad", "-0.8", "train"), ("c", "fine", "0.0", "valid"),
        ("d", "great", "1.0", "test")]


@pytest.fixture(scope="module")
def tokenizer():
    from cider_mer.text.encoder import load_tokenizer

    return load_tokenizer()


def test_import_csv_conventions(tmp_path, tokenizer):
    csv = tmp_path / "sims.csv"
    csv.write_text(csv_text(ROWS))
    ds = import_csv(csv, tmp_path / "sims.pkl", tokenizer=tokenizer, max_len=8, convention="sims")
    assert load_dataset(tmp_path / "sims.pkl").convention.name == "sims"
    assert ds["train"].labels("sims_binary").tolist() == [1, 0]
    # numbers without a convention are mosi, as before
    assert import_csv(csv, tokenizer=tokenizer, max_len=8).convention.name == "mosi"
    csv.write_text(csv_text(ROWS + [("e", "wow", "1.5", "test")]))
    with pytest.raises(DatasetError, match=r"\[row 6, column 'label'\]: expected a score in \[-1, 1\] \(label "
                                           r"convention 'sims'\), got '1.5'"):
        import_csv(csv, tokenizer=tokenizer, max_len=8, convention="sims")
    # class names: categorical by themselves, ids in sorted order of the names
    csv.write_text(csv_text([("a", "yay", "joy", "train"), ("b", "grr", "anger", "train"),
                             ("c", "hm", "neutral", "valid"), ("d", "yay", "joy", "test")]))
    ds = import_csv(csv, tokenizer=tokenizer, max_len=8)
    assert ds.convention.class_names == ("anger", "joy", "neutral")
    assert ds["train"].labels("emotion").tolist() == [1, 0]
    with pytest.raises(DatasetError, match=r"row 2, column 'label'\]: expected a score in \[-3, 3\]"):
        import_csv(csv, tokenizer=tokenizer, max_len=8, convention="mosi")
    csv.write_text(csv_text([("a", "yay", "joy", "train"), ("b", "grr", "2", "train"),
                             ("c", "hm", "1", "valid"), ("d", "yay", "0", "test")]))
    with pytest.raises(DatasetError, match=r"\[row 2, column 'label'\]: expected a score like the other rows, got "
                                           r"'joy' \(labels are all scores or all class names"):
        import_csv(csv, tokenizer=tokenizer, max_len=8)


def test_data_check_and_import_cli_print_the_convention(tmp_path, capsys):
    csv = tmp_path / "sims.csv"
    csv.write_text(csv_text(ROWS))
    main(["data", "import-csv", str(csv), "--out", str(tmp_path / "s.pkl"), "--convention", "sims", "--max-len", "8"])
    capsys.readouterr()
    main(["data", "check", str(tmp_path / "s.pkl")])
    out = capsys.readouterr().out
    assert "label convention: sims (scores in [-1, 1]; tasks sims_binary, sims_regression)" in out
    assert "sims_binary priors negative/positive" in out
    main(["data", "check", str(tmp_path / "s.pkl"), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["label_convention"] == "sims" and summary["splits"]["train"]["priors"]["sims_binary"] == [0.5, 0.5]
    with pytest.raises(SystemExit) as e:
        main(["data", "import-csv", str(csv), "--out", str(tmp_path / "x.pkl"), "--convention", "likert"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == ("error: unknown label convention 'likert': expected one of "
                                               "['mosi', 'sims', 'categorical']")


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return tiny_bert_dir(tmp_path_factory.mktemp("conv-bert"))


def test_train_refuses_a_vocabulary_it_does_not_know(tmp_path, bert, capsys):
    """Token ids of another tokenizer (a Chinese BERT, say) stop `cider train` with one line naming both."""
    d = make_dataset_dict()
    d["valid"]["text_bert"][2, 0, 1] = 21_000  # beyond the tiny encoder's 6000 entries
    save_dataset(dataset_from_dict(d), tmp_path / "zh.pkl")
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", str(tmp_path / "zh.pkl"), "--out", str(tmp_path / "run"), "--text-encoder", str(bert),
              "--freeze-text-encoder", "--epochs", "1", "--device", "cpu", "--quiet"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert str(tmp_path / "zh.pkl") in err[0] and "text encoder 'tiny-bert'" in err[0]
    assert "largest token id 21000" in err[0]
    assert not (tmp_path / "run" / "config.json").exists()


def test_train_refuses_a_task_of_another_convention(tmp_path, bert, capsys):
    save_dataset(dataset_from_dict(sims_dict()), tmp_path / "sims.pkl")
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", str(tmp_path / "sims.pkl"), "--out", str(tmp_path / "run"), "--task", "seven",
              "--text-encoder", str(bert), "--epochs", "1", "--device", "cpu", "--quiet"])
    assert e.value.code == 2
    assert "task 'seven' does not fit the label convention sims" in capsys.readouterr().err


def test_sims_regression_trains_and_evaluates_with_the_sims_metrics(tmp_path, bert, monkeypatch, one_torch_thread):
    from cider_mer.config import TrainConfig
    from cider_mer.evaluation.protocol import evaluate
    from cider_mer.runs import load_run
    from cider_mer.training.trainer import train

    monkeypatch.setenv("CIDER_CACHE_DIR", str(tmp_path / "cache"))
    save_dataset(dataset_from_dict(sims_dict()), tmp_path / "sims.pkl")
    data = load_dataset(tmp_path / "sims.pkl")
    cfg = TrainConfig(task="sims_regression", head="linear", counterfactual=False, text_encoder=str(bert),
                      freeze_text_encoder=True, epochs=4, patience=4, batch_size=16, eval_batch_size=32,
                      model_config={"layers": 1, "heads": 2}, device="cpu", seed=3)
    result = train(cfg, data, tmp_path / "run", progress=False)
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    assert meta["label_convention"] == "sims" and meta["selection_metric"] == "mae"
    # regression tasks keep the epoch of the LOWEST validation MAE (MMSA's convention)
    log = list(csv.DictReader((tmp_path / "run" / "train_log.csv").open()))
    maes = [float(r["val_mae"]) for r in log]
    assert result.best_epoch == int(log[maes.index(min(maes))]["epoch"]) and result.best_value == min(maes)
    assert meta["shapes"]["num_classes"] == 1 and meta["class_names"] == ["score"]
    run = load_run(tmp_path / "run", device="cpu")
    res = evaluate(run, data, rates=[0.0, 1.0], seeds=[0], progress=False)
    assert list(res.metrics) == list(METRIC_NAMES["sims_regression"])
    assert all(0 <= res.metrics[k].mean[0] <= 100 for k in ("acc2", "acc3", "acc5", "f1"))
    assert res.to_dict().get("classes") is None  # per-class breakdowns belong to named classes
    with pytest.raises(LabelError, match="does not fit the label convention mosi"):
        evaluate(run, dataset_from_dict(make_dataset_dict(), source="mosi.pkl"), rates=[0.0], seeds=[0],
                 progress=False)
