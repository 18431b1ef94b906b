"""benchmarks/model_zoo.py at tiny size: the table holds every (model, task, seed), its figures are
the stored evaluations' rate-0 values, and a re-run reuses every finished run."""

from __future__ import annotations

import json

import pytest

from cider_mer.evaluation.results import EvalResults
from helpers import benchmark_module, tiny_data_file


def test_zoo_table_resume_and_results_section(tmp_path, capsys):
    zoo = benchmark_module("model_zoo")
    data = tiny_data_file(tmp_path, "tiny.pkl", sizes=(40, 16, 20))
    results = tmp_path / "results.md"
    results.write_text("# Results\n")
    argv = ["--data", str(data), "--out", str(tmp_path / "zoo"), "--models", "late_fusion,cider", "--epochs", "1",
            "--seeds", "2", "--device", "cpu", "--results", str(results)]
    zoo.main(argv)
    first = capsys.readouterr().out
    out = tmp_path / "zoo" / "tiny"
    summary = json.loads((out / "zoo.json").read_text())["summary"]
    assert set(summary["tasks"]) == {"binary", "regression"}
    for task, metric in (("binary", "non0_acc2"), ("regression", "mae")):
        rows = summary["tasks"][task]
        assert list(rows) == ["late_fusion", "cider"]
        for key, row in rows.items():
            assert [r["seed"] for r in row["runs"]] == [1111, 1112]
            for r in row["runs"]:
                stored = EvalResults.from_dict(json.loads(
                    (out / task / "runs" / key / f"seed{r['seed']}" / "eval" / "results.json").read_text()))
                assert r[metric] == pytest.approx(stored.at_rate(metric, 0.0))
                assert r["epochs_run"] == 1 and r["best_epoch"] == 1 and r["params"] > 0
    section = results.read_text()
    assert "<!-- zoo-tiny:begin -->" in section and "| Late fusion |" in section and "| MAE | Corr |" in section
    assert first.count("(trained,") == 8
    zoo.main(argv)
    assert capsys.readouterr().out.count("(skipped,") == 8
    # --table-only trains nothing: a run without its evaluation is left out of the table
    (out / "binary" / "runs" / "cider" / "seed1112" / "eval" / "results.json").unlink()
    zoo.main(argv + ["--table-only"])
    printed = capsys.readouterr().out
    assert printed.count("(skipped,") == 7 and "(trained," not in printed and "(resumed," not in printed
    summary = json.loads((out / "zoo.json").read_text())["summary"]
    assert [r["seed"] for r in summary["tasks"]["binary"]["cider"]["runs"]] == [1111]
