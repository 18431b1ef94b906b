"""The evaluation protocol, its report files and the CLI around train/eval."""

import json

import numpy as np
import pytest

from cider_mer.cli import main
from cider_mer.config import TrainConfig
from cider_mer.data.dataset import load_dataset
from cider_mer.evaluation.protocol import evaluate
from cider_mer.evaluation.report import write_report
from cider_mer.runs import RunError, load_run
from cider_mer.training.trainer import train

from helpers import tiny_bert_dir, tiny_data_file


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalrun")
    import os

    os.environ["CIDER_CACHE_DIR"] = str(root / "cache")
    bert, data = tiny_bert_dir(root), tiny_data_file(root)
    cfg = TrainConfig(text_encoder=str(bert), freeze_text_encoder=True, epochs=2, batch_size=16, eval_batch_size=32,
                      model_config={"layers": 1, "heads": 2}, device="cpu", seed=3)
    train(cfg, load_dataset(data), root / "run", progress=False)
    return {"root": root, "bert": bert, "data": data, "run": root / "run"}


def test_results_schema_and_files(trained, tmp_path):
    run = load_run(trained["run"], device="cpu")
    ds = load_dataset(trained["data"])
    results = evaluate(run, ds, rates=[0.0, 0.5, 1.0], seeds=[0, 1], progress=False)
    res = results.to_dict()  # the results.json schema
    assert res["missing_mode"] == "RMFM" and res["rates"] == [0.0, 0.5, 1.0]
    for name in ("non0_acc2", "non0_f1", "has0_acc2", "acc3"):
        m = res["metrics"][name]
        assert len(m["mean"]) == len(m["std"]) == 3
        assert all(0.0 <= v <= 100.0 for v in m["mean"])
        assert np.isclose(m["mean"][0], np.mean(np.array(m["per_seed"])[:, 0]))
    assert set(res["auilc"]) >= {"non0_acc2", "non0_f1"}
    # AUILC is the trapezoid over the rates of the per-seed curves, averaged
    ps = np.array(res["metrics"]["non0_acc2"]["per_seed"])
    expected = np.mean([0.5 * (r[0] + r[1]) * 0.5 + 0.5 * (r[1] + r[2]) * 0.5 for r in ps])
    assert res["auilc"]["non0_acc2"] == pytest.approx(expected)
    assert res["config"]["train"]["task"] == "binary"
    assert "validation" in res["tau_selection"] and len(res["tau"]["mean"]) == 3
    # rate 0 is complete data: every seed gives the same value
    assert np.allclose(ps[:, 0], ps[0, 0])
    paths = write_report(results, tmp_path / "rep")
    back = json.loads(paths["json"].read_text())
    assert back["metrics"]["non0_acc2"]["mean"] == res["metrics"]["non0_acc2"]["mean"]
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    assert "AUILC" in paths["md"].read_text() and paths["csv"].read_text().startswith("point,")


def test_smm_table_has_the_six_subsets(trained):
    run = load_run(trained["run"], device="cpu")
    res = evaluate(run, load_dataset(trained["data"]), mode="SMM", seeds=[0], progress=False).to_dict()
    assert res["points"] == ["LAV", "L", "A", "V", "LA", "LV", "AV"] and res["auilc"] == {}


def test_oracle_tau_is_labelled_and_never_below_validation_choice(trained):
    run = load_run(trained["run"], device="cpu")
    ds = load_dataset(trained["data"])
    val = evaluate(run, ds, rates=[0.0, 0.3], seeds=[0], progress=False).to_dict()
    ora = evaluate(run, ds, rates=[0.0, 0.3], seeds=[0], oracle_tau=True, progress=False).to_dict()
    assert ora["tau_selection"].startswith("oracle")
    assert all(o >= v - 1e-9 for o, v in zip(ora["metrics"]["non0_acc2"]["mean"], val["metrics"]["non0_acc2"]["mean"]))


def test_bad_run_dirs_and_mismatched_data(trained, tmp_path):
    with pytest.raises(RunError, match="no such run directory"):
        load_run(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(RunError, match="model.safetensors' is missing"):
        load_run(tmp_path / "half")
    other = tiny_data_file(tmp_path, "other.pkl", da=6)
    run = load_run(trained["run"], device="cpu")
    with pytest.raises(RunError, match=r"audio_dim: run 5, file 6"):
        evaluate(run, load_dataset(other), progress=False).to_dict()
    # same dims, other content and lengths: cross-dataset evaluation works
    cross = tiny_data_file(tmp_path, "cross.pkl", seed=5, L=14, Ta=30, Tv=16)
    res = evaluate(run, load_dataset(cross), rates=[0.0, 1.0], seeds=[0], progress=False).to_dict()
    assert res["data"]["file"] == "cross.pkl"


def test_cli_train_and_eval(trained, tmp_path, capsys):
    main(["train", "--data", str(trained["data"]), "--out", str(tmp_path / "cli_run"), "--epochs", "1",
          "--text-encoder", str(trained["bert"]), "--freeze-text-encoder", "--batch-size", "16", "--layers", "1",
          "--heads", "2", "--quiet", "--device", "cpu"])
    cfg = json.loads((tmp_path / "cli_run" / "config.json").read_text())
    assert cfg["train"]["epochs"] == 1 and cfg["model_config"]["layers"] == 1 and cfg["versions"]["torch"]
    main(["eval", "--run", str(tmp_path / "cli_run"), "--data", str(trained["data"]), "--out", str(tmp_path / "rep"),
          "--rates", "0:1:0.5", "--seeds", "0", "--quiet", "--device", "cpu"])
    res = json.loads((tmp_path / "rep" / "results.json").read_text())
    assert res["rates"] == [0.0, 0.5, 1.0]
    with pytest.raises(SystemExit) as e:
        main(["eval", "--run", str(tmp_path / "missing"), "--data", str(trained["data"]), "--out", str(tmp_path / "x")])
    assert e.value.code == 2
    assert "no such run directory" in capsys.readouterr().err


def test_tau_is_chosen_without_the_test_labels(trained):
    """Scrambling every test label changes the metrics but not one tau: tau comes from validation."""
    run = load_run(trained["run"], device="cpu")
    ds = load_dataset(trained["data"])
    res = evaluate(run, ds, rates=[0.0, 0.4, 0.8], seeds=[0, 1], progress=False).to_dict()
    test = ds["test"]
    rng = np.random.default_rng(0)
    test.regression_labels = rng.uniform(-3, 3, size=test.n).astype(np.float32)
    test.classification_labels = rng.integers(0, 3, size=test.n)
    scrambled = evaluate(run, ds, rates=[0.0, 0.4, 0.8], seeds=[0, 1], progress=False).to_dict()
    assert scrambled["tau"]["per_seed"] == res["tau"]["per_seed"]
    assert scrambled["metrics"]["non0_acc2"]["per_seed"] != res["metrics"]["non0_acc2"]["per_seed"]


def test_selection_and_testing_run_at_the_runs_precision(trained, monkeypatch):
    """A bf16 run (CUDA autocast) must choose its checkpoint and tau and be tested at the same precision:
    every prediction of validation, evaluation and the MACI plot gets the run's autocast dtype."""
    import torch

    import cider_mer.inference as inference
    import cider_mer.runs as runs
    from cider_mer.plots.maci import maci_steps
    from cider_mer.training.trainer import validate

    monkeypatch.setattr(runs, "autocast_dtype_for", lambda precision, device: torch.bfloat16)
    seen = []
    real = inference.predict

    def spy(*args, **kwargs):
        seen.append(kwargs.get("autocast_dtype", args[6] if len(args) > 6 else None))
        return real(*args, **kwargs)

    monkeypatch.setattr(inference, "predict", spy)
    run = load_run(trained["run"], device="cpu")
    ds = load_dataset(trained["data"])
    validate(run, run.split(ds, "valid"))
    evaluate(run, ds, rates=[0.0, 0.5], seeds=[0], progress=False)
    maci_steps(run, ds, 0)
    assert len(seen) >= 6 and all(dtype is torch.bfloat16 for dtype in seen)


def test_oracle_scores_each_tau_with_the_runs_counterfactual_centre():
    """The oracle's values must be those of the scores it reports (centre included)."""
    import torch

    from cider_mer.evaluation.protocol import best_over_tau
    from cider_mer.inference import Debiaser, Predictions
    from cider_mer.metrics import task_metrics

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=60)
    log_probs = np.log(rng.dirichlet(np.ones(3), size=60)).astype(np.float32)
    cf = np.log(rng.dirichlet(np.ones(3), size=60)).astype(np.float32)
    pred = Predictions(log_probs, cf)
    centred = Debiaser("binary", torch.tensor([5]), cf_centre=np.array([-0.2, -3.0, -1.5], dtype=np.float32))
    plain = Debiaser("binary", torch.tensor([5]))
    values, taus = best_over_tau("binary", centred, pred, labels)
    for metric in ("non0_acc2", "acc3"):
        assert values[metric] == pytest.approx(task_metrics("binary", centred.scores(pred, taus[metric]), labels)[metric])
    # a large centre on the neutral class changes which scores (hence values) the oracle sees
    assert best_over_tau("binary", plain, pred, labels)[0] != values
