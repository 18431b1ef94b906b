"""Every registered model against the backbone contract (timm's test_models.py is the pattern).

A model gets these checks by registering: build, training step (its own recipe: MSSD or its own
objective) with a tiny random BERT, aligned and unaligned, every task's head width, a fully
missing modality, batch size 1, no NaN, gradients on every trainable parameter (but those the
original never trains, declared in ``Backbone.never_trained``), ``model-info`` counts, and
save -> ``load_run`` -> identical predictions.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import cider_mer
from cider_mer.batches import DeviceSplit
from cider_mer.cli import main
from cider_mer.config import TrainConfig
from cider_mer.data.dataset import dataset_from_dict, load_dataset
from cider_mer.data.labels import num_classes
from cider_mer.missing import sample_training_keep
from cider_mer.models.interface import KeepMasks
from cider_mer.models.registry import available_models, build_model
from cider_mer.runs import Run, shapes_for
from cider_mer.text.encoder import TextEncoder
from cider_mer.training.trainer import mssd_step

from conftest import make_dataset_dict
from helpers import tiny_bert_dir, tiny_data_file

MODELS = sorted(available_models())
# Settings that keep a model small or skip a long first stage; nothing else differs from its defaults.
TINY = {"mplmm": {"pretrain_epochs": 0}}


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread, tmp_path, monkeypatch):
    monkeypatch.setenv("CIDER_CACHE_DIR", str(tmp_path / "cache"))


def tiny_encoder(seed: int = 0) -> TextEncoder:
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=6000, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64)
    return TextEncoder(BertModel(cfg, add_pooling_layer=False), name="tiny")


def batch(aligned: bool, task: str, n: int = 9):
    data = dataset_from_dict(make_dataset_dict(seed=1, sizes=(n, 2, 2), aligned=aligned))
    split = DeviceSplit.from_split(data["train"], task, "cpu")
    return data, split


def test_every_builtin_model_is_registered_with_its_source():
    assert {"cider", "late_fusion", "mult", "dlf", "mplmm", "lnln", "emt_dlfr"} <= set(MODELS)
    for spec in available_models().values():
        assert spec.source and spec.description


@pytest.mark.parametrize("aligned", [False, True], ids=["unaligned", "aligned"])
@pytest.mark.parametrize("task", ["binary", "regression"])
@pytest.mark.parametrize("name", MODELS)
def test_training_step_reaches_every_trainable_parameter(name, task, aligned):
    data, split = batch(aligned, task)
    enc = tiny_encoder()
    cfg = TrainConfig(model=name, task=task, model_config=TINY.get(name), head="linear", counterfactual=False)
    torch.manual_seed(0)
    model = build_model(name, shapes_for(data, enc.dim, task), cfg.model_config, text_encoder=enc, maci=False)
    model.backbone.epoch_plan(1)
    inputs = split.inputs()
    inputs = inputs.replace(audio_mask=inputs.audio_mask.clone())
    inputs.audio_mask[8] = 0  # sample 8: no audio frame at all in the data
    inputs = inputs.replace(audio=inputs.audio * inputs.audio_mask[..., None])
    # Every pattern of whole modalities missing appears once (sample i drops text / audio / vision by its bits),
    # so parameters used for one pattern only (e.g. MPLMM's generators) are reached too; the other samples'
    # positions are kept or dropped at random (rate 0.3).
    keep = sample_training_keep(inputs.text_mask, inputs.audio_mask, inputs.vision_mask,
                                torch.Generator().manual_seed(0), "per_position")
    text_mask = inputs.text_mask > 0
    positions = torch.arange(text_mask.shape[1])[None, :]
    boundary = text_mask & ((positions == 0) | (positions == text_mask.sum(1, keepdim=True) - 1))
    random = torch.rand(keep.text.shape, generator=torch.Generator().manual_seed(1)) > 0.3
    pattern = torch.arange(9)[:, None] % 8
    keep = KeepMasks(torch.where(pattern & 1 > 0, boundary, text_mask & (random | boundary)),
                     (inputs.audio_mask > 0) & (pattern & 2 == 0), (inputs.vision_mask > 0) & (pattern & 4 == 0))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
    logs = mssd_step(model, optimizer, inputs, split.labels, keep, cfg)
    assert all(torch.isfinite(v) for v in logs.values()), logs
    never = model.backbone.never_trained
    for pname, p in model.named_parameters():
        inner = pname.removeprefix("backbone.")
        if not p.requires_grad or any(inner.startswith(prefix) for prefix in never):
            continue
        assert p.grad is not None, f"{name}: no gradient reaches {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient in {pname}"
    model.eval()
    with torch.no_grad():
        out = model(inputs)
    assert out.log_probs.shape == (9, num_classes(task)) and torch.isfinite(out.log_probs).all()
    assert out.joint.shape == (9, model.backbone.joint_dim) and torch.isfinite(out.joint).all()


@pytest.mark.parametrize("name", MODELS)
def test_batch_of_one_and_missing_modalities_give_finite_outputs(name):
    data, split = batch(False, "binary")
    model = build_model(name, shapes_for(data, 16, "binary"), TINY.get(name), text_encoder=tiny_encoder(), maci=False)
    model.backbone.epoch_plan(1)
    model.eval()
    one = split.inputs(torch.tensor([2]))
    none = one.replace(audio=torch.zeros_like(one.audio), audio_mask=torch.zeros_like(one.audio_mask),
                       vision=torch.zeros_like(one.vision), vision_mask=torch.zeros_like(one.vision_mask))
    with torch.no_grad():
        for inputs in (one, none):
            out = model(inputs)
            assert out.log_probs.shape == (1, 3) and torch.isfinite(out.log_probs).all()
            assert torch.allclose(out.log_probs.exp().sum(-1), torch.ones(1), atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_model_info_counts_equal_the_built_module(name, capsys):
    main(["model-info", "--model", name, "--task", "seven", "--text-dim", "32", "--audio-dim", "5",
          "--vision-dim", "7", "--text-len", "12", "--audio-len", "20", "--vision-len", "24", "--json"])
    info = json.loads(capsys.readouterr().out)
    from cider_mer.models.interface import DataShapes

    model = build_model(name, DataShapes(32, 5, 7, 12, 20, 24, False, 7), None, maci=True)
    assert info["params_excluding_text_encoder"] == sum(p.numel() for p in model.parameters())
    assert info["params_maci"] == sum(p.numel() for p in model.head.parameters())


@pytest.mark.parametrize("name", MODELS)
def test_saved_run_loads_with_identical_predictions(name, tmp_path):
    bert, path = tiny_bert_dir(tmp_path), tiny_data_file(tmp_path, sizes=(24, 8, 8))
    data = load_dataset(path)
    cfg = TrainConfig(model=name, model_config=TINY.get(name), text_encoder=str(bert), freeze_text_encoder=True,
                      device="cpu", eval_batch_size=5, seed=3)
    run = Run.create(cfg, data, tmp_path / "run")
    with torch.no_grad():  # move weights off their initial values, so a load that skipped them would show
        for p in run.model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    run.save_config()
    run.save_weights({"epoch": 0})
    before = run.predict(data, "test")
    loaded = cider_mer.load_run(tmp_path / "run", device="cpu")
    after = loaded.predict(data, "test")
    assert np.array_equal(before.log_probs, after.log_probs)
    assert np.array_equal(before.cf_log_probs, after.cf_log_probs)
    assert np.isfinite(after.log_probs).all()


def test_choosing_a_model_brings_its_own_recipe():
    """`cider train --model NAME` starts from the defaults: baselines train with their own objective."""
    from cider_mer.config import compose_config

    assert compose_config(None).mssd and not compose_config(None, model="dlf").mssd
    assert compose_config(None, model="dlf", mssd=True).mssd
    dlf = compose_config(None, model="dlf", model_config={"dim": 40, "heads": 8})
    assert dlf.model_config.dim == 40 and not dlf.with_overrides(model="cider").model_config == dlf.model_config
    assert dlf.with_overrides(model="cider").mssd


def test_each_model_trains_at_its_published_learning_rate():
    """lr=None is the backbone's published lr; switching models resets it; a given lr is kept."""
    from cider_mer.config import TrainConfig, compose_config

    published = {"cider": 1e-3, "mult": 2e-3, "dlf": 1e-4, "lnln": 1e-4, "mplmm": 1e-3, "emt_dlfr": 1e-3}
    assert {m: compose_config(None, model=m).lr for m in published} == published
    assert compose_config(None).with_overrides(model="lnln").lr == 1e-4
    assert compose_config(None, model="lnln", lr=5e-4).lr == 5e-4
    assert compose_config(None, model="dlf").with_overrides(epochs=3).lr == 1e-4
    assert TrainConfig.from_dict(TrainConfig(model="mult").to_dict()).lr == 2e-3


def test_each_model_trains_with_its_published_batch_and_accumulation():
    """batch_size/grad_accumulation None are the backbone's published recipe (DLF 10 batches of 16,
    MMSA's MulT 8 of 16); switching model or objective resets them; MSSD refuses accumulation."""
    from cider_mer.config import TrainConfig, compose_config
    from cider_mer.errors import ConfigError

    published = {"cider": (128, 1), "mult": (16, 8), "dlf": (16, 10), "lnln": (64, 1), "mplmm": (64, 1),
                 "emt_dlfr": (128, 1), "late_fusion": (128, 1)}
    got = {m: (c.batch_size, c.grad_accumulation) for m in published for c in [compose_config(None, model=m)]}
    assert got == published
    dlf = compose_config(None, model="dlf")
    assert (dlf.with_overrides(model="cider").batch_size, dlf.with_overrides(model="cider").grad_accumulation) == (128, 1)
    assert dlf.with_overrides(mssd=True).grad_accumulation == 1  # MSSD steps twice per batch: no accumulation
    assert compose_config(None, model="dlf", batch_size=32, grad_accumulation=2).grad_accumulation == 2
    assert TrainConfig.from_dict(dlf.to_dict()).grad_accumulation == 10
    with pytest.raises(ConfigError, match="grad_accumulation must be 1 with MSSD"):
        TrainConfig(model="cider", grad_accumulation=4)
