"""MSSD training: the two-stage step, validation-only selection, resume, run-dir errors."""

import copy
import csv

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cider_mer.batches import DeviceSplit
from cider_mer.config import TrainConfig
from cider_mer.data.dataset import load_dataset
from cider_mer.missing import apply_missing, dropped_masks, sample_training_keep
from cider_mer.models.interface import KeepMasks
from cider_mer.models.registry import build_model
from cider_mer.runs import RunError, shapes_for
from cider_mer.training import losses
from cider_mer.training.trainer import EpochRandomness, mssd_step, objective_step, train, train_epoch

from helpers import tiny_bert_dir, tiny_data_file

NO_DROPOUT = {"embed_dropout": 0.0, "out_dropout": 0.0, "relu_dropout": 0.0, "res_dropout": 0.0,
              "layers": 1, "heads": 2}


@pytest.fixture(scope="module")
def env(tmp_path_factory, monkeypatch_module=None):
    root = tmp_path_factory.mktemp("train")
    return {"root": root, "bert": tiny_bert_dir(root), "data": tiny_data_file(root)}


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CIDER_CACHE_DIR", str(tmp_path / "cache"))


def cfg_for(env, **kw):
    base = dict(text_encoder=str(env["bert"]), freeze_text_encoder=True, epochs=3, patience=5, batch_size=16,
                eval_batch_size=32, model_config={"layers": 1, "heads": 2}, seed=7, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def test_stage_two_gradients_contain_no_stage_one_term(env):
    from cider_mer.text.encoder import TextEncoder

    data = load_dataset(env["data"])
    enc = TextEncoder.from_pretrained(str(env["bert"]), frozen=False)
    torch.manual_seed(0)
    model = build_model("cider", shapes_for(data, enc.dim, "binary"), NO_DROPOUT, text_encoder=enc, maci=False)
    reference = copy.deepcopy(model)
    split = DeviceSplit.from_split(data["train"], "binary", "cpu")
    idx = torch.arange(16)
    inputs, labels = split.inputs(idx), split.labels[idx]
    keep = sample_training_keep(inputs.text_mask, inputs.audio_mask, inputs.vision_mask,
                                torch.Generator().manual_seed(0))
    cfg = TrainConfig(model_config=NO_DROPOUT)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: both stages see the same weights
    mssd_step(model, opt, inputs, labels, keep, cfg)

    # reference: stage-2 loss alone, from a fresh backward
    complete = reference(inputs)
    missing = reference(apply_missing(inputs, keep), need_recon=True)
    loss = (F.nll_loss(missing.log_probs, labels)
            + 0.6 * losses.reconstruction_loss(missing, complete, inputs, dropped_masks(inputs, keep))
            + 0.1 * losses.attention_loss(missing, complete) + 0.5 * losses.joint_loss(missing, complete))
    reference.zero_grad()
    loss.backward()
    stage1 = copy.deepcopy(reference)
    stage1.zero_grad()
    F.nll_loss(stage1(inputs).log_probs, labels).backward()
    leaked_would_differ = False
    for (name, p), q, s in zip(model.named_parameters(), reference.parameters(), stage1.parameters()):
        if q.grad is None:
            assert p.grad is None or torch.count_nonzero(p.grad) == 0, name
            continue
        assert torch.allclose(p.grad, q.grad, atol=1e-6, rtol=1e-4), name
        if s.grad is not None and torch.count_nonzero(s.grad):
            leaked_would_differ = True
    assert leaked_would_differ  # stage 1 had gradients, so a leak would have been visible


def test_gradient_accumulation_sums_the_batches_of_a_group_before_one_step(env):
    """With the model's own objective, a group's gradient is the SUM of its batches' gradients
    (as MMSA/DLF accumulate), zeroed only at a group's start; one step per group, the trailing
    partial group included."""
    from cider_mer.text.encoder import TextEncoder

    data = load_dataset(env["data"])
    enc = TextEncoder.from_pretrained(str(env["bert"]), frozen=True)
    torch.manual_seed(0)
    model = build_model("cider", shapes_for(data, enc.dim, "binary"), NO_DROPOUT, text_encoder=enc, maci=False)
    model.eval()  # no dropout: each pass is a function of its batch
    split = DeviceSplit.from_split(data["train"], "binary", "cpu")
    cfg = TrainConfig(model_config=NO_DROPOUT, mssd=False, grad_accumulation=3, freeze_text_encoder=True)
    batches = [torch.arange(0, 16), torch.arange(16, 32)]

    def everything(idx):  # nothing dropped: the gradients depend on the batch only
        x = split.inputs(idx)
        return KeepMasks(x.text_mask > 0, x.audio_mask > 0, x.vision_mask > 0)

    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    single = []
    for idx in batches:  # each batch's own gradient
        objective_step(model, opt, split.inputs(idx), split.labels[idx], everything(idx), cfg,
                       starts_group=True, ends_group=False)
        single.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    for k, idx in enumerate(batches):  # one group of two batches
        objective_step(model, opt, split.inputs(idx), split.labels[idx], everything(idx), cfg,
                       starts_group=k == 0, ends_group=False)
    summed = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert summed and set(summed) == set(single[0])
    for n in summed:
        assert torch.allclose(summed[n], single[0][n] + single[1][n], atol=1e-6), n
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # no step inside a group

    steps = []
    opt.step = lambda *a, **k: steps.append(1)
    rng = EpochRandomness(torch.Generator().manual_seed(0), torch.Generator().manual_seed(1))
    _, n_batches = train_epoch(model, opt, split, TrainConfig(mssd=False, grad_accumulation=3, batch_size=16), rng)
    assert n_batches == 4 and len(steps) == 2  # 3 + the trailing 1
    steps.clear()
    train_epoch(model, opt, split, TrainConfig(mssd=False, grad_accumulation=1, batch_size=16), rng)
    assert len(steps) == 4


def test_training_never_reads_the_test_split(env, tmp_path):
    data = load_dataset(env["data"])

    class Forbidden:
        def __getattr__(self, name):
            raise AssertionError(f"training read the test split ({name})")

    data.splits["test"] = Forbidden()
    result = train(cfg_for(env, epochs=2), data, tmp_path / "run", progress=False)
    assert result.epochs_run == 2
    rows = list(csv.DictReader(open(tmp_path / "run" / "train_log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(k.startswith("val_") or not k.startswith("test") for k in rows[0])


def test_resume_gives_the_same_run(env, tmp_path):
    data = load_dataset(env["data"])
    cfg = cfg_for(env, epochs=4, model_config={"layers": 1, "heads": 2, "embed_dropout": 0.3})
    full = train(cfg, data, tmp_path / "full", progress=False)

    class Killed(Exception):
        pass

    def kill_after_two(epoch, row):
        if epoch == 2:
            raise Killed()

    with pytest.raises(Killed):
        train(cfg, data, tmp_path / "cut", progress=False, epoch_callback=kill_after_two)
    with pytest.raises(RunError, match="--resume"):
        train(cfg, data, tmp_path / "cut", progress=False)
    resumed = train(cfg, data, tmp_path / "cut", resume=True, progress=False)
    assert resumed.best_value == full.best_value and resumed.best_epoch == full.best_epoch
    a = list(csv.DictReader(open(tmp_path / "full" / "train_log.csv")))
    b = list(csv.DictReader(open(tmp_path / "cut" / "train_log.csv")))
    for ra, rb in zip(a, b):
        assert ra["loss"] == rb["loss"] and ra["val_non0_acc2"] == rb["val_non0_acc2"]
    from safetensors.torch import load_file

    wa, wb = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_refuses_changed_settings(env, tmp_path):
    data = load_dataset(env["data"])
    train(cfg_for(env, epochs=1), data, tmp_path / "r", progress=False)
    with pytest.raises(RunError, match="same settings"):
        train(cfg_for(env, epochs=1, seed=99), data, tmp_path / "r", resume=True, progress=False)


def test_finetuned_encoder_gets_its_own_optimizer_groups(env, tmp_path):
    from cider_mer.runs import Run
    from cider_mer.training.trainer import build_optimizer

    data = load_dataset(env["data"])
    cfg = cfg_for(env, freeze_text_encoder=False)
    prep = Run.create(cfg, data, tmp_path / "unused")
    opt = build_optimizer(prep.model, cfg)
    lrs = sorted((g["lr"], g["weight_decay"]) for g in opt.param_groups)
    assert lrs == [(5e-5, 0.0), (5e-5, 1e-3), (1e-3, 0.0)]
    n_opt = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n_opt == sum(p.numel() for p in prep.model.parameters())
    result = train(cfg, data, tmp_path / "ft", progress=False)
    assert np.isfinite(result.best_value)


def test_bucketed_batches_cover_everything_once_and_group_lengths():
    from cider_mer.batches import bucketed_batches

    lengths = torch.randint(3, 50, (1000,), generator=torch.Generator().manual_seed(0))
    batches = list(bucketed_batches(lengths, 64, torch.Generator().manual_seed(1), "cpu", window_batches=4))
    flat = torch.cat(batches)
    assert torch.equal(flat.sort().values, torch.arange(1000))
    spread = np.mean([float(lengths[b].max() - lengths[b].min()) for b in batches])
    assert spread < 20  # random batches of 64 span ~45 length units
    again = list(bucketed_batches(lengths, 64, torch.Generator().manual_seed(1), "cpu", window_batches=4))
    assert all(torch.equal(a, b) for a, b in zip(batches, again))


def test_length_buckets_option_trains(env, tmp_path):
    data = load_dataset(env["data"])
    result = train(cfg_for(env, epochs=1, length_buckets=True), data, tmp_path / "b", progress=False)
    assert np.isfinite(result.best_value)


def test_bf16_encoder_is_close_and_cached_separately(env):
    from cider_mer.runs import configure_encoder
    from cider_mer.text.cache import encoder_fingerprint
    from cider_mer.text.encoder import TextEncoder

    enc = TextEncoder.from_pretrained(str(env["bert"]), frozen=True)
    ids = torch.randint(1000, 5000, (4, 10))
    mask, seg = torch.ones(4, 10), torch.zeros(4, 10, dtype=torch.long)
    with torch.no_grad():
        full = enc(ids, mask, seg)
        key_full = encoder_fingerprint(enc)
        configure_encoder(enc, TrainConfig(encoder_precision="bf16"))
        half = enc(ids, mask, seg)
    assert half.dtype == torch.float32
    assert float((half - full).norm() / full.norm()) < 0.05
    assert encoder_fingerprint(enc) != key_full
    with pytest.raises(ValueError, match="encoder_precision"):
        TrainConfig(encoder_precision="fp8")
