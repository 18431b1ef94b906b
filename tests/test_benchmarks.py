"""The speed benchmark runs on a CPU at tiny size (what CI can check; the figures come from GPUs)."""

import json
import math

from helpers import benchmark_module


def test_train_speed_tiny_on_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("CIDER_CACHE_DIR", str(tmp_path / "cache"))
    module = benchmark_module("train_speed")
    out = tmp_path / "speed.json"
    summary = module.main(["--tiny", "--epochs", "2", "--device", "cpu", "--exact", "--out", str(out)])
    stored = json.loads(out.read_text())
    assert stored["precision"] == "fp32" and stored["exact"] and stored["device"] == "cpu"
    assert [r["epoch"] for r in stored["epochs"]] == [1, 2]
    for row in stored["epochs"]:
        assert row["train_s"] > 0 and row["eval_s"] > 0
        assert 0.0 <= row["val_acc2"] <= 100.0
    assert math.isclose(summary["median_train_s_epochs_2_5"], stored["epochs"][1]["train_s"])
    assert stored["versions"]["torch"] and "train_speed.py" in stored["command"]
    assert stored["max_peak_gib"] is None and all(row["peak_gib"] is None for row in stored["epochs"])
    # --exact repetitions train the same model: the figures of repeated runs are comparable.
    again = module.main(["--tiny", "--epochs", "1", "--device", "cpu", "--exact"])
    first = stored["epochs"][0]
    assert math.isfinite(first["loss"]) and first["loss"] > 0
    assert (again["epochs"][0]["loss"], again["epochs"][0]["val_acc2"]) == (first["loss"], first["val_acc2"])
