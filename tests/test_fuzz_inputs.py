"""Every file-reading command against a family of malformed inputs.

For each command and each damaged file (empty, random bytes, a truncated valid file, a valid file
of the wrong content, a directory, a file that claims far more than it holds, ...) the command must
exit 2 with exactly one ``error:`` line on stderr naming the file, no traceback, and must write
nothing where its output would go. The CLI runs in-process (``cider_mer.cli.main``).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from cider_mer.config import TrainConfig

from helpers import one_error_line, run_cli, tiny_bert_dir, tiny_data_file

MALFORMED = ("empty", "random", "truncated", "wrong content", "directory", "huge claim")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny dataset, encoder, CSV, feature file and trained run; each kind's valid bytes."""
    from cider_mer.data.dataset import load_dataset
    from cider_mer.training.trainer import train

    root = tmp_path_factory.mktemp("fuzz")
    os.environ["CIDER_CACHE_DIR"] = str(root / "cache")
    torch.set_num_threads(1)
    data, bert = tiny_data_file(root), tiny_bert_dir(root)
    cfg = TrainConfig(text_encoder=str(bert), freeze_text_encoder=True, epochs=1, batch_size=16, eval_batch_size=32,
                      model_config={"layers": 1, "heads": 2}, device="cpu", seed=3)
    train(cfg, load_dataset(data), root / "run", progress=False)
    csv = root / "label.csv"
    csv.write_text("id,text,label,mode\na,good,1.5,train\nb,bad,-1.0,train\nc,meh,0.0,valid\nd,great,2.0,test\n")
    npz = root / "audio.npz"
    np.savez(npz, ids=np.array(["a", "d"]), features=np.ones((2, 4, 3), np.float32), lengths=np.array([4, 2]))
    config = root / "config.json"
    config.write_text(json.dumps(cfg.to_dict()))
    return {"root": root, "data": data, "bert": bert, "run": root / "run", "csv": csv, "npz": npz, "config": config}


# ------------------------------------------------------------------------------ malformed files per kind


def _npz_claiming(shape: tuple[int, ...]) -> bytes:
    """An .npz whose 'features' header claims ``shape`` float32 while holding 12 bytes."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("features.npy", header.getvalue() + bytes(12))
        for key, arr in (("ids", np.array(["a"])), ("lengths", np.array([1]))):
            member = io.BytesIO()
            np.save(member, arr)
            z.writestr(f"{key}.npy", member.getvalue())
    return buf.getvalue()


def _safetensors_header(size: int) -> bytes:
    return size.to_bytes(8, "little") + b'{"__metadata__": {}}'


WRONG_CONTENT = {  # a well-formed file of the kind that holds the wrong thing
    "dataset": lambda env: pickle.dumps([1, 2, 3]),
    "json": lambda env: b"[1, 2]",
    "csv": lambda env: b"name,score\nx,1\n",
    "npz": lambda env: _npz_bytes(x=np.zeros(3)),
    "safetensors": lambda env: _safetensors_bytes({"x": torch.zeros(2)}),
}
HUGE_CLAIM = {  # tiny files whose headers claim terabytes (or, for text kinds, absurd nesting or values)
    "dataset": lambda env: pickle.PROTO + b"\x05" + pickle.BINBYTES8 + (1 << 40).to_bytes(8, "little") + b"abcd.",
    "json": lambda env: b"[" * 200_000,
    "csv": lambda env: b"id,text,label,mode\na,x,1e400,train\n",
    "npz": lambda env: _npz_claiming((10 ** 9, 4, 3)),
    "safetensors": lambda env: _safetensors_header(1 << 62),
}


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _safetensors_bytes(tensors) -> bytes:
    from safetensors.torch import save

    return save(tensors)


def make_bad(path: Path, kind: str, valid: bytes, damage: str, env) -> Path:
    """Write a malformed file of ``kind`` at ``path`` (a directory for ``damage == "directory"``)."""
    if damage == "directory":
        path.mkdir()
        (path / "inside.txt").write_text("a folder, not a file")
        return path
    content = {
        "empty": lambda: b"",
        "random": lambda: np.random.default_rng(len(kind)).bytes(2048),
        "truncated": lambda: valid[: len(valid) // 2],
        "wrong content": lambda: WRONG_CONTENT[kind](env),
        "huge claim": lambda: HUGE_CLAIM[kind](env),
    }[damage]()
    path.write_bytes(content)
    return path


# ------------------------------------------------------------------------------ the commands


def _train_options(env) -> list:
    return ["--text-encoder", env["bert"], "--freeze-text-encoder", "--epochs", "1", "--batch-size", "16",
            "--layers", "1", "--heads", "2", "--device", "cpu", "--quiet"]


# (id, kind of the bad file, argv builder (env, bad file, output location), output location under tmp)
TOP_LEVEL = [
    ("data check", "dataset", lambda e, bad, out: ["data", "check", bad]),
    ("data check --json", "dataset", lambda e, bad, out: ["data", "check", bad, "--json"]),
    ("train --data", "dataset", lambda e, bad, out: ["train", "--data", bad, "--out", out, *_train_options(e)]),
    ("train --config", "json", lambda e, bad, out: ["train", "--data", e["data"], "--out", out, "--config", bad]),
    ("eval --data", "dataset", lambda e, bad, out: ["eval", "--run", e["run"], "--data", bad, "--out", out,
                                                    "--rates", "0", "--seeds", "0", "--device", "cpu", "--quiet"]),
    ("import-csv csv", "csv", lambda e, bad, out: ["data", "import-csv", bad, "--out", out]),
    ("import-csv npz", "npz", lambda e, bad, out: ["data", "import-csv", e["csv"], "--out", out,
                                                   "--audio-features", bad]),
    ("ood-split", "dataset", lambda e, bad, out: ["data", "ood-split", bad, "--out", out]),
    ("plot embeddings", "dataset", lambda e, bad, out: ["plot", "embeddings", "--run", e["run"], "--data", bad,
                                                        "--out", out, "--rates", "0.5", "--method", "pca",
                                                        "--device", "cpu"]),
    ("plot maci", "dataset", lambda e, bad, out: ["plot", "maci", "--run", e["run"], "--data", bad, "--index", "0",
                                                  "--out", out, "--device", "cpu"]),
    ("maci vocab", "dataset", lambda e, bad, out: ["maci", "vocab", "--data", bad, "--text-encoder", e["bert"]]),
    ("model-info --data", "dataset", lambda e, bad, out: ["model-info", "--data", bad, "--json"]),
]
SUFFIX = {"dataset": ".pkl", "json": ".json", "csv": ".csv", "npz": ".npz", "safetensors": ".safetensors"}
VALID = {"dataset": "data", "json": "config", "csv": "csv", "npz": "npz"}


def _check_refused(code: int, err: str, bad: Path) -> str:
    line = one_error_line(err)
    assert code == 2, err
    assert str(bad) in line or (str(bad.parent) in line and bad.name in line), line
    return line


@pytest.mark.parametrize("damage", MALFORMED)
@pytest.mark.parametrize("name, kind, argv", TOP_LEVEL, ids=[t[0] for t in TOP_LEVEL])
def test_file_arguments(env, tmp_path, capsys, name, kind, argv, damage):
    bad = make_bad(tmp_path / f"bad{SUFFIX[kind]}", kind, env[VALID[kind]].read_bytes(), damage, env)
    code, _, err = run_cli(argv(env, bad, tmp_path / "out" / "result"), capsys)
    _check_refused(code, err, bad)
    assert [p.name for p in tmp_path.iterdir()] == [bad.name]  # nothing written, not even the output folder


RUN_FILES = [("config.json", "json"), ("maci.json", "json"), ("model.safetensors", "safetensors")]


@pytest.mark.parametrize("damage", MALFORMED)
@pytest.mark.parametrize("file, kind", RUN_FILES, ids=[f for f, _ in RUN_FILES])
def test_run_files(env, tmp_path, capsys, file, kind, damage):
    """``eval --run`` (and ``plot embeddings --run``) on a run whose file is damaged."""
    run = tmp_path / "run"
    shutil.copytree(env["run"], run)
    valid = (run / file).read_bytes()
    (run / file).unlink()
    bad = make_bad(run / file, kind, valid, damage, env)
    listing = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    for argv in (["eval", "--run", run, "--data", env["data"], "--out", tmp_path / "rep", "--rates", "0", "--seeds",
                  "0", "--device", "cpu", "--quiet"],
                 ["plot", "embeddings", "--run", run, "--data", env["data"], "--rates", "0.5", "--method", "pca",
                  "--device", "cpu"]):
        code, _, err = run_cli(argv, capsys)
        _check_refused(code, err, bad)
        assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == listing
        assert not (tmp_path / "rep").exists()


@pytest.mark.parametrize("damage", ["empty", "random", "truncated", "wrong content", "huge claim"])
def test_resume_file(env, tmp_path, capsys, damage):
    """``train --resume`` on a run whose resume state is damaged: refused, the run left as it was
    (only its text log ``train.log`` records the attempt)."""
    run = tmp_path / "run"
    shutil.copytree(env["run"], run)
    valid = (run / "resume.safetensors").read_bytes()
    bad = make_bad(run / "resume.safetensors", "safetensors", valid, damage, env)
    state = lambda: {p.name: p.read_bytes() for p in run.iterdir() if p.name != "train.log"}  # noqa: E731
    before, log_before = state(), (run / "train.log").read_text()
    code, _, err = run_cli(["train", "--data", env["data"], "--out", run, "--resume", "--quiet"], capsys)
    _check_refused(code, err, bad)
    assert state() == before
    log_after = (run / "train.log").read_text()
    assert log_after.startswith(log_before) and "stopped:" in log_after[len(log_before):]


@pytest.mark.parametrize("content", ["", "epoch,train_seconds\nx,1\n", "\x00\xff\xfe",
                                     "epoch,val_non0_acc2\nfirst,50\n", "epoch,train_seconds\n1,slow\n"])
def test_training_log(env, tmp_path, content):
    from cider_mer.ablation.aggregate import TrainLog
    from cider_mer.errors import CiderError

    run = tmp_path / "run"
    run.mkdir()
    (run / "train_log.csv").write_bytes(content.encode("latin-1"))
    if content == "":
        assert TrainLog.read(run, "non0_acc2") is None  # a log without rows: nothing to report
        return
    with pytest.raises(CiderError, match=rf"{run / 'train_log.csv'}: unreadable training log"):
        TrainLog.read(run, "non0_acc2")
