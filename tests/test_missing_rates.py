"""Per-modality missing rates (RMFM_same, MissBench's imbalanced missingness): parsing, masks,
the protocol's points and AUILC, and ``cider eval --rates t/a/v``."""

import json

import numpy as np
import pytest
import torch

from cider_mer.cli import main
from cider_mer.cli.options import OptionError, parse_rates
from cider_mer.config import TrainConfig
from cider_mer.data.dataset import load_dataset
from cider_mer.evaluation.protocol import evaluate
from cider_mer.evaluation.results import EvalResults
from cider_mer.missing import EvalMissingness, MissingModeError, check_modality_rates, point_label
from cider_mer.runs import load_run
from cider_mer.training.trainer import train

from helpers import tiny_bert_dir, tiny_data_file


def test_parse_per_modality_rates():
    assert parse_rates("0.1/0.5/0.7", per_modality=True) == [(0.1, 0.5, 0.7)]
    assert parse_rates("0.1/0.5/0.7, 0.2/0.6/0.8", per_modality=True) == [(0.1, 0.5, 0.7), (0.2, 0.6, 0.8)]
    assert parse_rates("0,0.5", per_modality=True) == [0.0, 0.5]  # plain rates are unchanged
    with pytest.raises(OptionError, match="given twice"):
        parse_rates("0.1/0.5/0.7,0.1/0.5/0.7", per_modality=True)
    for bad, message in (("0.1/0.5", "triples"), ("0.1/0.5/0.7/0.9", "triples"), ("0.1/x/0.7", "triples"),
                         ("0.1/1.5/0.7", r"in \[0, 1\], got 1.5"), ("0.1/0.5/-0.1", r"got -0.1"),
                         ("0.1/0.5/0.7,0.3", "every point a triple")):
        with pytest.raises(OptionError, match=message):
            parse_rates(bad, per_modality=True)
    with pytest.raises(OptionError, match="not accepted here"):
        parse_rates("0.1/0.5/0.7")  # commands other than eval take plain rates only


def test_only_rmfm_same_takes_per_modality_rates():
    assert check_modality_rates("RMFM_same", (0.1, 0.5, 0.7)) == (0.1, 0.5, 0.7)
    for mode in ("RMFM", "RMM", "TMFM", "STMFM", "SMM"):
        with pytest.raises(MissingModeError, match="RMFM_same only, not for " + mode):
            check_modality_rates(mode, (0.1, 0.5, 0.7))
    with pytest.raises(MissingModeError, match=r"\[0, 1\]"):
        check_modality_rates("RMFM_same", (0.1, 2.0, 0.7))
    assert point_label((0.1, 0.5, 0.7)) == "t0.1/a0.5/v0.7" and point_label(0.3) == "0.3"


def test_per_modality_masks_have_the_asked_rates():
    n, lt, ta, tv = 4000, 30, 60, 40
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(10, lt + 1, (n,), generator=g)
    text_mask = (torch.arange(lt)[None] < lengths[:, None]).float()
    audio_mask = (torch.arange(ta)[None] < torch.randint(1, ta + 1, (n,), generator=g)[:, None]).float()
    vision_mask = (torch.arange(tv)[None] < torch.randint(1, tv + 1, (n,), generator=g)[:, None]).float()
    em = EvalMissingness("RMFM_same", text_mask, audio_mask, vision_mask, seed=3, aligned=False)
    keep = em.masks((0.1, 0.5, 0.7))
    inner = text_mask.bool().clone()  # [CLS] and [SEP] are always kept: measure the words between
    inner[:, 0] = False
    inner[torch.arange(n), lengths - 1] = False
    for got, valid, rate in ((keep.text, inner, 0.1), (keep.audio, audio_mask.bool(), 0.5),
                             (keep.vision, vision_mask.bool(), 0.7)):
        dropped = float((~got & valid).sum()) / float(valid.sum())
        assert abs(dropped - rate) < 0.01, (rate, dropped)
    assert not (keep.audio & ~audio_mask.bool()).any()  # padding is never "kept"
    # nested: what is missing at (0.1, 0.5, 0.7) is missing at (0.2, 0.6, 0.8) too
    more = em.masks((0.2, 0.6, 0.8))
    assert not (more.audio & ~keep.audio).any() and not (more.text & ~keep.text).any()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("rates")
    import os

    os.environ["CIDER_CACHE_DIR"] = str(root / "cache")
    bert, data = tiny_bert_dir(root), tiny_data_file(root)
    cfg = TrainConfig(text_encoder=str(bert), freeze_text_encoder=True, epochs=1, batch_size=16, eval_batch_size=32,
                      model_config={"layers": 1, "heads": 2}, device="cpu", seed=3)
    train(cfg, load_dataset(data), root / "run", progress=False)
    return {"root": root, "data": data, "run": root / "run"}


def test_protocol_with_per_modality_points(trained):
    run, ds = load_run(trained["run"], device="cpu"), load_dataset(trained["data"])
    chain = [(0.0, 0.0, 0.0), (0.1, 0.5, 0.7), (0.2, 0.6, 0.8)]
    res = evaluate(run, ds, mode="RMFM_same", rates=chain, seeds=[0, 1], progress=False)
    assert res.points == ["t0/a0/v0", "t0.1/a0.5/v0.7", "t0.2/a0.6/v0.8"]
    assert res.modality_rates == [list(p) for p in chain] and res.rates == [0.0, 0.4333, 0.5333]
    ps = np.array(res.metrics["non0_acc2"].per_seed)
    expected = np.mean([np.trapezoid(row, res.rates) for row in ps])
    assert res.auilc["non0_acc2"] == pytest.approx(expected)  # on one axis: over the mean rate
    assert res.at_rate("non0_acc2", 0.0) is None  # per-modality points have no single rate
    # equal per-modality rates are the plain rate: same masks, same metrics
    plain = evaluate(run, ds, mode="RMFM_same", rates=[0.3], seeds=[0, 1], progress=False)
    same = evaluate(run, ds, mode="RMFM_same", rates=[(0.3, 0.3, 0.3)], seeds=[0, 1], progress=False)
    assert plain.metrics["non0_acc2"].per_seed == same.metrics["non0_acc2"].per_seed
    crossing = evaluate(run, ds, mode="RMFM_same", rates=[(0.1, 0.5, 0.7), (0.7, 0.5, 0.1)], seeds=[0],
                        progress=False)
    assert crossing.auilc == {}  # not on one axis: no AUILC
    assert EvalResults.from_dict(json.loads(json.dumps(res.to_dict()))).modality_rates == res.modality_rates
    with pytest.raises(MissingModeError, match="RMFM_same only"):
        evaluate(run, ds, mode="RMFM", rates=chain, seeds=[0], progress=False)
    with pytest.raises(MissingModeError, match="every point"):
        evaluate(run, ds, mode="RMFM_same", rates=[0.1, (0.1, 0.2, 0.3)], seeds=[0], progress=False)


def test_cli_eval_with_per_modality_rates(trained, tmp_path, capsys):
    out = tmp_path / "rep"
    main(["eval", "--run", str(trained["run"]), "--data", str(trained["data"]), "--out", str(out), "--device", "cpu",
          "--missing-mode", "RMFM_same", "--rates", "0.1/0.5/0.7,0.2/0.6/0.8", "--seeds", "0", "--quiet"])
    res = json.loads((out / "results.json").read_text())
    assert res["points"] == ["t0.1/a0.5/v0.7", "t0.2/a0.6/v0.8"]
    assert res["modality_rates"] == [[0.1, 0.5, 0.7], [0.2, 0.6, 0.8]] and set(res["auilc"]) >= {"non0_acc2"}
    md = (out / "results.md").read_text()
    assert "| rates text/audio/vision |" in md and "| t0.2/a0.6/v0.8 |" in md and "over the mean missing rate" in md
    assert (out / "results.csv").read_text().splitlines()[1].startswith("t0.1/a0.5/v0.7,")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--run", str(trained["run"]), "--data", str(trained["data"]), "--out", str(tmp_path / "x"),
              "--device", "cpu", "--missing-mode", "RMM", "--rates", "0.1/0.5/0.7", "--quiet"])
    assert exc.value.code == 2 and "RMFM_same only" in capsys.readouterr().err
