"""``cider benchmark``: rows and training data, the tables it writes, resuming and refusing (tiny encoder)."""

from __future__ import annotations

import csv
import json
import statistics

import numpy as np
import pytest

from cider_mer.benchmark.plan import build_rows, shares_training_data
from cider_mer.benchmark.table import BenchmarkTable
from cider_mer.config import TrainConfig
from cider_mer.data.dataset import dataset_from_dict, save_dataset
from cider_mer.errors import ConfigError
from cider_mer.io_utils import json_normal

from conftest import make_dataset_dict
from helpers import tiny_bert_dir

SIZES = (36, 16, 16)
RATES = [0.0, 0.5, 1.0]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny IID/OOD pair sharing train/valid (only the test split differs), a third file with its
    own train/valid, and a --config pointing the text encoder at a tiny random BERT."""
    root = tmp_path_factory.mktemp("bench")
    iid = make_dataset_dict(seed=0, sizes=SIZES)
    ood = {**iid, "test": make_dataset_dict(seed=1, sizes=SIZES)["test"]}
    paths = {"iid": root / "iid.pkl", "ood": root / "ood.pkl", "other": root / "other.pkl"}
    for name, d in (("iid", iid), ("ood", ood), ("other", make_dataset_dict(seed=2, sizes=SIZES))):
        save_dataset(dataset_from_dict(d), paths[name])
    base = dict(text_encoder=str(tiny_bert_dir(root)), freeze_text_encoder=True, epochs=2, patience=5, batch_size=16,
                eval_batch_size=32, model_config={"layers": 1, "heads": 2}, seed=5, device="cpu")
    config, other_lr = root / "base.json", root / "base_lr.json"
    config.write_text(json.dumps(base))
    other_lr.write_text(json.dumps({**base, "lr": 5e-4}))
    return {"root": root, "config": config, "config_lr": other_lr, "base": base, **paths}


@pytest.fixture(autouse=True)
def small_cpu(tmp_path, monkeypatch, one_torch_thread):
    monkeypatch.setenv("CIDER_CACHE_DIR", str(tmp_path / "cache"))


def _args(env, out, ood="ood", epochs=2, models="cider,late_fusion", task="binary", config="config"):
    return ["benchmark", "--iid", str(env["iid"]), "--ood", str(env[ood]), "--task", task, "--models", models,
            "--seeds", "1", "--epochs", str(epochs), "--eval-seeds", "0", "--rates", ",".join(map(str, RATES)),
            "--config", str(env[config]), "--out", str(out), "--quiet"]


# ----------------------------------------------------------------------------- rows and data (no training)


def test_rows_follow_each_models_recipe():
    base = TrainConfig(task="binary", epochs=12, model_config={"layers": 2, "heads": 2})
    rows = build_rows(base, "cider,mplmm,dlf", "dlf,mplmm")
    assert [r.key for r in rows] == ["mplmm", "dlf", "dlf+maci", "mplmm+maci", "cider"]
    assert [r.label for r in rows] == ["MPLMM", "DLF", "DLF+MACI", "MPLMM+MACI", "CIDer"]
    by = {r.key: r.config for r in rows}
    for key in ("mplmm", "dlf"):  # baselines: own objective, registered defaults, no MACI
        assert by[key].head == "linear" and not by[key].counterfactual and not by[key].mssd
        assert by[key].epochs == 12 and by[key].seed == base.seed
    assert by["dlf+maci"].head == "mcm" and by["dlf+maci"].counterfactual and not by["dlf+maci"].mssd
    assert by["dlf"].model_config == TrainConfig(model="dlf").model_config
    assert by["cider"].mssd and by["cider"].head == "mcm" and by["cider"].model_config.layers == 2
    # MPLMM's 40 pre-training epochs would leave nothing to select: cut to half the epochs.
    assert by["mplmm"].model_config.pretrain_epochs == 6 == by["mplmm+maci"].model_config.pretrain_epochs
    assert build_rows(TrainConfig(epochs=200), "mplmm")[0].config.model_config.pretrain_epochs == 40

    reg = TrainConfig(task="regression", head="linear", counterfactual=False)
    cider = build_rows(reg, "cider")[0]
    assert not cider.maci and cider.config.head == "linear" and not cider.config.counterfactual
    with pytest.raises(ConfigError, match="cannot run with --task regression"):
        build_rows(reg, "cider,dlf", "dlf")
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        build_rows(base, "cider,nope")
    with pytest.raises(ConfigError, match="CIDer has MACI already"):
        build_rows(base, "cider", "cider")


def test_shared_train_valid_detection():
    a = make_dataset_dict(seed=0, sizes=(10, 6, 6))
    same = {**a, "test": make_dataset_dict(seed=1, sizes=(10, 6, 6))["test"]}
    assert shares_training_data(dataset_from_dict(a), dataset_from_dict(same))
    changed = {k: {kk: np.copy(vv) for kk, vv in v.items()} for k, v in a.items()}
    changed["valid"]["regression_labels"][0] += 1.0  # one validation label differs
    assert not shares_training_data(dataset_from_dict(a), dataset_from_dict(changed))
    assert not shares_training_data(dataset_from_dict(a), dataset_from_dict(make_dataset_dict(seed=2, sizes=(10, 6, 6))))


def test_cli_refuses_maci_plugins_for_regression(env, tmp_path, capsys):
    from cider_mer.cli import main

    with pytest.raises(SystemExit) as exc:
        main(_args(env, tmp_path / "b", task="regression") + ["--maci-plugins", "late_fusion"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --maci-plugins") and "regression" in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()


# ----------------------------------------------------------------------------- the command (tiny training)


def test_cli_benchmark_tables_resume_and_refusal(env, tmp_path, capsys):
    from cider_mer.cli import main

    out = tmp_path / "bench"
    main(_args(env, out))
    first = capsys.readouterr().out
    assert "the files share train/valid" in first and first.count("training into") == 2
    for name in ("benchmark.md", "benchmark.csv", "benchmark.json", "benchmark.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0

    # Trained once per (row, seed), evaluated on both test splits.
    runs = {"cider": out / "runs" / "cider" / "seed5", "late_fusion": out / "runs" / "late_fusion" / "seed5"}
    stored = {}
    for key, run in runs.items():
        meta = json.loads((run / "config.json").read_text())
        assert meta["data"]["file"] == "iid.pkl" and meta["train"]["model"] == key
        stored[key] = {t: json.loads((run / f"eval_{t}" / "results.json").read_text()) for t in ("iid", "ood")}
        assert stored[key]["ood"]["data"]["file"] == "ood.pkl" and stored[key]["iid"]["rates"] == RATES
        assert (run / "eval_ood" / "results.csv").is_file()  # the usual per-rate files are kept
    assert json.loads((runs["cider"] / "config.json").read_text())["train"]["head"] == "mcm"
    assert json.loads((runs["late_fusion"] / "config.json").read_text())["train"]["head"] == "linear"

    # benchmark.md: Table IV (one row per model, setting x metric columns) and Table VI.
    md = (out / "benchmark.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| Model | RMFM/IID"))
    settings = ("RMFM/IID", "-/OOD", "RMFM/OOD")
    metrics = ("Acc2 (Non0)", "F1 (Non0)", "Acc3")
    assert header == "| " + " | ".join(["Model", *[f"{s} {m}" for s in settings for m in metrics], "Seeds"]) + " |"
    table_rows = [line for line in md.split("## Complexity")[0].splitlines()
                  if line.startswith("| ") and line.endswith("| 1/1 |")]
    assert [line.split(" | ")[0] for line in table_rows] == ["| Late fusion", "| CIDer"]
    assert "binary task" in md and "Acc7 needs `--task seven`" in md and "shared by iid.pkl and ood.pkl" in md
    assert "## Complexity (Table VI)" in md and "all runs finished" in md and "cider benchmark --iid" in md

    # benchmark.csv (long format) holds exactly what the stored evaluations say.
    rows = list(csv.DictReader(open(out / "benchmark.csv")))
    values = [r for r in rows if r["setting"] != "complexity"]
    assert len(values) == 2 * 3 * 3 and {r["training"] for r in values} == {"shared"}
    got = {(r["row"], r["setting"], r["metric"]): float(r["value"]) for r in values}
    for key in runs:
        for m in ("non0_acc2", "non0_f1", "acc3"):
            assert got[(key, "iid_rmfm", m)] == pytest.approx(stored[key]["iid"]["auilc"][m], rel=1e-5)
            assert got[(key, "ood_rmfm", m)] == pytest.approx(stored[key]["ood"]["auilc"][m], rel=1e-5)
            assert got[(key, "ood_complete", m)] == pytest.approx(stored[key]["ood"]["metrics"][m]["mean"][0],
                                                                  rel=1e-5)
    complexity = {(r["row"], r["metric"]): float(r["value"]) for r in rows if r["setting"] == "complexity"}
    assert complexity[("cider", "params_maci")] > 0 and ("late_fusion", "params_maci") not in complexity
    assert complexity[("cider", "params_excluding_text_encoder")] > complexity[("cider", "params_maci")]
    assert complexity[("late_fusion", "peak_memory_gib")] > 0
    log = list(csv.DictReader(open(runs["cider"] / "train_log.csv")))
    assert complexity[("cider", "train_seconds_per_epoch")] == pytest.approx(
        statistics.median(float(r["train_seconds"]) for r in log), rel=1e-3)

    # benchmark.json is a typed BenchmarkTable and round-trips.
    data = json.loads((out / "benchmark.json").read_text())
    table = BenchmarkTable.from_dict(data)
    assert json_normal(table.to_dict()) == data
    assert list(table.rows) == ["late_fusion", "cider"] and table.shared_training and table.finished
    assert table.rows["cider"].config["head"] == "mcm" and table.rows["late_fusion"].config["model"] == "late_fusion"
    assert table.hardware.device == "cpu" and table.hardware.memory_kinds
    cider = table.rows["cider"].values["iid_rmfm"]["non0_acc2"]
    assert cider.per_seed == [pytest.approx(stored["cider"]["iid"]["auilc"]["non0_acc2"])]

    # The same command again trains and evaluates nothing; --results puts the tables between markers.
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()}
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n\n<!-- bench-x:begin -->\nold\n<!-- bench-x:end -->\n\nafter\n")
    main(_args(env, out) + ["--results", str(doc), "--results-tag", "bench-x"])
    second = capsys.readouterr().out
    assert second.count("skipped: evaluation exists") == 2 and "training into" not in second
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    text = doc.read_text()
    assert "\nold\n" not in text and text.rstrip().endswith("after") and "### Benchmark (Table IV)" in text
    assert "#### Complexity (Table VI)" in text and "| CIDer |" in text

    # Another setting in the same folder is refused before anything is written (epochs and patience
    # may change: the runs would train on, as `cider train --resume` allows).
    before = (out / "benchmark.json").read_text()
    with pytest.raises(SystemExit) as exc:
        main(_args(env, out, config="config_lr"))
    assert exc.value.code == 2
    assert "lr: stored 0.001, now 0.0005" in capsys.readouterr().err
    assert (out / "benchmark.json").read_text() == before
    # So is another OOD file.
    with pytest.raises(SystemExit) as exc:
        main(_args(env, out, ood="other"))
    assert exc.value.code == 2 and "another OOD file" in capsys.readouterr().err


def test_pair_with_own_train_valid_trains_on_each(env, tmp_path):
    from cider_mer.benchmark.suite import run_benchmark

    base = TrainConfig(**env["base"])
    out = tmp_path / "bench"
    lines: list[str] = []
    table = run_benchmark(base, env["iid"], env["other"], out, models="late_fusion", n_seeds=1, eval_seeds=[0],
                          rates=RATES, progress=False, log=lines.append)
    assert not table.shared_training and sum("training into" in line for line in lines) == 2
    runs = {t: out / "runs" / "late_fusion" / t / "seed5" for t in ("iid", "ood")}
    from cider_mer.text.cache import dataset_key

    for t, file in (("iid", env["iid"]), ("ood", env["other"])):
        meta = json.loads((runs[t] / "config.json").read_text())
        assert meta["data"]["sha256_16"] == dataset_key(file)
        assert (runs[t] / f"eval_{t}" / "results.json").is_file()
        assert not (runs[t] / f"eval_{'ood' if t == 'iid' else 'iid'}").exists()
    assert "iid.pkl train/valid (its own" in table.training_data["iid_rmfm"]
    assert "other.pkl train/valid (its own" in table.training_data["ood_rmfm"] == table.training_data["ood_complete"]
    assert [(r.seed, r.training) for r in table.rows["late_fusion"].runs] == [(5, "iid"), (5, "ood")]
    md = (out / "benchmark.md").read_text()
    assert "| RMFM/IID | `iid.pkl` test | iid.pkl train/valid (its own" in md
    assert "| RMFM/OOD | `other.pkl` test | other.pkl train/valid (its own" in md
    ood_results = json.loads((runs["ood"] / "eval_ood" / "results.json").read_text())
    assert table.rows["late_fusion"].values["ood_complete"]["acc3"].mean == pytest.approx(
        ood_results["metrics"]["acc3"]["mean"][0])


def test_model_that_cannot_take_the_data_is_refused_before_training(env, tmp_path, monkeypatch):
    """A model whose construction rejects the data's shapes stops the benchmark before any row trains
    (no registered model rejects these shapes today, so one is made to)."""
    from cider_mer.benchmark.suite import run_benchmark
    from cider_mer.models import registry

    real_build = registry.build_model

    def build_refusing_short_audio(model, shapes, *args, **kwargs):
        if model == "dlf" and shapes.audio_len < 5:
            raise ValueError(f"audio length {shapes.audio_len} is shorter than 5")
        return real_build(model, shapes, *args, **kwargs)

    monkeypatch.setattr(registry, "build_model", build_refusing_short_audio)
    short = tmp_path / "short.pkl"
    save_dataset(dataset_from_dict(make_dataset_dict(seed=0, sizes=(12, 6, 6), Ta=3, Tv=3)), short)
    with pytest.raises(ConfigError, match="short.pkl: model 'dlf' cannot take this data .*shorter than 5"):
        run_benchmark(TrainConfig(**env["base"]), short, short, tmp_path / "bench", models="cider,dlf", n_seeds=1,
                      eval_seeds=[0], rates=RATES, progress=False, log=lambda _: None)
    assert not (tmp_path / "bench").exists()
