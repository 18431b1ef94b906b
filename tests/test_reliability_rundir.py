"""Run directories and outputs: one writer per folder, writable outputs checked first, no half-made or
mixed outputs, resume options, file modes, run records, train.log and torch threads."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from cider_mer.cli import main
from cider_mer.config import TrainConfig
from cider_mer.data.dataset import load_dataset
from cider_mer.errors import CiderError
from cider_mer.io_utils import atomic_write_text, git_commit, set_command_line
from cider_mer.locks import FolderInUseError, claim_dir, locked, sibling_lock_file
from cider_mer.runs import RunError

from helpers import tiny_bert_dir, tiny_data_file

REPO = Path(__file__).resolve().parents[1]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("rundir")
    return {"root": root, "bert": tiny_bert_dir(root), "data": tiny_data_file(root, sizes=(36, 16, 12))}


@pytest.fixture(autouse=True)
def isolated(env, tmp_path, monkeypatch, one_torch_thread):
    """A cache per test, no command line left over from another test, one torch thread."""
    monkeypatch.setenv("CIDER_CACHE_DIR", str(tmp_path / "cache"))
    set_command_line(None)
    yield
    set_command_line(None)


def cfg_for(env, **kw) -> TrainConfig:
    values = dict(text_encoder=str(env["bert"]), freeze_text_encoder=True, epochs=2, patience=10, batch_size=16,
                  eval_batch_size=32, model_config={"layers": 1, "heads": 2, "hidden": 8}, seed=3, device="cpu")
    values.update(kw)
    return TrainConfig(**values)


def train_args(env, out: Path, *extra: str, epochs: int = 2) -> list[str]:
    base = env["root"] / "base.json"
    if not base.exists():
        base.write_text(json.dumps({"model_config": {"layers": 1, "heads": 2, "hidden": 8}}))
    return ["train", "--data", str(env["data"]), "--out", str(out), "--config", str(base), "--epochs", str(epochs),
            "--batch-size", "16", "--text-encoder", str(env["bert"]), "--freeze-text-encoder", "--device", "cpu",
            "--quiet", *extra]


def cli_error(argv: list[str], capsys) -> str:
    """Run the CLI, expect exit 2, return its one stderr line."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    return err[0]


@pytest.fixture(scope="module")
def trained(env, tmp_path_factory):
    """One finished 2-epoch run for the eval and plot tests."""
    from cider_mer.training.trainer import train

    old = os.environ.get("CIDER_CACHE_DIR")
    os.environ["CIDER_CACHE_DIR"] = str(env["root"] / "cache")
    try:
        run = tmp_path_factory.mktemp("trained") / "run"
        train(cfg_for(env), load_dataset(env["data"]), run, progress=False)
    finally:
        if old is None:
            os.environ.pop("CIDER_CACHE_DIR", None)
        else:
            os.environ["CIDER_CACHE_DIR"] = old
    return run


# ---------------------------------------------------------------- 1. one writer per folder

HOLDER = textwrap.dedent("""
    import sys, time
    from cider_mer.locks import claim_dir
    with claim_dir(sys.argv[1], "run folder"):
        print("holding", flush=True)
        time.sleep(120)
""")


def _hold_in_subprocess(folder: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_second_train_into_a_held_run_folder_exits_2_naming_the_holder_and_a_killed_holder_blocks_nothing(
        env, tmp_path, capsys):
    run = tmp_path / "run"
    holder = _hold_in_subprocess(run)
    try:
        line = cli_error(train_args(env, run), capsys)
        assert str(run) in line and f"pid {holder.pid}" in line and "in use by another writer" in line
        assert not (run / "config.json").exists()  # the refused writer wrote nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    assert (run / ".cider.lock").exists()  # the dead holder's file is still there ...
    main(train_args(env, run))  # ... and blocks nothing
    assert len(list(csv.DictReader(open(run / "train_log.csv")))) == 2


def test_each_writer_locks_its_folder(env, tmp_path, trained):
    from cider_mer.ablation.suite import run_ablation
    from cider_mer.evaluation.protocol import evaluate
    from cider_mer.evaluation.report import write_report
    from cider_mer.runs import Run
    from cider_mer.training.trainer import train
    from cider_mer.tuning.search import tune

    with claim_dir(tmp_path / "run", "run folder"):
        with pytest.raises(FolderInUseError, match=r"run folder .*run: in use by another writer \(pid "):
            train(cfg_for(env), load_dataset(env["data"]), tmp_path / "run", progress=False)
    results = evaluate(Run.load(trained, device="cpu"), load_dataset(env["data"]), rates=[0.0], seeds=[0],
                       progress=False)
    with locked(sibling_lock_file(tmp_path / "rep"), "report"):
        with pytest.raises(FolderInUseError, match="report folder"):
            write_report(results, tmp_path / "rep")
    with locked(tmp_path / "abl" / ".cider.lock", "suite"):
        with pytest.raises(FolderInUseError, match="ablation folder"):
            run_ablation(cfg_for(env), env["data"], tmp_path / "abl", variants="full", n_seeds=1, eval_seeds=[0],
                         rates=[0.0], progress=False, log=lambda _: None)
    assert not (tmp_path / "abl" / "runs").exists()
    # Tuning workers of one study share a folder; another study is refused there.
    (tmp_path / "tune").mkdir()
    (tmp_path / "tune" / "tuning.json").write_text(json.dumps({"study": "other-study"}))
    with pytest.raises(CiderError, match="holds study 'other-study'"):
        tune(cfg_for(env), env["data"], tmp_path / "tune", 1, study_name="mine", log=lambda _: None)


# ---------------------------------------------------------------- 2. writability first


def _no_work(monkeypatch):
    """Make every entry into real work fail loudly: the checks must come first."""
    import cider_mer.data.dataset
    import cider_mer.data.import_csv
    import cider_mer.data.synth
    import cider_mer.demo
    import cider_mer.runs

    def forbidden(*a, **k):
        raise AssertionError("work started before the output was checked")

    for module, name in ((cider_mer.data.dataset, "load_dataset"), (cider_mer.data.synth, "write_synthetic"),
                         (cider_mer.data.import_csv, "import_csv"), (cider_mer.demo, "run_demo")):
        monkeypatch.setattr(module, name, forbidden)
    monkeypatch.setattr(cider_mer.runs.Run, "load", classmethod(lambda cls, *a, **k: forbidden()))


def _argv(kind: str, env, trained: Path, out: Path) -> list[str]:
    data = str(env["data"])
    return {
        "train": train_args(env, out),
        "eval": ["eval", "--run", str(trained), "--data", data, "--out", str(out)],
        "plot": ["plot", "embeddings", "--run", str(trained), "--data", data, "--out", str(out)],
        "tune": ["tune", "--data", data, "--out", str(out), "--trials", "1"],
        "ablate": ["ablate", "--data", data, "--out", str(out)],
        "demo": ["demo", "--out", str(out)],
        "synth": ["data", "synth", "--out", str(out)],
        "import-csv": ["data", "import-csv", data, "--out", str(out)],
    }[kind]


@pytest.mark.parametrize("kind", ["train", "eval", "plot", "tune", "ablate", "demo", "synth", "import-csv"])
def test_unwritable_out_exits_2_naming_the_path_before_any_work(kind, env, trained, tmp_path, capsys, monkeypatch):
    _no_work(monkeypatch)
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    # plot, synth and import-csv write a file: a path under a file fails; the others need a folder.
    file_out = kind in ("plot", "synth", "import-csv")
    for out in ([a_file / "sub.png"] if file_out else [a_file, a_file / "sub"]):
        line = cli_error(_argv(kind, env, trained, out), capsys)
        assert str(out) in line and "is a file" in line, line
    if file_out:
        line = cli_error(_argv(kind, env, trained, tmp_path), capsys)  # a folder where a file is needed
        assert str(tmp_path) in line and "is a folder" in line


@pytest.mark.skipif(IS_ROOT, reason="root ignores read-only permission bits")
@pytest.mark.parametrize("kind", ["train", "eval", "plot"])
def test_read_only_folder_exits_2(kind, env, trained, tmp_path, capsys, monkeypatch):
    _no_work(monkeypatch)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        out = ro / ("x.png" if kind == "plot" else "out")
        line = cli_error(_argv(kind, env, trained, out), capsys)
        assert str(out) in line and "not writable" in line
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("kind", ["train", "eval"])
def test_bad_feature_cache_exits_2_before_any_work(kind, env, trained, tmp_path, capsys, monkeypatch):
    import cider_mer.data.dataset

    monkeypatch.setattr(cider_mer.data.dataset, "load_dataset",
                        lambda *a: (_ for _ in ()).throw(AssertionError("data loaded before the cache check")))
    a_file = tmp_path / "cachefile"
    a_file.write_text("x")
    monkeypatch.setenv("CIDER_CACHE_DIR", str(a_file / "cache"))
    line = cli_error(_argv(kind, env, trained, tmp_path / "out"), capsys)
    assert "feature cache folder" in line and str(a_file / "cache") in line


def test_report_folder_with_other_files_is_refused_before_evaluating(env, trained, tmp_path, capsys, monkeypatch):
    _no_work(monkeypatch)
    (tmp_path / "rep").mkdir()
    (tmp_path / "rep" / "notes.txt").write_text("mine")
    line = cli_error(_argv("eval", env, trained, tmp_path / "rep"), capsys)
    assert "notes.txt" in line and (tmp_path / "rep" / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------- 3. no half-made or mixed outputs


def test_a_train_failing_before_its_first_epoch_leaves_nothing_behind(env, tmp_path, monkeypatch):
    import cider_mer.training.trainer as trainer

    def broken(*a, **k):
        raise RuntimeError("boom in epoch 1")

    data = load_dataset(env["data"])
    with monkeypatch.context() as m:
        m.setattr(trainer, "train_epoch", broken)
        with pytest.raises(RuntimeError, match="boom"):
            trainer.train(cfg_for(env), data, tmp_path / "a" / "run", progress=False)
        assert not (tmp_path / "a").exists()  # the folders it made are gone
        # In a folder that existed, only what this call wrote goes; an earlier file stays.
        (tmp_path / "b").mkdir()
        (tmp_path / "b" / "notes.txt").write_text("mine")
        with pytest.raises(RuntimeError, match="boom"):
            trainer.train(cfg_for(env), data, tmp_path / "b", progress=False)
        assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [".cider.lock", "notes.txt"]
    result = trainer.train(cfg_for(env), data, tmp_path / "a" / "run", progress=False)  # the same call works now
    assert result.epochs_run == 2


def test_stale_temp_files_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    from cider_mer.io_utils import _HOST

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    target = tmp_path / "model.safetensors"
    stale = tmp_path / f".model.safetensors.{_HOST}-{dead.pid}-abc123xy.tmp"
    live = tmp_path / f".model.safetensors.{_HOST}-{os.getppid()}-abc123xy.tmp"
    old_other_host = tmp_path / ".model.safetensors.elsewhere-12-abc123xy.tmp"
    new_other_host = tmp_path / ".model.safetensors.elsewhere-13-abc123xy.tmp"
    other_target = tmp_path / f".config.json.{_HOST}-{dead.pid}-abc123xy.tmp"
    for p in (stale, live, old_other_host, new_other_host, other_target):
        p.write_text("partial")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old_other_host, (two_days_ago, two_days_ago))
    atomic_write_text(target, "done")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([target.name, live.name, new_other_host.name, other_target.name])


def _results(trained, env, seeds):
    from cider_mer.evaluation.protocol import evaluate
    from cider_mer.runs import Run

    return evaluate(Run.load(trained, device="cpu"), load_dataset(env["data"]), rates=[0.0, 0.5], seeds=seeds,
                    progress=False)


def test_report_files_are_replaced_as_one_set(env, trained, tmp_path, monkeypatch):
    import cider_mer.evaluation.report as report

    root = tmp_path / "reports"
    rep = root / "rep"
    report.write_report(_results(trained, env, [0]), rep)
    before = {p.name: p.read_bytes() for p in rep.iterdir()}
    assert sorted(before) == ["results.csv", "results.json", "results.md", "results.png"]

    def killed(*a, **k):
        raise KeyboardInterrupt  # the writer dies after results.json/.csv/.md, before the plot

    with monkeypatch.context() as m:
        m.setattr(report, "plot_results", killed)
        with pytest.raises(KeyboardInterrupt):
            report.write_report(_results(trained, env, [0, 1]), rep)
    assert {p.name: p.read_bytes() for p in rep.iterdir()} == before  # the old set, whole
    assert sorted(p.name for p in root.iterdir()) == [".rep.lock", "rep"]  # no leftovers

    # A writer killed between the two renames: the next write finishes that swap first.
    new_set = root / ".rep.new-x"
    rep.rename(root / ".rep.old-x")
    new_set.mkdir()
    (new_set / "results.json").write_text("{}")
    report._finish_or_drop_swap(rep)
    assert sorted(p.name for p in rep.iterdir()) == ["results.json"]
    assert not new_set.exists() and not (root / ".rep.old-x").exists()
    paths = report.write_report(_results(trained, env, [0, 1]), rep)
    assert json.loads(paths["json"].read_text())["seeds"] == [0, 1]


# ---------------------------------------------------------------- 4. resume with new options


def test_resume_honours_new_epochs_and_refuses_other_changes(env, tmp_path, capsys):
    from cider_mer.training.trainer import train

    run = tmp_path / "run"
    main(train_args(env, run, epochs=4))
    capsys.readouterr()
    main(["train", "--data", str(env["data"]), "--out", str(run), "--resume", "--epochs", "6", "--quiet"])
    rows = list(csv.DictReader(open(run / "train_log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert json.loads((run / "config.json").read_text())["train"]["epochs"] == 6
    assert "(6 epochs" in capsys.readouterr().out

    stored = TrainConfig.from_file(run / "config.json")
    with pytest.raises(RunError, match=r"lr: stored 0.001, now 0.01.*except epochs, patience, device, eval_batch_size"):
        train(stored.with_overrides(lr=0.01), load_dataset(env["data"]), run, resume=True, progress=False)
    line = cli_error(["train", "--data", str(env["data"]), "--out", str(run), "--resume", "--batch-size", "8"], capsys)
    assert "batch_size: stored 16, now 8" in line
    assert len(list(csv.DictReader(open(run / "train_log.csv")))) == 6  # the refusals trained nothing


def test_resume_with_more_patience_continues_an_early_stopped_run(env, tmp_path):
    from cider_mer.training.trainer import train

    data = load_dataset(env["data"])
    first = train(cfg_for(env, epochs=6, patience=1, lr=1e-12), data, tmp_path / "run", progress=False)
    assert first.stopped_early and first.epochs_run == 2  # lr ~0: nothing improves after epoch 1
    again = train(cfg_for(env, epochs=6, patience=3, lr=1e-12), data, tmp_path / "run", resume=True, progress=False)
    assert again.epochs_run == 4 and again.stopped_early


# ---------------------------------------------------------------- 5. file modes


def test_outputs_get_the_usual_mode(env, trained, tmp_path):
    from cider_mer.evaluation.report import write_report
    from cider_mer.training.trainer import train

    old = os.umask(0o027)
    try:
        train(cfg_for(env, epochs=1), load_dataset(env["data"]), tmp_path / "run", progress=False)
        write_report(_results(trained, env, [0]), tmp_path / "rep")
    finally:
        os.umask(old)
    mode = lambda p: (p.stat().st_mode & 0o777)  # noqa: E731
    for name in ("model.safetensors", "resume.safetensors", "config.json", "train_log.csv", "train.log"):
        assert mode(tmp_path / "run" / name) == 0o640, name
    assert mode(tmp_path / "rep") == 0o750
    assert {mode(p) for p in (tmp_path / "rep").iterdir()} == {0o640}


# ---------------------------------------------------------------- 6. dependencies


def test_joblib_is_a_runtime_dependency():
    import tomllib

    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=!~ ;\[]", d, maxsplit=1)[0].lower() for d in meta["dependencies"]}
    assert "joblib" in names


# ---------------------------------------------------------------- 7. run records and train.log


def test_records_name_command_version_commit_and_device(env, trained, tmp_path, capsys):
    run, rep = tmp_path / "run", tmp_path / "rep"
    main(train_args(env, run))
    main(["eval", "--run", str(run), "--data", str(env["data"]), "--out", str(rep), "--rates", "0,0.5", "--seeds", "0",
          "--quiet"])
    for record in (json.loads((run / "config.json").read_text()), json.loads((rep / "results.json").read_text())):
        assert record["command"].startswith(("cider train --data", "cider eval --run"))
        assert record["device"] == "cpu"
        assert record["versions"]["cider-mer"]
        if (REPO / ".git").exists():
            assert re.fullmatch(r"[0-9a-f]{7,40}(\+dirty)?", record["versions"]["git"])
    # From Python there is no command line.
    assert json.loads((trained / "config.json").read_text())["command"] is None


def test_git_commit_never_fails_without_git(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    git_commit.cache_clear()
    try:
        assert git_commit() is None
    finally:
        git_commit.cache_clear()


def test_train_log_has_start_epoch_and_end_lines_and_is_appended_on_resume(env, tmp_path):
    from cider_mer.training.trainer import train

    data = load_dataset(env["data"])
    train(cfg_for(env, epochs=2), data, tmp_path / "run", progress=False)
    train(cfg_for(env, epochs=3), data, tmp_path / "run", resume=True, progress=False)
    lines = (tmp_path / "run" / "train.log").read_text().splitlines()
    kinds = [re.sub(r"^\S+ \S+ ", "", line).split(" ")[0] for line in lines]
    assert kinds == ["start", "epoch", "epoch", "end:", "start", "epoch", "end:"]
    assert "start (new run)" in lines[0] and "epochs 2" in lines[0] and "device cpu" in lines[0]
    assert "start (resuming after epoch 2)" in lines[4] and "epochs 3" in lines[4]
    assert re.search(r"epoch +3 +loss", lines[5])


# ---------------------------------------------------------------- 8. threads


def test_threads_option_sets_torchs_thread_count(monkeypatch, capsys):
    import cider_mer.threads

    monkeypatch.setattr(cider_mer.threads, "_REQUESTED", None)
    torch.set_num_threads(2)
    main(["--threads", "1", "models"])
    assert torch.get_num_threads() == 1 and cider_mer.threads.requested_threads() == 1
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:  # a usage error: exit 2 with the parser's message
        main(["--threads", "0", "models"])
    assert exc.value.code == 2 and "--threads" in capsys.readouterr().err


def test_omp_num_threads_is_respected():
    code = "import torch; from cider_mer.cli import main; main(['models']); print('threads', torch.get_num_threads())"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300).stdout
    assert out.strip().splitlines()[-1] == "threads 1"


def test_a_tuning_worker_uses_one_thread_unless_told(env, tmp_path, monkeypatch):
    import cider_mer.threads
    from cider_mer.tuning.search import tune
    from cider_mer.tuning.space import MODEL, Param

    space = (Param("heads", MODEL, choices=(1, 2)),)
    seen: list[int] = []
    hook = lambda trial, epoch, row: seen.append(torch.get_num_threads())  # noqa: E731
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cider_mer.threads, "_REQUESTED", None)
    torch.set_num_threads(2)
    tune(cfg_for(env, epochs=1), env["data"], tmp_path / "t1", 1, space=space, pruning=False, log=lambda _: None,
         on_epoch=hook)
    assert seen == [1] and torch.get_num_threads() == 2  # one thread in the worker, restored after
    monkeypatch.setattr(cider_mer.threads, "_REQUESTED", 2)  # `cider --threads 2`
    tune(cfg_for(env, epochs=1), env["data"], tmp_path / "t2", 1, space=space, pruning=False, log=lambda _: None,
         on_epoch=hook)
    assert seen == [1, 2]
