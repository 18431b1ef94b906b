"""``cider predict`` and ``Run.predict_inputs``: predictions on a dataset split, a transcripts CSV,
recordings and Python lists, with MACI's validation tau, modality presence and what-if masks.

A tiny run is trained on a dataset imported from a CSV with ``.npz`` features, tokenised with the
default tokenizer that is saved next to a tiny random BERT (so raw texts tokenise exactly as the
dataset's)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cider_mer.config import TrainConfig
from cider_mer.data.dataset import MerDataset, load_dataset
from cider_mer.data.import_csv import import_csv
from cider_mer.errors import CiderError
from cider_mer.maci.tau import debias
from cider_mer.metrics import task_metrics
from cider_mer.missing import EvalMissingness
from cider_mer.models.interface import KeepMasks
from cider_mer.predict import PredictError, WhatIf, predict_dataset
from cider_mer.runs import RunError, load_run
from cider_mer.text.encoder import load_tokenizer
from cider_mer.training.trainer import train

from conftest import REPO, SHARED
from helpers import run_cli, tiny_bert_dir

WORDS = "good bad great terrible movie plot actor boring fun sad happy really not very slow funny".split()
SIZES = {"train": 36, "valid": 12, "test": 12}
T_A, D_A, T_V, D_V = 20, 5, 24, 7
BINARY_COLUMNS = ["id", "pred", "p_negative", "p_neutral", "p_positive", "pred_debiased", "p_debiased_negative",
                  "p_debiased_neutral", "p_debiased_positive", "has_text", "has_audio", "has_vision"]
README_RUN_PLACEHOLDER = "runs/mine"  # the README snippet's run directory, replaced by a tiny run here


def write_npz(path: Path, ids, steps: int, dim: int, rng: np.random.Generator, full: bool = False) -> None:
    lengths = np.full(len(ids), steps) if full else rng.integers(1, steps + 1, size=len(ids))
    feats = rng.normal(size=(len(ids), steps, dim)).astype(np.float32)
    feats *= (np.arange(steps)[None, :] < lengths[:, None])[..., None]
    np.savez(path, ids=np.array(ids, dtype=str), features=feats, lengths=lengths.astype(np.int64))


def write_transcripts(path: Path, rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for mode, n in SIZES.items():
        for i in range(n):
            text = " ".join(rng.choice(WORDS, size=rng.integers(2, 9)))
            rows.append({"id": f"{mode}_{i}", "text": text, "label": float(np.round(rng.uniform(-3, 3), 1)),
                         "mode": mode})
    df = pd.DataFrame(rows)
    df.loc[::7, "label"] = 0.0
    df.to_csv(path, index=False)
    return df


def train_tiny(data, bert: Path, out: Path, **kw) -> Path:
    cfg = TrainConfig(text_encoder=str(bert), freeze_text_encoder=True, epochs=2, batch_size=12, eval_batch_size=5,
                      model_config={"layers": 1, "heads": 2}, device="cpu", seed=3, **kw)
    train(cfg, data, out, progress=False)
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    os.environ["CIDER_CACHE_DIR"] = str(root / "cache")
    torch.set_num_threads(1)
    bert = tiny_bert_dir(root, vocab=30522)
    load_tokenizer().save_pretrained(bert)  # the run's tokenizer lives with its (tiny) encoder
    rng = np.random.default_rng(0)
    df = write_transcripts(root / "t.csv", rng)
    write_npz(root / "audio.npz", df["id"], T_A, D_A, rng)
    write_npz(root / "vision.npz", df["id"], T_V, D_V, rng)
    import_csv(root / "t.csv", root / "d.pkl", text_encoder=str(bert), max_len=16,
               audio_features=root / "audio.npz", vision_features=root / "vision.npz")
    data = load_dataset(root / "d.pkl")
    run = train_tiny(data, bert, root / "run")
    return {"root": root, "bert": bert, "csv": root / "t.csv", "df": df, "data": root / "d.pkl", "run": run}


cli = run_cli  # cider ARGV in-process: (exit code, stdout, stderr)


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def probs(df: pd.DataFrame, prefix: str = "p_") -> np.ndarray:
    return df[[f"{prefix}{c}" for c in ("negative", "neutral", "positive")]].to_numpy()


def test_predict_data_matches_run_predict_and_eval(env, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    code, stdout, err = cli(["predict", "--run", env["run"], "--data", env["data"], "--split", "test", "--out", out,
                             "--device", "cpu", "--quiet"], capsys)
    assert code == 0, err
    df = pd.read_csv(out)
    assert list(df.columns) == BINARY_COLUMNS + ["label"]
    p, pd_ = probs(df), probs(df, "p_debiased_")
    assert np.allclose(p.sum(axis=1), 1.0, atol=1e-6) and np.allclose(pd_.sum(axis=1), 1.0, atol=1e-6)
    names = np.array(["negative", "neutral", "positive"])
    assert (df["pred"].to_numpy() == names[p.argmax(axis=1)]).all()
    assert (df["pred_debiased"].to_numpy() == names[pd_.argmax(axis=1)]).all()
    assert df[["has_text", "has_audio", "has_vision"]].to_numpy().all()

    run = load_run(env["run"], device="cpu")
    data = load_dataset(env["data"])
    ref = run.predict(data, "test")
    assert df["id"].tolist() == list(data["test"].ids)
    assert np.allclose(p, softmax(ref.log_probs), atol=1e-6)
    tau = run.val_tau
    assert tau == run.checkpoint["val_tau"] and 0.0 <= tau <= 3.0
    assert np.allclose(pd_, softmax(debias(ref.log_probs, ref.cf_log_probs, tau)), atol=1e-6)

    # the metrics printed are cider eval's: the same numbers at rate 0 with the validation tau
    from cider_mer.evaluation.protocol import evaluate

    labels = data["test"].labels("binary")
    factual = task_metrics("binary", ref.log_probs, labels)
    debiased = task_metrics("binary", debias(ref.log_probs, ref.cf_log_probs, tau), labels)
    assert "Acc2 (Non0)" in stdout
    rows = {line.split("|")[1].strip().split(" ")[0]: line for line in stdout.splitlines() if line.startswith("| ")}
    assert f"{factual['non0_acc2']:.2f}" in rows["factual"] and f"{debiased['acc3']:.2f}" in rows["debiased"]
    at_zero = evaluate(run, data, split="test", rates=[0.0], seeds=[0], progress=False)
    assert at_zero.metrics["non0_acc2"].mean[0] == pytest.approx(debiased["non0_acc2"])
    assert at_zero.tau_mean[0] == pytest.approx(tau)

    # JSON: the same rows as records
    out_json = tmp_path / "pred.json"
    code, _, err = cli(["predict", "--run", env["run"], "--data", env["data"], "--out", out_json, "--device", "cpu",
                        "--quiet"], capsys)
    assert code == 0, err
    records = json.loads(out_json.read_text())
    assert [r["id"] for r in records] == df["id"].tolist()
    assert np.allclose([[r[f"p_{c}"] for c in names] for r in records], p, atol=1e-6)


def test_predict_csv_without_labels(env, tmp_path, capsys):
    df = env["df"][env["df"]["mode"] == "test"][["id", "text"]]
    csv = tmp_path / "new.csv"
    df.to_csv(csv, index=False)
    rng = np.random.default_rng(1)
    with_audio = list(df["id"][::2])  # every other clip has audio; nobody has vision
    write_npz(tmp_path / "a.npz", with_audio, T_A + 6, D_A, rng, full=True)  # longer than the run's window
    out = tmp_path / "p.csv"
    code, stdout, err = cli(["predict", "--run", env["run"], "--csv", csv, "--audio-features", tmp_path / "a.npz",
                             "--out", out, "--device", "cpu", "--quiet"], capsys)
    assert code == 0, err
    pred = pd.read_csv(out)
    assert list(pred.columns) == BINARY_COLUMNS  # no labels: no label column
    assert pred["has_audio"].tolist() == [i in with_audio for i in df["id"]]
    assert not pred["has_vision"].any() and pred["has_text"].all()
    assert "Acc2" not in stdout and "cut to 20" in stdout and f"{len(df) - len(with_audio)} of {len(df)} ids" in stdout

    # the same through the Python API
    run = load_run(env["run"], device="cpu")
    with np.load(tmp_path / "a.npz") as z:
        table = dict(zip(z["ids"], z["features"]))
    api = run.predict_inputs(texts=list(df["text"]), audio=[table.get(i) for i in df["id"]], ids=list(df["id"]))
    assert np.allclose(api.probs, probs(pred), atol=1e-6)
    assert api.to_pandas()["pred"].tolist() == pred["pred"].tolist()


def test_what_if_missing_rate_one(env, tmp_path, capsys):
    base, what_if = tmp_path / "base.csv", tmp_path / "whatif.csv"
    for out, extra in ((base, []), (what_if, ["--missing-mode", "RMFM", "--rate", "1.0", "--seed", "3"])):
        code, stdout, err = cli(["predict", "--run", env["run"], "--data", env["data"], "--out", out,
                                 "--device", "cpu", "--quiet", *extra], capsys)
        assert code == 0, err
    assert "what-if: RMFM" in stdout
    complete, missing = pd.read_csv(base), pd.read_csv(what_if)
    assert complete[["has_text", "has_audio", "has_vision"]].to_numpy().all()
    assert not missing[["has_text", "has_audio", "has_vision"]].to_numpy().any()
    assert not np.allclose(probs(complete), probs(missing), atol=1e-4)
    # the masks are evaluation's: equal to Run.predict with EvalMissingness at rate 1.0, seed 3
    run = load_run(env["run"], device="cpu")
    data = load_dataset(env["data"])
    split = run.split(data, "test")
    keep = EvalMissingness("RMFM", *split.padding_masks(), seed=3, aligned=data.aligned).masks(1.0)
    assert np.allclose(probs(missing), softmax(run.predict(data, "test", keep).log_probs), atol=1e-6)


def test_api_missing_audio_and_equality_with_dataset(env):
    run = load_run(env["run"], device="cpu")
    data = load_dataset(env["data"])
    test = data["test"]
    audio = [test.audio[k, :n] for k, n in enumerate(test.audio_lengths)]
    vision = [test.vision[k, :n] for k, n in enumerate(test.vision_lengths)]
    texts = list(test.raw_text)
    full = run.predict_inputs(texts=texts, audio=audio, vision=vision, ids=list(test.ids),
                              labels=test.regression_labels)
    via_data = predict_dataset(run, data, "test")
    assert np.allclose(full.scores, via_data.scores, atol=1e-5)
    assert np.allclose(full.debiased_scores, via_data.debiased_scores, atol=1e-5)
    assert full.present.all() and list(full.ids) == list(test.ids)
    assert np.array_equal(full.labels, test.labels("binary"))
    assert full.metrics()["factual"]["acc3"] == pytest.approx(via_data.metrics()["factual"]["acc3"])
    with pytest.raises(ValueError):
        full.scores[0, 0] = 1.0  # the table is read-only

    # audio=None: missing as training masks a modality -- zero frames under a full window, none kept
    no_audio = run.predict_inputs(texts=texts, audio=None, vision=vision, batch_size=4)
    assert not no_audio.present[:, 1].any() and no_audio.present[:, [0, 2]].all()
    assert no_audio.labels is None and list(no_audio.ids) == [str(i) for i in range(len(texts))]
    windowed = dataclasses.replace(test, audio_lengths=np.full(test.n, data.audio_len))
    masked_data = MerDataset({**data.splits, "test": windowed}, data.aligned)
    split = run.split(masked_data, "test")
    keep = KeepMasks(split.text_mask > 0, torch.zeros_like(split.audio_mask, dtype=torch.bool), split.vision_mask > 0)
    ref = run.predict(masked_data, "test", keep)
    assert np.allclose(no_audio.scores, ref.log_probs, atol=1e-5)
    assert not np.allclose(no_audio.scores, full.scores, atol=1e-4)


def test_debiasing_reads_the_stored_validation_tau(env, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(env["run"], run_dir)
    run = load_run(run_dir, device="cpu")
    run.save_weights({"epoch": 1, "val_tau": 0.7})
    table = predict_dataset(load_run(run_dir, device="cpu"), load_dataset(env["data"]), "test")
    ref = run.predict(load_dataset(env["data"]), "test")
    assert table.tau == 0.7
    assert np.allclose(table.debiased_scores, debias(ref.log_probs, ref.cf_log_probs, 0.7), atol=1e-5)
    assert not np.allclose(table.debiased_scores, table.scores, atol=1e-4)
    run.save_weights({"epoch": 1})  # weights saved by hand, without a validation tau
    with pytest.raises(RunError, match=r"model.safetensors: holds no validation tau"):
        predict_dataset(load_run(run_dir, device="cpu"), load_dataset(env["data"]), "test")


def test_debiasing_options_reach_predictions(env, tmp_path):
    """A run with the valid counterfactual (centred) and a trained bias branch predicts as the run's
    own Debiaser scores: the training log-prior added back, the centred subtraction at the stored tau."""
    data = load_dataset(env["data"])
    run_dir = train_tiny(data, env["bert"], tmp_path / "run", cf_fill="unk", cf_other_modalities="absent",
                         cf_centre=True, debias="poe")
    run = load_run(run_dir, device="cpu")
    assert run.cf_centre is not None and run.debiaser.log_prior is not None
    run.save_weights({"epoch": 1, "val_tau": 0.6})
    run = load_run(run_dir, device="cpu")
    table = predict_dataset(run, data, "test")
    ref = run.predict(data, "test")
    assert np.allclose(table.scores, ref.log_probs, atol=1e-5)
    assert np.allclose(table.debiased_scores, run.debiaser.scores(ref, 0.6), atol=1e-5)
    assert not np.allclose(table.debiased_scores, debias(ref.log_probs, ref.cf_log_probs, 0.6), atol=1e-4)


def test_aligned_run_takes_one_frame_per_token(env, tmp_path):
    """Aligned runs: frames are per token position (window L), valid as far as the text goes."""
    from cider_mer.data.dataset import dataset_from_dict, save_dataset
    from cider_mer.data.import_csv import tokenize
    from cider_mer.runs import Run

    from conftest import make_dataset_dict

    raw = make_dataset_dict(seed=2, sizes=(24, 8, 6), aligned=True)
    texts = [" ".join(np.random.default_rng(k).choice(WORDS, size=2 + k)) for k in range(6)]
    raw["test"]["text_bert"] = tokenize(load_tokenizer(), texts, 12)
    raw["test"]["audio"] *= raw["test"]["text_bert"][:, 1, :, None]
    raw["test"]["vision"] *= raw["test"]["text_bert"][:, 1, :, None]
    save_dataset(dataset_from_dict(raw), tmp_path / "aligned.pkl")
    data = load_dataset(tmp_path / "aligned.pkl")
    cfg = TrainConfig(text_encoder=str(env["bert"]), freeze_text_encoder=True, model_config={"layers": 1, "heads": 2},
                      device="cpu", seed=1)
    run = Run.create(cfg, data, tmp_path / "run")
    run.save_config()
    run.save_weights({"epoch": 0, "val_tau": 0.4})
    run = load_run(tmp_path / "run", device="cpu")
    test = data["test"]
    table = run.predict_inputs(texts=texts, audio=list(test.audio), vision=list(test.vision))
    ref = run.predict(data, "test")
    assert np.allclose(table.scores, ref.log_probs, atol=1e-5) and table.present.all()
    half = run.predict_inputs(texts=texts, audio=[a[:3] for a in test.audio], vision=list(test.vision))
    assert not np.allclose(half.scores, table.scores, atol=1e-5)  # frames past 3 tokens are zeros now


def test_api_rejects_bad_inputs(env):
    run = load_run(env["run"], device="cpu")
    with pytest.raises(PredictError, match=r"audio\[1\] \(id 'b'\): expected frames of shape \(T, 5\)"):
        run.predict_inputs(texts=["good", "bad"], audio=[np.zeros((3, 5)), np.zeros((3, 4))], ids=["a", "b"])
    with pytest.raises(PredictError, match="expected a list of strings"):
        run.predict_inputs(texts="one string")
    with pytest.raises(PredictError, match="expected 2 frame arrays"):
        run.predict_inputs(texts=["good", "bad"], vision=[np.zeros((3, 7))])
    with pytest.raises(CiderError, match="unknown SMM subset '0.5'"):
        run.predict_inputs(texts=["good"], missing=WhatIf("SMM", 0.5))
    with pytest.raises(PredictError, match="missing rate for RMFM: expected a number"):
        WhatIf("RMFM", "LA")


def test_regression_run_predicts_scores(env, tmp_path):
    run = load_run(train_tiny(load_dataset(env["data"]), env["bert"], tmp_path / "reg", task="regression",
                              head="linear", counterfactual=False), device="cpu")
    table = run.predict_inputs(texts=["good fun", "terrible"], labels=[1.5, -2.0])
    frame = table.to_pandas()
    assert list(frame.columns) == ["id", "score", "has_text", "has_audio", "has_vision", "label"]
    assert table.probs is None and table.debiased_scores is None and table.tau is None
    assert np.array_equal(frame["score"].to_numpy(), table.scores[:, 0])
    assert table.metrics()["factual"]["mae"] == pytest.approx(np.abs(table.scores[:, 0] - [1.5, -2.0]).mean(), rel=1e-5)


def test_bad_run_and_output_exit_2(env, tmp_path, capsys):
    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    cases = [
        (["--run", not_a_run, "--data", env["data"], "--out", tmp_path / "p.csv"], str(not_a_run),
         "not a finished run"),
        (["--run", env["run"], "--data", env["data"], "--out", tmp_path / "p.txt"], str(tmp_path / "p.txt"),
         "suffix '.txt'"),
        (["--run", env["run"], "--csv", tmp_path / "none.csv", "--out", tmp_path / "p.csv"], str(tmp_path / "none.csv"),
         "no such file"),
    ]
    for argv, named, why in cases:
        code, _, err = cli(["predict", *argv, "--device", "cpu", "--quiet"], capsys)
        lines = error_lines(err)
        assert code == 2 and len(lines) == 1 and named in lines[0] and why in lines[0], err
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "p.txt").exists()


def test_readme_snippet_runs(env):
    """The README's "Your own recordings" Python snippet, run against the tiny run."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- snippet:predict -->\s*```python\n(.*?)```", text, flags=re.S)
    assert match, "README lacks the marked predict snippet"
    code = match.group(1)
    assert README_RUN_PLACEHOLDER in code
    namespace: dict = {}
    exec(compile(code.replace(README_RUN_PLACEHOLDER, str(env["run"])), "README.md", "exec"), namespace)
    table = namespace["table"]
    assert table.n == 2 and np.allclose(table.probs.sum(axis=1), 1.0, atol=1e-6)
    assert not table.present[:, 1:].any()  # the snippet gives texts only


# ---------------------------------------------------------------------------------------------- recordings

MEDIA = SHARED / "data" / "media"
WAV = MEDIA / "03bSnISJMiM_1.wav"
MP4 = MEDIA / "Oz06ZWiO20M_6.mp4"


def needs_media_extra():
    for name in ("librosa", "soundfile", "av", "mediapipe"):
        pytest.importorskip(name)


@pytest.mark.parametrize("case", ["text_as_mp4", "empty_wav", "no_match"])
def test_bad_recordings_exit_2(env, tmp_path, capsys, case):
    """Through `cider predict --media-dir` (transcripts without label/mode), one `error:` line naming
    the file; `features extract` and `import-csv` have their own tests of the same files."""
    needs_media_extra()
    media = tmp_path / "media"
    media.mkdir()
    if case == "text_as_mp4":
        bad = media / "clip_1.mp4"
        bad.write_text("this is text, not a video\n")
    elif case == "empty_wav":
        bad = media / "clip_1.wav"
        bad.write_bytes(b"")
    else:
        (media / "other_9.wav").write_bytes(b"")
    transcripts = tmp_path / "t.csv"
    transcripts.write_text("id,text\nclip_1,really good\n")
    named = str(transcripts) if case == "no_match" else str(bad)
    code, _, err = cli(["predict", "--run", env["run"], "--media-dir", media, "--transcripts", transcripts,
                        "--out", tmp_path / "p.csv", "--device", "cpu", "--quiet"], capsys)
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and named in lines[0], err
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.slow
def test_recordings_end_to_end(tmp_path, capsys):
    """Real clips: import with transcripts (extraction), train one tiny epoch, predict a clip."""
    needs_media_extra()
    if not (WAV.is_file() and MP4.is_file()):
        pytest.skip("real media clips absent")
    os.environ["CIDER_CACHE_DIR"] = str(tmp_path / "cache")
    bert = tiny_bert_dir(tmp_path, vocab=30522)
    load_tokenizer().save_pretrained(bert)
    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(WAV, media / WAV.name)
    shutil.copy(MP4, media / MP4.name)
    transcripts = tmp_path / "t.csv"
    transcripts.write_text(f"id,text,label,mode\n{WAV.stem},anyhow it was really good,2.4,train\n"
                           f"{MP4.stem},i did not like it much,-0.8,valid\nno_media_1,it was fine,0.0,test\n")
    data = tmp_path / "d.pkl"
    code, _, err = cli(["data", "import-csv", transcripts, "--out", data, "--media-dir", media, "--text-encoder", bert,
                        "--max-len", "12"], capsys)
    assert code == 0, err
    code, _, err = cli(["train", "--data", data, "--out", tmp_path / "run", "--text-encoder", bert,
                        "--freeze-text-encoder", "--epochs", "1", "--layers", "1", "--heads", "2", "--device", "cpu",
                        "--quiet"], capsys)
    assert code == 0, err
    new = tmp_path / "new.csv"
    new.write_text(f"id,text\n{MP4.stem},i did not like it much\n")
    out = tmp_path / "p.json"
    code, stdout, err = cli(["predict", "--run", tmp_path / "run", "--media-dir", media, "--transcripts", new,
                             "--out", out, "--device", "cpu", "--quiet"], capsys)
    assert code == 0, err
    (record,) = json.loads(out.read_text())
    assert list(record) == BINARY_COLUMNS
    assert record["id"] == MP4.stem and record["has_audio"] and record["has_vision"] and record["has_text"]
    assert record["pred"] == max(("negative", "neutral", "positive"), key=lambda c: record[f"p_{c}"])
    assert "1 media file(s)" in stdout  # the wav matched no id of the new transcripts
