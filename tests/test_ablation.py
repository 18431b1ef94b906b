"""The ablation suite: each variant switches exactly its part; running, resuming, aggregating, CLI."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
import torch

from cider_mer.ablation.aggregate import aggregate, compute_seconds
from cider_mer.ablation.render import results_section
from cider_mer.ablation.run import REPORT_METRICS, SuiteSettings, run_dir_for
from cider_mer.ablation.suite import default_base_config, run_ablation
from cider_mer.ablation.variants import VARIANT_NAMES, VARIANTS, get_variant, parse_variants
from cider_mer.config import TrainConfig
from cider_mer.io_utils import update_marked_section
from cider_mer.models.cider import CiderConfig
from cider_mer.models.interface import DataShapes
from cider_mer.models.registry import build_model
from cider_mer.runs import RunError

from helpers import tiny_bert_dir, tiny_data_file

# What each variant may change, field by field ("model_config.KEY" for backbone settings).
EXPECTED_CHANGES = {
    "full": {},
    "no_recon": {"recon_weight": 0.0},
    "no_attn": {"attn_weight": 0.0},
    "no_joint": {"joint_weight": 0.0},
    "no_mssd": {"mssd": False},
    "no_mcm": {"head": "linear"},
    "no_cf": {"counterfactual": False},
    "no_maci": {"head": "linear", "counterfactual": False},
    "no_wsam": {"model_config.use_wsam": False},
    "no_mct": {"model_config.use_mct": False},
}
ALL_TERMS = {"loss_complete", "loss_missing", "loss_recon", "loss_attn", "loss_joint", "loss"}
EXPECTED_TERMS = {
    "no_recon": ALL_TERMS - {"loss_recon"},
    "no_attn": ALL_TERMS - {"loss_attn"},
    "no_joint": ALL_TERMS - {"loss_joint"},
    "no_mssd": {"loss_missing", "loss"},
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablation")
    return {"root": root, "bert": tiny_bert_dir(root), "data": tiny_data_file(root, sizes=(40, 16, 16))}


@pytest.fixture(autouse=True)
def small_cpu(tmp_path, monkeypatch, one_torch_thread):
    """Feature cache in tmp; one intra-op thread."""
    monkeypatch.setenv("CIDER_CACHE_DIR", str(tmp_path / "cache"))


def tiny_base(env, **kw) -> TrainConfig:
    values = dict(text_encoder=str(env["bert"]), freeze_text_encoder=True, epochs=2, patience=5, batch_size=16,
                  eval_batch_size=32, model_config={"layers": 1, "heads": 2}, seed=5, device="cpu")
    values.update(kw)
    return TrainConfig(**values)


# ----------------------------------------------------------------------------- the variant table


def _field_diff(a: TrainConfig, b: TrainConfig) -> dict:
    """Differences computed here from the dataclass fields (independently of TrainConfig.differences)."""
    out = {}
    for f in dataclasses.fields(TrainConfig):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if f.name == "model_config":
            va, vb = dataclasses.asdict(va), dataclasses.asdict(vb)
            for k in set(va) | set(vb):
                if va.get(k, "<unset>") != vb.get(k, "<unset>"):
                    out[f"model_config.{k}"] = vb.get(k)
        elif va != vb:
            out[f.name] = vb
    return out


@pytest.mark.parametrize("base", [TrainConfig(), default_base_config(),
                                  TrainConfig(task="seven", model_config={"layers": 1, "heads": 4, "hidden": 16},
                                              recon_weight=0.3, seed=3)])
def test_each_variant_changes_exactly_its_part(base):
    assert list(VARIANTS) == list(EXPECTED_CHANGES)
    frozen_base = base.to_dict()
    full = get_variant("full").apply(base)
    assert full == base and full is not base
    for name in VARIANT_NAMES:
        cfg = get_variant(name).apply(base)
        assert _field_diff(full, cfg) == EXPECTED_CHANGES[name], name
        assert set(full.differences(cfg)) == set(EXPECTED_CHANGES[name]), name
    assert base.to_dict() == frozen_base  # the base (and its model_config dict) is never mutated


def test_variants_switch_the_intended_behaviour():
    base = default_base_config()
    cfg = {n: get_variant(n).apply(base) for n in VARIANT_NAMES}
    assert set(cfg["full"].distillation_weights) == {"recon", "attn", "joint"}
    assert set(cfg["no_recon"].distillation_weights) == {"attn", "joint"}
    assert set(cfg["no_attn"].distillation_weights) == {"recon", "joint"}
    assert set(cfg["no_joint"].distillation_weights) == {"recon", "attn"}
    assert cfg["no_mssd"].distillation_weights == {} and not cfg["no_mssd"].mssd
    maci = {n: c.head == "mcm" or c.counterfactual for n, c in cfg.items()}
    assert maci["no_mcm"] and maci["no_cf"] and not maci["no_maci"]
    assert cfg["no_wsam"].model_config == CiderConfig(layers=2, heads=2, use_wsam=False)
    assert cfg["no_mct"].model_config == CiderConfig(layers=2, heads=2, use_mct=False)


def test_default_base_is_the_demo_setting():
    from cider_mer.training.presets import DEMO_MODEL

    base = default_base_config("seven", epochs=6)
    assert base.task == "seven" and base.freeze_text_encoder and base.text_encoder is None
    assert base.model_config == CiderConfig(**DEMO_MODEL) and base.epochs == 6 and base.model == "cider"
    assert base.head == "mcm" and base.counterfactual and base.mssd


def test_parse_variants_order_and_errors():
    assert parse_variants(None) == list(VARIANT_NAMES) == parse_variants("all")
    assert parse_variants("no_mct, full,no_mssd,full") == ["full", "no_mssd", "no_mct"]
    with pytest.raises(ValueError, match="unknown ablation variant 'no_such'"):
        parse_variants("full,no_such")


def test_backbone_switch_refused_for_a_model_without_it():
    base = TrainConfig(model="late_fusion")
    assert get_variant("no_maci").apply(base).head == "linear"
    with pytest.raises(ValueError, match="use_wsam"):
        get_variant("no_wsam").apply(base)


# ----------------------------------------------------------------------------- parameter counts

E, L_T, T_A, T_V = 32, 50, 375, 500
MOSI_SHAPES = dict(text_dim=768, audio_dim=5, vision_dim=20, text_len=L_T, audio_len=T_A, vision_len=T_V,
                   aligned=False)


def _counts(cfg: TrainConfig) -> dict:
    shapes = DataShapes(**MOSI_SHAPES, num_classes=3 if cfg.task == "binary" else 7)
    return build_model(cfg.model, shapes, cfg.model_config, text_encoder=None, maci=cfg.head == "mcm").parameter_counts()


@pytest.mark.parametrize("task,layers", [("binary", 2), ("seven", 3)])
def test_parameter_counts_of_the_variants(task, layers):
    base = TrainConfig(task=task, model_config={"layers": layers, "heads": 2})
    c = {n: _counts(get_variant(n).apply(base)) for n in VARIANT_NAMES}
    n_cls = 3 if task == "binary" else 7
    full = c["full"]["params_excluding_text_encoder"]
    # Switches that only change training or evaluation leave the architecture alone.
    for name in ("no_recon", "no_attn", "no_joint", "no_mssd", "no_cf"):
        assert c[name] == c["full"], name
    # The MCM head is replaced by Linear(3E, C); nothing else changes.
    linear = 3 * E * n_cls + n_cls
    for name in ("no_mcm", "no_maci"):
        assert c[name]["params_maci"] == 0
        assert c[name]["params_excluding_text_encoder"] == full - c["full"]["params_maci"] + linear, name
    # w/o WSAM: two WSAM modules gone; the reconstruction time-linears map T->T instead of L->T.
    no_wsam = full - 2 * (4 * E * E + 4 * E) + T_A * (T_A - L_T) + T_V * (T_V - L_T)
    assert c["no_wsam"]["params_excluding_text_encoder"] == no_wsam
    # w/o MCT: each layer's attention is 4E^2+4E instead of 23E^2+14E.
    assert c["no_mct"]["params_excluding_text_encoder"] == full - layers * (19 * E * E + 10 * E)
    if task == "binary" and layers == 2:  # SPEC §3's reference figures
        assert full == 244_086 and c["full"]["params_maci"] == 33_545


# ----------------------------------------------------------------------------- loss terms per variant


def test_mssd_step_terms_per_variant(env):
    from cider_mer.data.dataset import load_dataset
    from cider_mer.missing import sample_training_keep
    from cider_mer.runs import Run
    from cider_mer.text.encoder import TextEncoder
    from cider_mer.training.trainer import build_optimizer, mssd_step

    data = load_dataset(env["data"])
    enc = TextEncoder.from_pretrained(str(env["bert"]), frozen=True)
    base = tiny_base(env)
    for name in VARIANT_NAMES:
        cfg = get_variant(name).apply(base)
        prep = Run.create(cfg, data, env["root"] / "unused", encoder=enc)
        split = prep.split(data, "train")
        idx = torch.arange(8)
        inputs = split.inputs(idx)
        keep = sample_training_keep(inputs.text_mask, inputs.audio_mask, inputs.vision_mask,
                                    torch.Generator().manual_seed(0))
        opt = build_optimizer(prep.model, cfg)
        steps = []
        original = opt.step
        opt.step = lambda *a, **k: (steps.append(1), original(*a, **k))[1]
        logs = mssd_step(prep.model, opt, inputs, split.labels[idx], keep, cfg)
        assert set(logs) == EXPECTED_TERMS.get(name, ALL_TERMS), name
        assert all(torch.isfinite(v) for v in logs.values()), name
        assert len(steps) == (1 if name == "no_mssd" else 2), name  # no complete-data stage without MSSD


# ----------------------------------------------------------------------------- the suite (tiny encoder)


def test_suite_runs_aggregates_and_resumes(env, tmp_path):
    base = tiny_base(env)
    out = tmp_path / "abl"
    lines: list[str] = []
    agg = run_ablation(base, env["data"], out, variants="no_maci,full", n_seeds=2, eval_seeds=[0, 1],
                       rates=[0.0, 0.5, 1.0], progress=False, log=lines.append, command="cider ablate (test)")
    for f in ("ablation.md", "ablation.csv", "ablation.json", "ablation.png"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0
    assert list(agg.variants) == ["full", "no_maci"] and agg.finished
    assert agg.training_seeds == [5, 6] and agg.eval_seeds == [0, 1]
    assert agg.command == "cider ablate (test)" and "torch" in agg.versions
    assert agg.base_config["seed"] == 5 and agg.metrics == list(REPORT_METRICS["binary"])
    stored = json.loads((out / "ablation.json").read_text())
    assert stored["variants"]["full"]["summary"] == json.loads(json.dumps(agg.to_dict()["variants"]["full"]["summary"]))

    # Every (variant, seed) is a normal run with its evaluation; the aggregate follows from them.
    for name in ("full", "no_maci"):
        per_seed = []
        rate0 = []
        for seed in (5, 6):
            run = run_dir_for(out, name, seed)
            meta = json.loads((run / "config.json").read_text())
            assert meta["train"]["seed"] == seed
            assert meta["train"]["head"] == ("linear" if name == "no_maci" else "mcm")
            res = json.loads((run / "eval" / "results.json").read_text())
            assert res["split"] == "test" and res["missing_mode"] == "RMFM" and res["seeds"] == [0, 1]
            per_seed.append(res["auilc"]["non0_acc2"])
            rate0.append(res["metrics"]["non0_acc2"]["mean"][0])
        s = agg.variants[name]
        assert s.auilc["non0_acc2"].mean == pytest.approx(np.mean(per_seed))
        assert s.auilc["non0_acc2"].std == pytest.approx(np.std(per_seed))
        assert s.rate0["non0_acc2"].mean == pytest.approx(np.mean(rate0))
        assert len(s.curve["non0_acc2"].mean) == 3
    assert agg.variants["no_maci"].mssd_terms == ["attn", "joint", "recon"]
    assert agg.variants["full"].params_excluding_text_encoder > agg.variants["no_maci"].params_excluding_text_encoder
    md = (out / "ablation.md").read_text()
    assert "| `full` | CIDer |" in md and "| `no_maci` | w/o MACI: w/o all |" in md and "2/2" in md
    rows = list(csv.DictReader(open(out / "ablation.csv")))
    assert [r["variant"] for r in rows] == ["full", "no_maci"]
    assert float(rows[0]["auilc_non0_acc2_mean"]) == pytest.approx(agg.variants["full"].auilc["non0_acc2"].mean, abs=1e-4)
    train_s, eval_s, n_runs = compute_seconds(agg)
    assert n_runs == 4 and train_s > 0 and eval_s > 0
    assert f"{train_s / 60:.1f} min of training" in md

    # The table can be placed into a results document between its markers, leaving the rest.
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n\nintro\n\n<!-- ablation:begin -->\nold\n<!-- ablation:end -->\n\nafter\n")
    update_marked_section(doc, "ablation", results_section(agg))
    text = doc.read_text()
    assert "old" not in text and text.startswith("# Results\n\nintro") and text.rstrip().endswith("after")
    assert "### Ablation study" in text and "| `full` | CIDer |" in text and "\n# Ablation" not in text

    # Re-running skips everything (nothing is rewritten under runs/).
    results = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("results.json")}
    lines.clear()
    again = run_ablation(base, env["data"], out, variants="full,no_maci", n_seeds=2, eval_seeds=[0, 1],
                         rates=[0.0, 0.5, 1.0], progress=False, log=lines.append)
    assert sum("skipped: evaluation exists" in line for line in lines) == 4
    assert {p: p.stat().st_mtime_ns for p in results} == results
    assert all(r.status == "skipped" for v in again.variants.values() for r in v.runs.values())
    assert again.to_dict()["variants"]["full"]["summary"] == agg.to_dict()["variants"]["full"]["summary"]

    # A lost evaluation is redone without retraining; a third seed is added on top.
    (run_dir_for(out, "full", 6) / "eval" / "results.json").unlink()
    log_before = (run_dir_for(out, "full", 6) / "train_log.csv").read_text()
    third = run_ablation(base, env["data"], out, variants="full", n_seeds=3, eval_seeds=[0, 1],
                         rates=[0.0, 0.5, 1.0], progress=False, log=lines.append)
    runs = third.variants["full"].runs
    assert [runs[s].status for s in (5, 6, 7)] == ["skipped", "resumed", "trained"]
    assert (run_dir_for(out, "full", 6) / "train_log.csv").read_text() == log_before
    assert third.variants["full"].seeds_done == [5, 6, 7]

    # Other settings in the same folder are refused, naming the difference (epochs and patience may change).
    with pytest.raises(RunError, match="lr: stored 0.001, now 0.002"):
        run_ablation(dataclasses.replace(base, lr=0.002), env["data"], out, variants="full", n_seeds=1,
                     eval_seeds=[0, 1], rates=[0.0, 0.5, 1.0], progress=False, log=lines.append)


def test_interrupted_training_is_continued(env, tmp_path):
    from cider_mer.data.dataset import load_dataset
    from cider_mer.training.trainer import train

    base = tiny_base(env, epochs=3, task="seven")
    out = tmp_path / "abl"
    run = run_dir_for(out, "no_mssd", base.seed)

    class Killed(Exception):
        pass

    def kill(epoch, row):
        if epoch == 1:
            raise Killed()

    cfg = dataclasses.replace(get_variant("no_mssd").apply(base), seed=base.seed)
    with pytest.raises(Killed):
        train(cfg, load_dataset(env["data"]), run, progress=False, epoch_callback=kill)
    assert len((run / "train_log.csv").read_text().strip().splitlines()) == 2  # header + epoch 1
    lines: list[str] = []
    agg = run_ablation(base, env["data"], out, variants="no_mssd", n_seeds=1, eval_seeds=[0], rates=[0.0, 1.0],
                       progress=False, log=lines.append)
    assert agg.variants["no_mssd"].runs[base.seed].status == "resumed"
    assert any("continuing" in line for line in lines)
    log_rows = list(csv.DictReader(open(run / "train_log.csv")))
    assert [int(r["epoch"]) for r in log_rows] == [1, 2, 3]
    assert "loss_complete" not in log_rows[0]
    # The seven-class task reports Acc7 (and its F1); Acc2/F1 come from a binary suite.
    assert agg.metrics == ["acc7", "f1_7"]
    assert "AUILC Acc7" in (out / "ablation.md").read_text()
    assert agg.variants["no_mssd"].auilc["acc7"].mean is not None


def test_partial_aggregate_marks_pending_variants(env, tmp_path):
    settings = SuiteSettings(base=tiny_base(env), data_path=env["data"], out=tmp_path, variants=["full", "no_mct"],
                             seeds=[5], eval_seeds=[0], rates=[0.0, 1.0])
    agg = aggregate(settings)
    assert not agg.finished and agg.variants["no_mct"].seeds_done == []
    assert agg.variants["full"].auilc["non0_acc2"].mean is None
    from cider_mer.ablation.render import markdown_report, write_outputs

    assert "INCOMPLETE" in markdown_report(agg) and "| `no_mct` | w/o MCT | — |" in markdown_report(agg)
    write_outputs(agg, tmp_path)  # writing (plot included) works with nothing finished yet


# ----------------------------------------------------------------------------- the command line


def test_cli_list_and_errors(capsys):
    from cider_mer.cli import main

    main(["ablate", "--list-variants"])
    out = capsys.readouterr().out
    assert all(name in out for name in VARIANT_NAMES)
    with pytest.raises(SystemExit) as exc:
        main(["ablate", "--data", "x.pkl", "--out", "o", "--variants", "full,bogus"])
    assert exc.value.code == 2
    assert "unknown ablation variant 'bogus'" in capsys.readouterr().err


def test_cli_ablate_with_default_minilm(tmp_path, capsys):
    """The issue's CI job as written: synthetic data at scale 0.05, the default frozen MiniLM, two
    variants, one seed, two epochs, the default evaluation (RMFM, 11 rates, 3 mask seeds)."""
    from cider_mer.cli import main

    data, out = tmp_path / "synth.pkl", tmp_path / "abl"
    main(["data", "synth", "--out", str(data), "--scale", "0.05"])
    args = ["ablate", "--data", str(data), "--task", "binary", "--seeds", "1", "--epochs", "2",
            "--variants", "full,no_mssd", "--out", str(out), "--quiet"]
    main(args)
    md = (out / "ablation.md").read_text()
    assert "| `full` | CIDer |" in md and "| `no_mssd` | w/o MSSD: w/o all |" in md
    assert "all runs finished" in md and "cider ablate --data" in md
    meta = json.loads((out / "ablation.json").read_text())
    assert meta["base_config"]["text_encoder"] is None and meta["base_config"]["freeze_text_encoder"]
    assert meta["base_config"]["model_config"].items() >= {"layers": 2, "heads": 2}.items()
    first = capsys.readouterr().out
    assert "training into runs/full/seed1111" in first
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()}

    main(args)
    second = capsys.readouterr().out
    assert second.count("skipped: evaluation exists") == 2 and "training into" not in second
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_train_log_reports_the_epoch_training_selected(tmp_path):
    """The best epoch is the checkpoint's (the trainer's criterion, selectable epochs only), not
    the highest logged value of the reported metric; without a checkpoint, the highest value."""
    from cider_mer.ablation.aggregate import TrainLog
    from cider_mer.checkpoint import save_model

    log = "epoch,train_seconds,val_non0_acc2,val_selection\n1,2.0,80.0,80.0\n2,3.0,70.0,75.0\n3,4.0,72.0,78.0\n"
    (tmp_path / "train_log.csv").write_text(log)
    before = TrainLog.read(tmp_path, "non0_acc2")
    assert (before.best_epoch, before.best_value, before.epochs_run, before.train_seconds) == (1, 80.0, 3, 9.0)
    save_model(tmp_path / "model.safetensors", torch.nn.Linear(2, 1), False, {"epoch": 3, "val_tau": 0.0})
    after = TrainLog.read(tmp_path, "non0_acc2")
    assert (after.best_epoch, after.best_value) == (3, 72.0)
