"""Validation of settings, command-line values, feature files, checkpoints, caches and outputs.

Each bad input must be refused before any work, as a CiderError whose message names the file,
the field, the expectation and the value given (one ``error:`` line, exit 2, from the CLI).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import typing

import numpy as np
import pytest
import torch

from cider_mer.config import TrainConfig
from cider_mer.data.dataset import DatasetError
from cider_mer.data.labels import TASKS
from cider_mer.errors import CiderError, ConfigError
from cider_mer.models.interface import DataShapes
from cider_mer.models.registry import available_models, make_config
from cider_mer.validation import SettingError, declared_ranges

from helpers import one_error_line, run_cli, tiny_bert_dir, tiny_data_file

# ----------------------------------------------------------------------------------- settings

BAD_SETTINGS = [  # (setting, value, words the message must hold)
    ("freeze_text_encoder", "no", 'true or false, got "no"'),
    ("epochs", 1.5, "an integer, got 1.5"),
    ("epochs", True, "an integer, got true"),
    ("lr", -1, "> 0, got -1"),
    ("lr", float("nan"), "a number or null, got NaN"),
    ("eval_batch_size", 0, ">= 1, got 0"),
    ("batch_size", 2.5, "an integer or null, got 2.5"),
    ("grad_accumulation", 0, ">= 1, got 0"),
    ("text_encoder", 3, "a string or null, got 3"),
    ("recon_weight", -0.5, ">= 0, got -0.5"),
    ("cf_vocab_size", 0, ">= 1, got 0"),
    ("cf_cv_threshold", -1.0, ">= 0, got -1.0"),
    ("task", "five", "one of " + ", ".join(f'"{t}"' for t in TASKS) + ', got "five"'),
    ("head", "mlp", 'one of "mcm", "linear", got "mlp"'),
    ("precision", "fp16", 'one of "fp32", "bf16", got "fp16"'),
    ("train_missing", "everywhere", 'one of "per_sample", "per_position", got "everywhere"'),
    ("device", "tpu", 'auto, cpu, cuda or cuda:N, got "tpu"'),
    ("seed", 2 ** 32, "in [0, 4294967296), got 4294967296"),
    ("mssd", "yes", 'true or false or null, got "yes"'),
]


@pytest.mark.parametrize("name, value, words", BAD_SETTINGS)
def test_bad_settings_name_field_expectation_and_value(name, value, words):
    with pytest.raises(ConfigError) as exc:
        TrainConfig(**{name: value})
    assert str(exc.value) == f"{name} must be {words}"


BRIEF_EXAMPLES = [BAD_SETTINGS[i] for i in (0, 1, 3, 5)]  # "no" for a bool, 1.5 epochs, lr -1, eval_batch_size 0


@pytest.mark.parametrize("name, value, words", BRIEF_EXAMPLES)
def test_a_config_file_error_names_the_file(tmp_path, name, value, words):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({name: value}))
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: {name} must be {re.escape(words)}$"):
        TrainConfig.from_file(path)


def test_numbers_that_are_fine():
    cfg = TrainConfig(lr=1, encoder_lr=np.float32(1e-4), cf_cv_threshold=0, mssd=None, text_encoder=None)
    assert type(cfg.lr) is float and cfg.lr == 1.0  # an int for a float setting is stored as a float
    assert type(cfg.encoder_lr) is float and type(cfg.cf_cv_threshold) is float
    assert TrainConfig.from_dict(json.loads('{"lr": 1.0, "epochs": 3}')).epochs == 3


def test_backbone_settings_are_checked_under_model_config():
    with pytest.raises(SettingError, match=r"^model_config\.hidden must be >= 1, got 0$"):
        TrainConfig(model_config={"hidden": 0})
    with pytest.raises(SettingError, match=r'^model_config\.use_wsam must be true or false, got "false"$'):
        TrainConfig(model_config={"use_wsam": "false"})
    with pytest.raises(SettingError, match=r"^model_config\.sigma must be one of 1\.0, got 2\.0$"):
        TrainConfig(model="lnln", model_config={"sigma": 2.0})
    with pytest.raises(ConfigError, match=r"heads \(7\) must divide dim \(50\)"):
        TrainConfig(model="mult", model_config={"heads": 7})


def _numeric(hint) -> bool:
    return hint in (int, float) or any(a in (int, float) for a in typing.get_args(hint))


SETTINGS_CLASSES = [TrainConfig, DataShapes] + [spec.config_cls for spec in available_models().values()]


@pytest.mark.parametrize("cls", SETTINGS_CLASSES, ids=lambda c: c.__name__)
def test_every_number_has_a_declared_range(cls):
    """A new numeric setting must say what values it allows (RANGES); every name there is a field."""
    hints = typing.get_type_hints(cls)
    ranges = declared_ranges(cls)
    undeclared = [f.name for f in dataclasses.fields(cls) if _numeric(hints[f.name]) and f.name not in ranges]
    assert undeclared == []


@pytest.mark.parametrize("name", sorted(available_models()))
def test_every_backbone_setting_is_type_checked(name):
    """Every field of every registered backbone config refuses a value of the wrong type (so each
    config validates itself on construction)."""
    cls = available_models()[name].config_cls
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        wrong = 1.5 if hints[f.name] is str else "x"
        with pytest.raises(SettingError, match=rf"^{f.name} must be "):
            make_config(name, {f.name: wrong})
        if hints[f.name] is int:
            with pytest.raises(SettingError, match=rf"^{f.name} must be an integer, got 2\.0$"):
                make_config(name, {f.name: 2.0})


def test_shapes_must_be_positive():
    with pytest.raises(SettingError, match=r"^audio_dim must be >= 1, got 0$"):
        DataShapes(16, 0, 7, 12, 20, 24, False, 3)
    with pytest.raises(SettingError, match="aligned must be true or false"):
        DataShapes(16, 5, 7, 12, 20, 24, "no", 3)


@pytest.mark.parametrize("name, value, words", BRIEF_EXAMPLES)
def test_cli_train_with_a_bad_config_file_exits_2_and_creates_nothing(tmp_path, capsys, name, value, words):
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({name: value}))
    out = tmp_path / "run"
    code, _, err = run_cli(["train", "--data", tmp_path / "never-read.pkl", "--out", out, "--config", config], capsys)
    assert code == 2
    assert one_error_line(err) == f"error: {config}: {name} must be {words}"
    assert not out.exists()


# ----------------------------------------------------------------------------------- CLI values


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("validation")
    return {"root": root, "data": tiny_data_file(root), "bert": tiny_bert_dir(root)}


@pytest.mark.parametrize("args, words", [
    (["--device", "tpu"], '--device must be auto, cpu, cuda or cuda:N, got "tpu"'),
    (["--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["--epochs", "-3"], "--epochs must be >= 1, got -3"),
    (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["--layers", "0"], "--layers must be >= 1, got 0"),
    (["--seed", "-1"], "--seed must be in [0, 4294967296), got -1"),
])
def test_cli_train_option_values(files, tmp_path, capsys, args, words):
    out = tmp_path / "run"
    code, _, err = run_cli(["train", "--data", files["data"], "--out", out, *args], capsys)
    assert code == 2 and one_error_line(err) == f"error: {words}"
    assert not out.exists()


@pytest.mark.parametrize("rates, words", [
    ("", "got no rate"),
    ("nan", "every rate must be in [0, 1], got nan"),
    ("inf", "every rate must be in [0, 1], got inf"),
    ("0,0.5,0.5", "0.5 is given twice"),
    ("0,1.5", "every rate must be in [0, 1], got 1.5"),
    ("-0.1", "got -0.1"),
    ("0:1:0.0000001", "gives 10,000,001 rates; at most 1001"),
    ("0:1e300:1", "at most 1001"),
    ("0:1:0", "a positive step"),
    ("0:1:nan", "finite numbers"),
    ("0:1", "finite numbers, a positive step"),
    ("x", "must look like 0:1:0.1"),
])
def test_cli_rates(files, tmp_path, capsys, rates, words):
    code, _, err = run_cli(["eval", "--run", tmp_path / "no-run", "--data", files["data"], "--out", tmp_path / "o",
                            "--rates", rates], capsys)
    line = one_error_line(err)
    assert code == 2 and line.startswith("error: --rates") and words in line  # before the run is even looked at


@pytest.mark.parametrize("seeds, words", [
    ("", "at least one seed"),
    ("1,1", "1 is given twice"),
    ("-1", "in [0, 2**32), got -1"),
    ("99999999999999999999", "got 99999999999999999999"),
    ("1.5", "comma-separated integers"),
])
def test_cli_seeds(files, tmp_path, capsys, seeds, words):
    code, _, err = run_cli(["eval", "--run", tmp_path / "no-run", "--data", files["data"], "--out", tmp_path / "o",
                            "--seeds", seeds], capsys)
    line = one_error_line(err)
    assert code == 2 and line.startswith("error: --seeds") and words in line


@pytest.mark.parametrize("argv, words", [
    (["maci", "vocab", "--data", "{data}", "--top-k", "-5"], "--top-k must be >= 1, got -5"),
    (["maci", "vocab", "--data", "{data}", "--cv", "-1"], "--cv must be >= 0, got -1.0"),
    (["model-info", "--audio-dim", "0"], "audio_dim must be >= 1, got 0"),
    (["model-info", "--text-len", "-2"], "text_len must be >= 1, got -2"),
    (["model-info", "--hidden", "0"], "hidden must be >= 1, got 0"),
    (["data", "synth", "--out", "{tmp}/s.pkl", "--scale", "0"], "--scale must be > 0, got 0.0"),
    (["ablate", "--data", "{data}", "--out", "{tmp}/abl", "--seeds", "0"], "--seeds must be >= 1, got 0"),
    (["ablate", "--data", "{data}", "--out", "{tmp}/abl", "--rates", "2"],
     "--rates: every rate must be in [0, 1], got 2.0"),
    (["tune", "--data", "{data}", "--out", "{tmp}/tune", "--trials", "0"], "--trials must be >= 1, got 0"),
    (["demo", "--out", "{tmp}/demo", "--epochs", "0"], "--epochs must be >= 1, got 0"),
])
def test_cli_values_are_checked_before_any_work(files, tmp_path, capsys, argv, words):
    argv = [a.format(data=files["data"], tmp=tmp_path) for a in argv]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and one_error_line(err) == f"error: {words}"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", [
    ["data", "check", "{dir}"],
    ["train", "--data", "{dir}", "--out", "{tmp}/run"],
    ["train", "--data", "{data}", "--out", "{tmp}/run", "--config", "{dir}"],
    ["data", "import-csv", "{dir}", "--out", "{tmp}/x.pkl"],
])
def test_a_directory_where_a_file_belongs(files, tmp_path, capsys, argv):
    folder = tmp_path / "folder"
    folder.mkdir()
    code, _, err = run_cli([a.format(dir=folder, data=files["data"], tmp=tmp_path) for a in argv], capsys)
    # A dataset may be a folder written by `cider data convert`; a plain folder is named as such.
    where = argv.index("{dir}")
    dataset = argv[where - 1] == "--data" or argv[:2] == ["data", "check"]
    expected = f"{folder}: a directory without dataset.json" if dataset else f"{folder}: is a directory"
    assert code == 2 and expected in one_error_line(err)
    assert [p.name for p in tmp_path.iterdir()] == ["folder"]


def test_end_of_file_is_a_bug_and_ctrl_c_is_130(monkeypatch, capsys, files):
    """The command-line parser turns EOFError and KeyboardInterrupt alike into an abort; only a real
    interrupt may exit 130 -- an end of file that no reader converted keeps its traceback."""
    from cider_mer.cli import data_cmds

    def eof(path):
        raise EOFError("ran out of input")

    monkeypatch.setattr(data_cmds, "load_dataset", eof)
    with pytest.raises(EOFError, match="ran out of input"):
        run_cli(["data", "check", files["data"]], capsys)

    def interrupt(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(data_cmds, "load_dataset", interrupt)
    code, _, err = run_cli(["data", "check", files["data"]], capsys)
    assert code == 130 and err.strip() in ("", "interrupted")


def test_library_errors_stay_tracebacks(monkeypatch, capsys, files):
    """The catch-all turns only the project's errors into one line; a bug keeps its traceback."""
    from cider_mer.cli import data_cmds

    def bug(path):
        raise KeyError("a bug")

    monkeypatch.setattr(data_cmds, "load_dataset", bug)
    with pytest.raises(KeyError):
        run_cli(["data", "check", files["data"]], capsys)


# ----------------------------------------------------------------------------------- feature files


@pytest.fixture(scope="module")
def tokenizer():
    from cider_mer.text.encoder import load_tokenizer

    return load_tokenizer()


def _csv(tmp_path):
    csv = tmp_path / "label.csv"
    csv.write_text("id,text,label,mode\na,good,1.5,train\nb,bad,-1.0,train\nc,meh,0.0,valid\nd,great,2.0,test\n")
    return csv


GOOD_NPZ = dict(ids=np.array(["a", "d"]), features=np.ones((2, 4, 3), np.float32), lengths=np.array([4, 2]))


@pytest.mark.parametrize("change, key, words", [
    ({"lengths": np.array([2.5, 1.0])}, "lengths", "expected whole numbers, got [2.5]"),
    ({"lengths": np.array([-1, 2])}, "lengths", "expected values in [0, 4] (T), got -1 .. 2"),
    ({"lengths": np.array([5, 2])}, "lengths", "expected values in [0, 4] (T), got 2 .. 5"),
    ({"lengths": np.array([[4, 2]])}, "lengths", "expected (M,) whole numbers"),
    ({"lengths": np.array(["4", "2"])}, "lengths", "expected (M,) whole numbers"),
    ({"ids": np.array(["a", "a"])}, "ids", "expected distinct ids, 'a' appears 2 times"),
    ({"ids": np.array([1, 2])}, "ids", "expected (M,) strings"),
    ({"ids": np.array([["a", "d"]])}, "ids", "expected (M,) strings"),
    ({"ids": np.array(["x", "y"])}, "ids", "none of its 2 ids matches an id of the CSV"),
    ({"features": np.ones((2, 4), np.float32)}, "features", "expected (M, T, d) numbers"),
    ({"features": np.ones((2, 0, 3), np.float32), "lengths": np.array([0, 0])}, "features", "T, d >= 1"),
    ({"features": np.full((2, 4, 3), np.nan, np.float32)}, "features", "expected finite values"),
    ({"features": np.full((2, 4, 3), "x")}, "features", "expected (M, T, d) numbers"),
    ({"ids": np.array([], dtype=str), "features": np.ones((0, 4, 3)), "lengths": np.array([], int)}, "ids",
     "M >= 1"),
])
def test_bad_feature_files_name_file_and_key(tmp_path, tokenizer, change, key, words):
    from cider_mer.data.import_csv import import_csv

    path = tmp_path / "audio.npz"
    np.savez(path, **{**GOOD_NPZ, **change})
    with pytest.raises(DatasetError) as exc:
        import_csv(_csv(tmp_path), tmp_path / "o.pkl", tokenizer=tokenizer, audio_features=path)
    assert str(exc.value).startswith(f"{path} [audio features, key '{key}']: ") and words in str(exc.value)
    assert not (tmp_path / "o.pkl").exists()


def test_feature_ids_without_a_csv_row_are_ignored_with_a_note(tmp_path, tokenizer):
    from cider_mer.data.import_csv import import_csv

    path = tmp_path / "audio.npz"
    np.savez(path, **{**GOOD_NPZ, "ids": np.array(["a", "zz"])})
    notes = []
    ds = import_csv(_csv(tmp_path), None, tokenizer=tokenizer, audio_features=path, note=notes.append)
    assert ds["train"].audio_lengths.tolist() == [4, 0]
    assert notes == [f"1 of 2 ids in {path} match no CSV row and are ignored (e.g. 'zz')"]


def test_cli_import_with_a_bad_feature_file(tmp_path, capsys):
    path = tmp_path / "audio.npz"
    np.savez(path, **{**GOOD_NPZ, "lengths": np.array([0.5, 1.0])})
    out = tmp_path / "o.pkl"
    code, _, err = run_cli(["data", "import-csv", _csv(tmp_path), "--out", out, "--audio-features", path], capsys)
    assert code == 2 and one_error_line(err).startswith(f"error: {path} [audio features, key 'lengths']")
    assert not out.exists()


# ----------------------------------------------------------------------------------- checkpoints and runs


@pytest.fixture(scope="module")
def trained(files, tmp_path_factory):
    import os

    from cider_mer.data.dataset import load_dataset
    from cider_mer.training.trainer import train

    root = tmp_path_factory.mktemp("validation-run")
    os.environ["CIDER_CACHE_DIR"] = str(root / "cache")
    torch.set_num_threads(1)
    cfg = TrainConfig(text_encoder=str(files["bert"]), freeze_text_encoder=True, epochs=1, batch_size=16,
                      eval_batch_size=32, model_config={"layers": 1, "heads": 2}, device="cpu", seed=3)
    train(cfg, load_dataset(files["data"]), root / "run", progress=False)
    return root / "run"


def _copy_run(trained, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    return run


def test_weights_with_nan_are_refused_naming_the_file_and_weight(trained, tmp_path, files, capsys):
    from safetensors.torch import load_file, save_file

    run = _copy_run(trained, tmp_path)
    state = load_file(run / "model.safetensors")
    name = sorted(k for k, v in state.items() if v.is_floating_point())[0]
    state[name] = state[name].clone()
    state[name].view(-1)[0] = float("nan")
    save_file(state, str(run / "model.safetensors"))
    code, out, err = run_cli(["eval", "--run", run, "--data", files["data"], "--out", tmp_path / "rep", "--rates", "0",
                              "--seeds", "0", "--device", "cpu", "--quiet"], capsys)
    assert code == 2 and one_error_line(err) == (
        f"error: {run / 'model.safetensors'}: weight '{name}' holds non-finite values (NaN or inf): the file is "
        "corrupted or the training that wrote it diverged")
    assert out == "" and not (tmp_path / "rep").exists()  # never a table


def test_non_finite_outputs_are_an_error_not_a_table(trained, files):
    from cider_mer.data.dataset import load_dataset
    from cider_mer.inference import NonFiniteOutputError
    from cider_mer.runs import load_run

    run = load_run(trained, device="cpu")
    with torch.no_grad():
        next(p for p in run.model.head.parameters()).fill_(float("inf"))
    with pytest.raises(NonFiniteOutputError, match="the model produced non-finite outputs"):
        run.predict(load_dataset(files["data"]), "test")


@pytest.mark.parametrize("name", ["model.safetensors", "resume.safetensors"])
@pytest.mark.parametrize("damage", ["empty", "truncated", "huge header", "text"])
def test_corrupt_checkpoints_name_the_file(trained, tmp_path, name, damage):
    from cider_mer.checkpoint import load_model, load_resume
    from cider_mer.runs import load_run
    from cider_mer.training.trainer import build_optimizer

    run = load_run(trained, device="cpu")
    path = tmp_path / name
    raw = (trained / name).read_bytes()
    path.write_bytes({"empty": b"", "truncated": raw[: len(raw) // 2], "text": b'{"not": "weights"}',
                      "huge header": (2 ** 62).to_bytes(8, "little") + raw[8:]}[damage])
    with pytest.raises(CiderError, match=rf"^{re.escape(str(path))}: cannot read the (model weights|resume state): "
                                         "not a complete safetensors file"):
        if name == "model.safetensors":
            load_model(path, run.model)
        else:
            load_resume(path, run.model, build_optimizer(run.model, run.cfg))


def test_resume_state_that_does_not_fit_is_named(trained, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from cider_mer.checkpoint import load_resume
    from cider_mer.runs import load_run
    from cider_mer.training.trainer import build_optimizer

    run = load_run(trained, device="cpu")
    tensors = load_file(trained / "resume.safetensors")
    with safe_open(str(trained / "resume.safetensors"), framework="pt") as f:
        meta = json.loads(f.metadata()["cider_mer"])
    del meta["param_groups"]
    path = tmp_path / "resume.safetensors"
    save_file(tensors, str(path), metadata={"cider_mer": json.dumps(meta)})
    with pytest.raises(CiderError, match=rf"^{re.escape(str(path))}: the resume state does not fit this run "
                                         r"\(KeyError"):
        load_resume(path, run.model, build_optimizer(run.model, run.cfg))


@pytest.mark.parametrize("name, content, words", [
    ("config.json", "{", "not readable as JSON (JSONDecodeError"),
    ("config.json", "[]", "unreadable run config"),
    ("config.json", '{"train": {}}', "unreadable run config (no entry 'shapes')"),
    ("config.json", '{"train": {"lr": "fast"}}', 'lr must be a number or null, got "fast"'),
    ("maci.json", "", "not readable as JSON"),
    ("maci.json", '{"vocabulary": {"token_ids": [1]}}', "unreadable bias vocabulary (KeyError"),
    ("maci.json", None, "token_ids (K,) in [0, 6000)"),
])
def test_broken_run_files_name_the_file(trained, tmp_path, files, capsys, name, content, words):
    run = _copy_run(trained, tmp_path)
    if content is None:  # token ids the encoder cannot embed
        stored = json.loads((run / name).read_text())
        stored["vocabulary"]["token_ids"][0] = 10 ** 9
        content = json.dumps(stored)
    (run / name).write_text(content)
    before = sorted(p.name for p in run.iterdir())
    code, _, err = run_cli(["eval", "--run", run, "--data", files["data"], "--out", tmp_path / "rep", "--rates", "0",
                            "--seeds", "0", "--device", "cpu", "--quiet"], capsys)
    line = one_error_line(err)
    assert code == 2 and line.startswith(f"error: {run / name}: ") and words in line
    assert sorted(p.name for p in run.iterdir()) == before and not (tmp_path / "rep").exists()


def test_diverging_training_stops_naming_the_epoch(files, tmp_path, monkeypatch):
    from cider_mer.data.dataset import load_dataset
    from cider_mer.runs import RunError
    from cider_mer.training import trainer

    real_step = trainer.mssd_step
    calls = []

    def diverge_in_epoch_2(*args, **kwargs):
        logs = real_step(*args, **kwargs)
        calls.append(1)
        n_batches = 4  # 60 training samples in batches of 16
        return {**logs, "loss": logs["loss"] * math.nan} if len(calls) > n_batches else logs

    monkeypatch.setattr(trainer, "mssd_step", diverge_in_epoch_2)
    cfg = TrainConfig(text_encoder=str(files["bert"]), freeze_text_encoder=True, epochs=3, batch_size=16,
                      eval_batch_size=32, model_config={"layers": 1, "heads": 2}, device="cpu", seed=3)
    with pytest.raises(RunError, match=r"training diverged at epoch 2: the mean training loss is nan .* "
                                       r"model\.safetensors keeps epoch 1$"):
        trainer.train(cfg, load_dataset(files["data"]), tmp_path / "run", progress=False)
    log = (tmp_path / "run" / "train_log.csv").read_text().splitlines()
    assert len(log) == 2  # header + epoch 1: the diverged epoch is neither logged nor saved


# ----------------------------------------------------------------------------------- caches


def test_a_damaged_text_feature_cache_entry_is_recomputed_with_a_warning(files, tmp_path):
    from cider_mer.data.dataset import load_dataset
    from cider_mer.text.cache import CacheWarning, cached_text_features
    from cider_mer.text.encoder import TextEncoder

    enc = TextEncoder.from_pretrained(str(files["bert"]), frozen=True)
    split = load_dataset(files["data"])["valid"]
    args = (files["data"], "valid", split.text_ids, split.text_mask, split.text_segment, enc)
    fresh = np.array(cached_text_features(*args, cache_dir=tmp_path))  # a copy: the entry is memory-mapped
    (entry,) = tmp_path.glob("textfeat-*.npy")
    assert (tmp_path / f"{entry.name}.sha256").is_file()
    raw = bytearray(entry.read_bytes())
    for damage in ("flip", "truncate", "no checksum"):
        if damage == "flip":  # same size, still a valid .npy: only the checksum can tell
            entry.write_bytes(bytes(raw[:-4]) + b"\x00\x00\x80\x7f")
        elif damage == "truncate":
            entry.write_bytes(bytes(raw[: len(raw) // 2]))
        else:
            (tmp_path / f"{entry.name}.sha256").unlink()
        with pytest.warns(CacheWarning, match=rf"{re.escape(str(entry))}: cache entry ignored and recomputed"):
            again = cached_text_features(*args, cache_dir=tmp_path)
        assert np.array_equal(again, fresh)
        assert entry.read_bytes() == bytes(raw)  # rewritten
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        assert np.array_equal(cached_text_features(*args, cache_dir=tmp_path), fresh)  # intact: no warning


def test_a_damaged_statistics_cache_entry_is_recomputed_with_a_warning(files, tmp_path):
    from cider_mer.data.dataset import load_dataset
    from cider_mer.maci.statistics import cached_statistics
    from cider_mer.text.cache import CacheWarning

    train = load_dataset(files["data"])["train"]
    states = lambda: np.ones((train.n, train.text_ids.shape[1], 16), np.float32)  # noqa: E731
    fresh = cached_statistics(files["data"], train, "binary", "tag", states, cache_dir=tmp_path)
    (entry,) = tmp_path.glob("mcm-*.npz")
    entry.write_bytes(b"PK\x03\x04 not a zip any more")
    with pytest.warns(CacheWarning, match="cache entry ignored and recomputed"):
        again = cached_statistics(files["data"], train, "binary", "tag", states, cache_dir=tmp_path)
    assert np.array_equal(again.class_means, fresh.class_means) and np.array_equal(again.priors, fresh.priors)
