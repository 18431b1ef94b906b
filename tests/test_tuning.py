"""Hyper-parameter search: resumable studies, interruptions, duplicates, storage errors, PostgreSQL workers."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from cider_mer.cli import main
from cider_mer.config import TrainConfig
from cider_mer.models.cider import CiderConfig
from cider_mer.tuning.census import take_census
from cider_mer.tuning.search import tune
from cider_mer.tuning.settings import TuneError
from cider_mer.tuning.space import MODEL, TABLE_II, TRAIN, Param, apply_params, params_key, space_size
from cider_mer.tuning.storage import StorageError, default_storage_url, mask_url, open_storage

from helpers import tiny_bert_dir, tiny_data_file

# A few points only: layers 1 keeps the trials fast, two head counts make repeats likely.
SMALL = (Param("layers", MODEL, choices=(1,)), Param("heads", MODEL, choices=(1, 2)),
         Param("joint_weight", TRAIN, 0.0, 1.0, step=0.5))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    return {"root": root, "bert": tiny_bert_dir(root), "data": tiny_data_file(root, sizes=(36, 16, 8)),
            "cache": root / "cache"}


@pytest.fixture(autouse=True)
def cache_dir(env, monkeypatch):
    monkeypatch.setenv("CIDER_CACHE_DIR", str(env["cache"]))


@pytest.fixture(autouse=True)
def one_thread(one_torch_thread):
    """Tiny models train fastest on one thread (the shared fixture in conftest.py)."""


def base_cfg(env, **kw) -> TrainConfig:
    values = dict(text_encoder=str(env["bert"]), freeze_text_encoder=True, epochs=1, patience=5, batch_size=16,
                  eval_batch_size=64, seed=7, device="cpu", model_config={"hidden": 8})
    values.update(kw)
    return TrainConfig(**values)


def cli_args(env, out: Path, trials: int, *extra: str) -> list[str]:
    base = env["root"] / "base.json"  # a narrow model (hidden 8; heads 8 still divide it): fast trials
    if not base.exists():
        base.write_text(json.dumps({"model_config": {"hidden": 8}}))
    return ["tune", "--data", str(env["data"]), "--out", str(out), "--trials", str(trials), "--epochs", "1",
            "--config", str(base),
            "--batch-size", "16", "--seed", "7", "--text-encoder", str(env["bert"]), "--freeze-text-encoder",
            "--device", "cpu", *extra]


def load(url: str, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=url)


def counted(study, space=TABLE_II):
    return take_census(study, space).finished


def test_space_and_params():
    assert space_size(TABLE_II) == 4_599_936  # the reference notes' count of the authors' space
    cfg = apply_params(TrainConfig(), {"layers": 2, "heads": 4, "attn_dropout": 0.30000000000000004,
                                       "embed_dropout": 0.1, "out_dropout": 0.0, "recon_weight": 0.7,
                                       "attn_weight": 0.0, "joint_weight": 1.0})
    assert cfg.model_config == CiderConfig(layers=2, heads=4, attn_dropout=0.3, embed_dropout=0.1, out_dropout=0.0)
    assert (cfg.recon_weight, cfg.attn_weight, cfg.joint_weight) == (0.7, 0.0, 1.0)
    assert params_key({"layers": 1}) is None
    assert mask_url("postgresql://me:secret@db:5432/x") == "postgresql://me:***@db:5432/x"


def test_cli_study_resumes_to_the_requested_total(env, tmp_path, capsys):
    out = tmp_path / "tune"
    main(cli_args(env, out, 2))
    url, name = default_storage_url(out), "tiny-binary"
    study = load(url, name)
    first = {t.number: (t.value, t.params, t.datetime_complete) for t in study.trials}
    assert sorted(first) == [0, 1] and all(t.state.name == "COMPLETE" for t in study.trials)
    assert len(counted(study)) == 2

    main(cli_args(env, out, 3))  # one more, the first two untouched
    study = load(url, name)
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert len(counted(study)) == 3
    for t in study.trials[:2]:
        assert (t.value, t.params, t.datetime_complete) == first[t.number]
    for n in range(3):
        assert (out / "trials" / f"trial_{n}" / "model.safetensors").is_file()
    printed = capsys.readouterr().out
    assert "trial   2 val non0_acc2" in printed and "3/3 finished" in printed

    main(cli_args(env, out, 3))  # nothing left to do
    assert len(load(url, name).trials) == 3

    with open(out / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["number"] for r in rows] == ["0", "1", "2"] and {r["state"] for r in rows} == {"COMPLETE"}
    assert {"value", "duration_s", "params_layers", "params_recon_weight", "run_dir"} <= set(rows[0])

    best = max(study.trials, key=lambda t: (t.value, -t.number))
    cfg = TrainConfig.from_file(out / "best_config.json")  # what `cider train --config` reads
    expected = apply_params(base_cfg(env, patience=10, eval_batch_size=256), best.params)
    assert cfg.to_dict() == expected.to_dict()
    assert cfg.model_config.layers == best.params["layers"] and cfg.model_config.heads == best.params["heads"]
    assert cfg.recon_weight == round(best.params["recon_weight"], 6)
    summary = json.loads((out / "tuning.json").read_text())
    assert summary["best"]["trial"] == best.number and summary["finished_trials"] == 3

    # The same study with another budget per trial is refused (its values would not compare).
    with pytest.raises(SystemExit) as exc:
        main(cli_args(env, out, 4)[:-2] + ["--device", "cpu", "--patience", "3"])
    assert exc.value.code == 2
    assert "other settings" in capsys.readouterr().err


def test_interrupted_trial_is_failed_requeued_and_finished_later(env, tmp_path):
    out = tmp_path / "tune"

    def interrupt(number, epoch, row):
        if number == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tune(base_cfg(env), env["data"], out, 2, space=SMALL, log=lambda s: None, on_epoch=interrupt)
    study = load(default_storage_url(out), "tiny-binary")
    states = {t.number: t.state.name for t in study.trials}
    assert states == {0: "COMPLETE", 1: "FAIL", 2: "WAITING"}
    assert "interrupted" in study.trials[1].user_attrs["error"]
    assert study.trials[2].params == study.trials[1].params and study.trials[2].user_attrs == {"retry_of": 1}
    with open(out / "trials.csv", newline="") as f:  # the table of the last finished trial, intact
        assert [r["state"] for r in csv.DictReader(f)] == ["COMPLETE"]

    res = tune(base_cfg(env), env["data"], out, 2, space=SMALL, log=lambda s: None)
    study = load(default_storage_url(out), "tiny-binary")
    assert res.n_finished == 2 and res.trials_trained_here == 1
    assert {t.number: t.state.name for t in study.trials} == {0: "COMPLETE", 1: "FAIL", 2: "COMPLETE"}
    assert study.trials[2].params == study.trials[1].params
    with open(out / "trials.csv", newline="") as f:
        assert [r["state"] for r in csv.DictReader(f)] == ["COMPLETE", "FAIL", "COMPLETE"]


def test_repeated_parameters_are_not_retrained_nor_counted(env, tmp_path):
    space = SMALL[:2]  # two points
    out = tmp_path / "tune"
    url = default_storage_url(out)
    tune(base_cfg(env), env["data"], out, 1, space=space, log=lambda s: None)
    study = load(url, "tiny-binary")
    first = study.trials[0]
    study.enqueue_trial(first.params)  # the next trial proposes the finished point again
    lines: list[str] = []
    res = tune(base_cfg(env), env["data"], out, 2, space=space, log=lines.append)
    study = load(url, "tiny-binary")
    dup = study.trials[1]
    assert dup.user_attrs["duplicate_of"] == 0 and dup.state.name == "COMPLETE" and dup.value == first.value
    assert "run_dir" not in dup.user_attrs and not (out / "trials" / "trial_1").exists()
    assert any("same parameters as trial 0" in line for line in lines)
    finished = counted(study, space)
    assert res.n_finished == 2 and len(finished) == 2
    assert len({params_key(t.params, space) for t in finished}) == 2
    assert sorted(t.params["heads"] for t in finished) == [1, 2]
    with pytest.raises(ValueError, match="distinct points"):
        tune(base_cfg(env), env["data"], out, 3, space=space, log=lambda s: None)


def test_failed_trials_are_recorded_and_repeated_failures_stop_the_worker(env, tmp_path):
    out = tmp_path / "tune"

    def broken_first(number, epoch, row):
        if number == 0:
            raise RuntimeError("boom")

    lines: list[str] = []
    res = tune(base_cfg(env), env["data"], out, 1, space=SMALL, log=lines.append, on_epoch=broken_first)
    study = load(default_storage_url(out), "tiny-binary")
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"] and res.n_finished == 1
    assert study.trials[0].user_attrs["error"] == "RuntimeError: boom"
    assert any("trial   0 failed: RuntimeError: boom" in line for line in lines)

    def always(number, epoch, row):
        raise RuntimeError("still broken")

    with pytest.raises(RuntimeError, match="still broken"):
        tune(base_cfg(env), env["data"], out, 2, space=SMALL, log=lambda s: None, on_epoch=always)
    study = load(default_storage_url(out), "tiny-binary")
    later = study.trials[2:]  # three failures; repeats of trial 1 (not trained) do not reset the count
    assert sum(t.state.name == "FAIL" for t in later) == 3 and later[-1].state.name == "FAIL"
    assert all(t.state.name == "FAIL" or t.user_attrs.get("duplicate_of") == 1 for t in later)
    with open(out / "trials.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == len(study.trials)


@pytest.mark.parametrize("url, expected", [
    ("foo://x", "unknown database type 'foo'"),
    ("not a url", "is not a database URL"),
    ("postgresql://nobody:secret@127.0.0.1:1/db", "postgresql://nobody:***@127.0.0.1:1/db"),
    ("postgresql://nobody@127.0.0.1:1/db", "postgresql://nobody@127.0.0.1:1/db"),
    ("sqlite:////no/such/folder/study.db", "folder of the SQLite file does not exist"),
])
def test_bad_storage_urls_give_one_line_errors(env, tmp_path, capsys, url, expected):
    with pytest.raises(SystemExit) as exc:
        main(cli_args(env, tmp_path / "t", 1, "--storage", url))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: storage '") and expected in err and "secret" not in err
    assert len(err.strip().splitlines()) == 1
    if url.startswith("postgresql"):
        assert "cannot open the database" in err or "driver" in err
    assert not list((tmp_path / "t").glob("trials/*"))


def test_open_storage_raises_storage_error():
    with pytest.raises(StorageError, match="expected sqlite:///"):
        open_storage("mysql+nosuchdriver://a@b/c")


def _worker(env, out: Path, trials: int, *extra: str) -> subprocess.Popen:
    code = "import sys; from cider_mer.cli import main; sys.argv[0] = 'cider'; main()"
    tests = str(Path(__file__).parent)
    penv = {**os.environ, "CIDER_CACHE_DIR": str(env["cache"]), "PYTHONPATH": tests, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code, *cli_args(env, out, trials, *extra)], env=penv,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_killed_worker_trial_is_taken_over(env, tmp_path):
    """SIGKILL in the middle of a trial: its heartbeat stops, the next worker fails and re-queues it."""
    out = tmp_path / "tune"
    proc = _worker(env, out, 2, "--heartbeat", "1", "--epochs", "10")
    deadline = time.time() + 240
    while not (out / "trials" / "trial_1" / "config.json").exists():
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() is not None else ""
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    study = load(default_storage_url(out), "tiny-binary")
    assert study.trials[1].state.name == "RUNNING"
    res = tune(base_cfg(env, epochs=10, patience=10), env["data"], out, 2, heartbeat_interval=1, log=lambda s: None)
    study = load(default_storage_url(out), "tiny-binary")
    assert res.n_finished == 2
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert study.trials[2].params == study.trials[1].params
    assert study.trials[2].system_attrs["failed_trial"] == 1


@pytest.mark.postgres
def test_postgres_workers_share_one_study(env, tmp_path):
    url = os.environ.get("CIDER_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("CIDER_TEST_POSTGRES_URL is not set (see .ci/postgres.sh)")
    pytest.importorskip("psycopg2", reason="the PostgreSQL driver: pip install 'cider-mer[postgres]'")
    name = f"test-{uuid.uuid4().hex[:8]}"
    n = 4
    procs = [_worker(env, tmp_path / f"w{i}", n, "--storage", url, "--study", name) for i in range(2)]
    logs = []
    for p in procs:
        text, _ = p.communicate(timeout=540)
        logs.append(text)
        assert p.returncode == 0, text
    storage = open_storage(url)
    import optuna

    study = optuna.load_study(study_name=name, storage=storage)
    finished = counted(study)
    assert len(finished) == n
    assert len({params_key(t.params) for t in finished}) == n  # no parameter set counted twice
    assert all(t.state.name in ("COMPLETE", "PRUNED", "FAIL") for t in study.trials)
    trained_by = [sum(line.startswith("trial ") and "val non0_acc2" in line for line in text.splitlines())
                  for text in logs]
    assert all(k >= 1 for k in trained_by), logs  # both workers did share the work
    dirs = {p.name for i in range(2) for p in (tmp_path / f"w{i}" / "trials").glob("trial_*")}
    assert {f"trial_{t.number}" for t in finished} <= dirs
    for i in range(2):  # each worker's table shows the whole study
        with open(tmp_path / f"w{i}" / "trials.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert sum(r["state"] in ("COMPLETE", "PRUNED") and not r.get("duplicate_of") for r in rows) == n
        TrainConfig.from_file(tmp_path / f"w{i}" / "best_config.json")
    with pytest.raises(TuneError, match="other settings"):
        tune(base_cfg(env, epochs=2), env["data"], tmp_path / "w2", n, storage=url, study_name=name,
             log=lambda s: None)


def test_regression_studies_minimise_mae():
    """Regression selects on MAE: the study minimises, the epoch watch and the best trial keep the lowest."""
    import optuna

    from cider_mer.metrics import selection_direction
    from cider_mer.tuning.census import best_trial
    from cider_mer.tuning.trial import _EpochWatch

    assert selection_direction("regression") == "minimize" and selection_direction("binary") == "maximize"
    study = optuna.create_study(direction="minimize")
    for value in (1.2, 0.9, 1.0):
        study.add_trial(optuna.trial.create_trial(value=value, params={}, distributions={}))
    assert best_trial(study).value == 0.9

    class Trial:
        def report(self, value, epoch):
            pass

        def should_prune(self):
            return False

    watch = _EpochWatch(Trial(), "mae", None)
    for epoch, value in enumerate((1.3, 1.1, 1.2), start=1):
        watch(epoch, {"val_selection": value})
    assert (watch.best, watch.best_epoch) == (1.1, 2)
