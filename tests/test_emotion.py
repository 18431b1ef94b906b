"""Categorical emotion recognition end to end: a 4-class CSV is imported, trained (with MACI and
without), evaluated under missing modalities and reported with per-class F1 and a confusion matrix."""

import json
import pickle

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from cider_mer.cli import main
from cider_mer.data.dataset import dataset_from_dict, load_dataset, save_dataset
from cider_mer.evaluation.protocol import evaluate
from cider_mer.maci.counterfactual import BiasVocabulary
from cider_mer.maci.mcm import MCMHead
from cider_mer.metrics import METRIC_NAMES, confusion, per_class_f1, task_metrics
from cider_mer.runs import RunError, load_run
from cider_mer.text.encoder import load_tokenizer

from helpers import tiny_bert_dir

CLASSES = ("anger", "joy", "neutral", "sadness")  # sorted: the class ids the importer gives
FIRST_SEEN = ("joy", "sadness", "anger", "neutral")  # the CSV's row order differs on purpose
WORDS = {"anger": ("furious", "angry", "mad"), "joy": ("happy", "delighted", "glad"),
         "neutral": ("okay", "fine", "normal"), "sadness": ("sad", "gloomy", "unhappy")}
FILLER = ("the", "movie", "was", "really", "today", "and", "i", "think", "it")
PER_CLASS = {"train": 10, "valid": 4, "test": 4}


def write_emotion_csv(path, seed=0):
    rng = np.random.default_rng(seed)
    lines = ["id,text,label,mode"]
    for mode, n in PER_CLASS.items():
        for i in range(n):
            for label in FIRST_SEEN:
                words = [*rng.choice(FILLER, size=4), rng.choice(WORDS[label])]
                rng.shuffle(words)
                lines.append(f"{mode}{i}_{label},{' '.join(words)},{label},{mode}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def emotion(tmp_path_factory):
    root = tmp_path_factory.mktemp("emotion")
    patch = pytest.MonkeyPatch()
    patch.setenv("CIDER_CACHE_DIR", str(root / "cache"))
    torch.set_num_threads(1)
    bert = tiny_bert_dir(root, vocab=30522)  # the default tokenizer's vocabulary, random weights
    csv = write_emotion_csv(root / "emotion.csv")
    data = root / "emotion.pkl"
    main(["data", "import-csv", str(csv), "--out", str(data), "--max-len", "12"])  # class names: categorical
    common = ["--data", str(data), "--task", "emotion", "--text-encoder", str(bert), "--freeze-text-encoder",
              "--batch-size", "16", "--layers", "1", "--heads", "2", "--device", "cpu", "--quiet"]
    main(["train", *common, "--out", str(root / "maci"), "--epochs", "2"])
    main(["train", *common, "--out", str(root / "plain"), "--epochs", "1", "--no-maci"])
    yield {"root": root, "bert": bert, "data": data, "maci": root / "maci", "plain": root / "plain"}
    patch.undo()


def test_import_stores_sorted_class_names_and_class_ids(emotion, capsys):
    with open(emotion["data"], "rb") as f:
        raw = pickle.load(f)
    assert raw["meta"] == {"label_convention": "categorical", "class_names": list(CLASSES)}
    assert "regression_labels" not in raw["train"]  # no sentiment score in an emotion file
    ds = load_dataset(emotion["data"])
    train = ds["train"]
    for row, label in enumerate(FIRST_SEEN):  # row order joy, sadness, anger, neutral ...
        assert train.labels("emotion")[row] == CLASSES.index(label)
        assert train.ids[row] == f"train0_{label}"
    assert np.bincount(ds["test"].labels("emotion")).tolist() == [4, 4, 4, 4]
    main(["data", "check", str(emotion["data"])])
    out = capsys.readouterr().out
    assert "label convention: categorical (4 classes: anger, joy, neutral, sadness; task emotion)" in out
    assert "emotion priors anger/joy/neutral/sadness" in out


@pytest.mark.parametrize("run", ["maci", "plain"])
def test_the_run_records_the_class_names(emotion, run):
    meta = json.loads((emotion[run] / "config.json").read_text())
    assert meta["class_names"] == list(CLASSES) and meta["label_convention"] == "categorical"
    assert meta["shapes"]["num_classes"] == 4 and meta["selection_metric"] == "f1_weighted"
    loaded = load_run(emotion[run], device="cpu")
    assert loaded.class_names == list(CLASSES)
    log = (emotion[run] / "train_log.csv").read_text().splitlines()
    assert "val_f1_weighted" in log[0].split(",") and len(log) == (3 if run == "maci" else 2)


def test_maci_works_over_the_four_classes(emotion):
    run = load_run(emotion["maci"], device="cpu")
    train = load_dataset(emotion["data"])["train"]
    labels = train.labels("emotion")
    head = run.model.head
    assert isinstance(head, MCMHead) and head.num_classes == 4
    assert np.allclose(head.priors.numpy(), np.bincount(labels, minlength=4) / train.n)
    means = head.class_means.numpy()
    assert means.shape[0] == 4 and np.isfinite(means).all()
    assert len({tuple(np.round(m, 5)) for m in means}) == 4  # one mean per class, from its own samples
    vocab = BiasVocabulary.from_dict(json.loads((emotion["maci"] / "maci.json").read_text())["vocabulary"])
    assert vocab.class_counts.shape == (len(vocab.token_ids), 4) and len(vocab.token_ids) > 0
    ids, mask = train.text_ids, train.text_mask.astype(bool)
    for k, token in enumerate(vocab.token_ids[:5]):  # counts per class, checked against a direct count
        direct = [int(((ids == token) & mask)[labels == c].sum()) for c in range(4)]
        assert vocab.class_counts[k].tolist() == direct
    # the planted emotion words are biased: each class's words appear in the vocabulary
    tok = load_tokenizer()
    words = set(tok.convert_ids_to_tokens(vocab.token_ids.tolist()))
    assert {"happy", "sad", "angry", "okay"} <= words
    # eval mode: uniform priors and averaged means, so the output is a distribution over 4 classes
    out = head(torch.randn(5, head.classifiers[0].in_features - 3 * head.feature_mlps[0][0].out_features))
    assert out.shape == (5, 4) and torch.allclose(out.exp().sum(dim=1), torch.ones(5), atol=1e-5)


def test_eval_report_has_per_class_f1_and_a_confusion_matrix(emotion):
    out = emotion["root"] / "report"
    main(["eval", "--run", str(emotion["maci"]), "--data", str(emotion["data"]), "--out", str(out),
          "--rates", "0,0.5", "--seeds", "0,1", "--device", "cpu", "--quiet"])
    res = json.loads((out / "results.json").read_text())
    assert list(res["metrics"]) == list(METRIC_NAMES["emotion"]) and res["task"] == "emotion"
    assert set(res["auilc"]) == set(METRIC_NAMES["emotion"])
    classes = res["classes"]
    assert classes["names"] == list(CLASSES) and classes["confusion_point"] == "0.0"
    counts = np.array(classes["confusion"])
    assert counts.shape == (4, 4) and counts.sum(axis=1).tolist() == [4, 4, 4, 4]  # rows: the true test classes
    acc0 = res["metrics"]["acc"]["mean"][0]
    assert np.trace(counts) / counts.sum() * 100 == pytest.approx(acc0)
    # weighted F1 is the per-class F1 weighted by each class's 4 test samples (NaN: no sample, no prediction)
    f1 = np.array([classes["per_class_f1"][n]["mean"][0] for n in CLASSES], dtype=np.float64)
    assert np.nanmean(np.where(np.isnan(f1), 0.0, f1)) == pytest.approx(res["metrics"]["f1_weighted"]["mean"][0])
    assert all(len(classes["per_class_f1"][n]["per_seed"]) == 2 for n in CLASSES)
    md = (out / "results.md").read_text()
    assert "## Per-class F1" in md and "## Confusion matrix (rate 0.0" in md
    assert "| rate | anger | joy | neutral | sadness |" in md and "| **sadness** |" in md
    assert (out / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"


def test_plain_run_evaluates_with_the_same_protocol(emotion):
    run = load_run(emotion["plain"], device="cpu")
    data = load_dataset(emotion["data"])
    res = evaluate(run, data, mode="SMM", seeds=[0], progress=False)
    assert res.tau_selection.startswith("none") and res.points[0] == "LAV" and res.confusion_point == "LAV"
    assert set(res.per_class_f1) == set(CLASSES)
    # per-class F1 at LAV agrees with scikit-learn on the same predictions
    pred = run.predict(data, "test")
    y = data["test"].labels("emotion")
    expected = 100 * f1_score(y, pred.log_probs.argmax(1), average=None, labels=range(4), zero_division=0)
    got = np.array([res.per_class_f1[n].mean[0] for n in CLASSES])
    assert np.allclose(np.nan_to_num(got), expected)
    assert task_metrics("emotion", pred.log_probs, y)["acc"] == pytest.approx(res.metrics["acc"].mean[0])


def test_confusion_and_per_class_f1_by_hand():
    labels = np.array([0, 0, 1, 1, 2, 3])
    scores = np.eye(4)[[0, 1, 1, 1, 0, 3]]  # predictions 0, 1, 1, 1, 0, 3
    counts = confusion(scores, labels)
    assert counts.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]]
    f1 = per_class_f1(counts)
    assert f1[0] == pytest.approx(100 * 2 / 4) and f1[1] == pytest.approx(100 * 4 / 5)
    assert f1[2] == 0.0 and f1[3] == 100.0
    assert np.isnan(per_class_f1(confusion(np.eye(3)[[0, 1]], np.array([0, 1])))[2])  # class 2: never seen
    m = task_metrics("emotion", scores, labels)
    assert m["acc"] == pytest.approx(100 * 4 / 6)
    assert m["f1_macro"] == pytest.approx((50 + 80 + 0 + 100) / 4)
    assert m["f1_weighted"] == pytest.approx((2 * 50 + 2 * 80 + 0 + 100) / 6)


def test_runs_refuse_data_that_does_not_fit(emotion, tmp_path, capsys):
    raw = pickle.loads(emotion["data"].read_bytes())
    raw["meta"]["class_names"] = ["anger", "fear", "joy", "sadness"]
    other = tmp_path / "other.pkl"
    save_dataset(dataset_from_dict(raw, source=str(other)), other)
    run = load_run(emotion["plain"], device="cpu")
    with pytest.raises(RunError, match=r"classes \['anger', 'fear', 'joy', 'sadness'\] do not match the run's"):
        evaluate(run, load_dataset(other), rates=[0.0], seeds=[0], progress=False)
    # token ids of another tokenizer: `cider eval` stops with one line naming the file and the encoder
    raw = pickle.loads(emotion["data"].read_bytes())
    raw["test"]["text_bert"][1, 0, 2] = 40_000
    far = tmp_path / "far.pkl"
    save_dataset(dataset_from_dict(raw, source=str(far)), far)
    with pytest.raises(SystemExit) as e:
        main(["eval", "--run", str(emotion["plain"]), "--data", str(far), "--out", str(tmp_path / "rep"),
              "--rates", "0", "--seeds", "0", "--device", "cpu", "--quiet"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(far) in err[0] and "text encoder 'tiny-bert'" in err[0]
    # a sentiment task on emotion labels
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", str(emotion["data"]), "--out", str(tmp_path / "r"), "--task", "binary",
              "--text-encoder", str(emotion["bert"]), "--device", "cpu", "--quiet"])
    assert e.value.code == 2
    assert "task 'binary' does not fit the label convention categorical" in capsys.readouterr().err
