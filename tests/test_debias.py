"""Debiasing (docs/debiasing.md): bias-only model and groups, the selection criteria, the valid
counterfactual, the trained bias branch (PoE / learned-mixin), the prior-shifted OOD split, variants."""

from __future__ import annotations

import csv
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cider_mer.ablation.variants import DEBIAS_VARIANTS, get_variant, parse_variants
from cider_mer.batches import DeviceSplit
from cider_mer.config import TrainConfig
from cider_mer.data.dataset import SPLITS, dataset_from_dict, load_dataset, save_dataset
from cider_mer.debias.bias_model import bag_of_bias_words, fit_bias_model
from cider_mer.debias.poe import BiasBranch, bias_branch_of, combine, inference_log_probs
from cider_mer.debias.selection import combine_groups, select_value
from cider_mer.errors import ConfigError
from cider_mer.inference import Debiaser, predict
from cider_mer.io_utils import read_json
from cider_mer.maci.counterfactual import build_bias_vocabulary, counterfactual_ids, given_bias_vocabulary, word_piece_ids
from cider_mer.maci.tau import debias
from cider_mer.runs import MACI_FILE, load_run
from cider_mer.text.encoder import CLS_ID, MASK_ID, SEP_ID, UNK_ID, load_tokenizer
from cider_mer.training.trainer import train

from conftest import make_dataset_dict
from helpers import benchmark_module, tiny_bert_dir

POS_WORD, NEG_WORD, FILLER = 5500, 5600, (1500, 1501, 1502, 1503, 1504)


def planted_dict(sizes=(60, 24, 24), train_agree: float = 0.9, seed: int = 0) -> dict:
    """Labels +-2 alternating; each text is [CLS] w filler [SEP] with w = POS_WORD for a positive
    label when the sample agrees with the planted bias (else NEG_WORD). Train agrees 90 % of the
    time; in valid and test the first half agrees and the second half conflicts."""
    rng = np.random.default_rng(seed)
    d = make_dataset_dict(seed=seed, sizes=sizes)
    for name in SPLITS:
        split = d[name]
        n = split["text_bert"].shape[0]
        y = np.where(np.arange(n) % 2 == 0, 2.0, -2.0).astype(np.float32)
        agree = rng.random(n) < train_agree if name == "train" else np.arange(n) < n // 2
        word = np.where((y > 0) == agree, POS_WORD, NEG_WORD)
        tb = np.zeros_like(split["text_bert"])
        tb[:, 0, :8] = np.column_stack([np.full(n, CLS_ID), word, np.tile(FILLER, (n, 1)), np.full(n, SEP_ID)])
        tb[:, 1, :8] = 1
        split["text_bert"], split["regression_labels"] = tb, y
        split["agree"] = agree  # not a dataset key: removed below
    return d


def planted_dataset(**kw):
    d = planted_dict(**kw)
    agree = {name: d[name].pop("agree") for name in SPLITS}
    return dataset_from_dict(d), agree


# ----------------------------------------------------------------------------- bias-only model and groups


def test_bias_model_groups_follow_the_planted_word():
    data, agree = planted_dataset()
    vocab = build_bias_vocabulary(data["train"], "binary")
    assert set(vocab.token_ids[:2].tolist()) == {POS_WORD, NEG_WORD}
    assert not set(FILLER) & set(vocab.token_ids.tolist())  # equally frequent in both classes: no bias
    model = fit_bias_model(data["train"], vocab.token_ids, "binary", seed=0)
    valid = data["valid"]
    pred = model.predict(valid.text_ids, valid.text_mask)
    labels = valid.labels("binary")
    assert set(np.unique(pred)) <= {0, 2}  # neutral has no training sample: never predicted
    np.testing.assert_array_equal(pred == labels, agree["valid"])  # aligned = bias word agrees with the label
    again = fit_bias_model(data["train"], vocab.token_ids, "binary", seed=0)
    np.testing.assert_array_equal(again.coef, model.coef)
    with pytest.raises(ValueError, match="training split"):
        fit_bias_model(valid, vocab.token_ids, "binary")


def test_given_bias_words_become_their_word_pieces_with_training_statistics():
    tok = load_tokenizer()
    assert word_piece_ids(["soundtrack", "soundtrack music"], tok).tolist() == tok.convert_tokens_to_ids(
        ["soundtrack", "music"])  # each piece once, in order of first appearance
    assert len(word_piece_ids(["mediocre"], tok)) == 3  # a word split into pieces keeps them all
    with pytest.raises(ValueError, match="has no word-piece"):
        word_piece_ids(["\U0001F9EA"], tok)  # only [UNK]
    data, _ = planted_dataset()
    auto = build_bias_vocabulary(data["train"], "binary")
    given = given_bias_vocabulary(data["train"], "binary", np.array([FILLER[0], 29000, POS_WORD]))
    assert given.token_ids.tolist() == [FILLER[0], POS_WORD, 29000]  # most frequent first; unseen last
    row = {int(t): i for i, t in enumerate(auto.token_ids)}[POS_WORD]
    np.testing.assert_array_equal(given.class_counts[1], auto.class_counts[row])
    assert given.class_counts[2].sum() == 0 and given.class_counts[0].sum() == data["train"].n  # filler in every text
    assert given.cv[0] < 0.1 < given.cv[1]  # the statistics are recorded, not used to filter


def test_bag_of_bias_words_counts_real_positions_only():
    ids = torch.tensor([[CLS_ID, 7, 8, 7, SEP_ID, 7]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    assert bag_of_bias_words(ids, mask, torch.tensor([7, 8, 9])).tolist() == [[2.0, 1.0, 0.0]]


def _scores(pred: np.ndarray) -> np.ndarray:
    out = np.full((pred.size, 3), -5.0)
    out[np.arange(pred.size), pred] = 0.0
    return out


def test_selection_criteria_groups_and_minimum_size(caplog):
    labels = np.array([0, 2] * 20)
    aligned = np.arange(40) < 30  # 30 aligned, 10 conflicting
    # right on every aligned sample, wrong on every conflicting one: the bias-following model
    follows = _scores(np.where(aligned, labels, 2 - labels))
    res = select_value("binary", follows, labels, aligned, "worst_group", min_group=5)
    assert res.criterion == "worst_group" and res.sizes == (30, 10) and res.group_values == (100.0, 0.0)
    assert res.value == 0.0 and res.plain == 75.0
    assert select_value("binary", follows, labels, aligned, "group_mean", min_group=5).value == 50.0
    with caplog.at_level(logging.WARNING):
        small = select_value("binary", follows, labels, aligned, "worst_group", min_group=20)
    assert small.criterion == "plain" and small.value == small.plain == 75.0
    assert "falls back to plain" in caplog.text
    assert select_value("binary", follows, labels, None, "group_mean").criterion == "plain"


def test_group_criteria_never_reward_inverting_the_bias():
    for criterion in ("group_mean", "worst_group"):
        for a, c in ((90.0, 40.0), (55.0, 70.0)):
            assert combine_groups(criterion, a, c, "non0_acc2") == combine_groups(criterion, c, a, "non0_acc2")
            # monotone: better on either group never lowers the criterion (strictly for the mean)
            assert combine_groups(criterion, a + 5, c, "non0_acc2") >= combine_groups(criterion, a, c, "non0_acc2")
            assert combine_groups(criterion, a, c + 5, "non0_acc2") >= combine_groups(criterion, a, c, "non0_acc2")
        assert combine_groups(criterion, 10.0, 10.0, "mae") == 10.0
    assert combine_groups("group_mean", 91.0, 40.0, "non0_acc2") > combine_groups("group_mean", 90.0, 40.0, "non0_acc2")
    assert combine_groups("worst_group", 1.0, 2.0, "mae") == 2.0  # lower-is-better: the worse is the larger
    # a model that inverts the bias (all conflicting right, all aligned wrong) is no better than one that
    # follows it: the conflicting group alone (100 here) is never the criterion
    labels = np.array([0, 2] * 20)
    aligned = np.arange(40) < 20
    inverts = _scores(np.where(aligned, 2 - labels, labels))
    follows = _scores(np.where(aligned, labels, 2 - labels))
    for criterion in ("group_mean", "worst_group"):
        inv = select_value("binary", inverts, labels, aligned, criterion, min_group=5)
        assert inv.group_values[1] == 100.0 and inv.value < 100.0
        assert inv.value == select_value("binary", follows, labels, aligned, criterion, min_group=5).value
    with pytest.raises(ValueError):
        combine_groups("conflicting", 1.0, 2.0, "non0_acc2")


# ----------------------------------------------------------------------------- the valid counterfactual


def test_unk_fill_replaces_exactly_the_non_bias_real_tokens():
    ids = torch.tensor([[CLS_ID, 2000, 1200, 3000, 1300, SEP_ID, 0], [CLS_ID, UNK_ID, 2000, SEP_ID, 0, 0, 0]])
    mask = (ids != 0).long()
    vocab = torch.tensor([2000, 3000])
    unk = counterfactual_ids(ids, mask, vocab, fill="unk")
    paper = counterfactual_ids(ids, mask, vocab)
    filled = mask.bool() & ~torch.isin(ids, vocab) & ~torch.isin(ids, torch.tensor([CLS_ID, SEP_ID, UNK_ID]))
    assert filled.sum() == 2
    assert (unk[filled] == UNK_ID).all() and (paper[filled] == MASK_ID).all()
    assert torch.equal(unk[~filled], ids[~filled]) and torch.equal(paper[~filled], ids[~filled])
    with pytest.raises(ValueError, match="fill"):
        counterfactual_ids(ids, mask, vocab, fill="pad")


def test_absent_other_modalities_zeroes_audio_and_vision_only_in_the_cf_pass():
    data, _ = planted_dataset()
    inputs = DeviceSplit.from_split(data["valid"], "binary", "cpu").inputs(torch.arange(6))
    assert inputs.audio.abs().sum() > 0 and inputs.vision.abs().sum() > 0
    ids = torch.tensor([POS_WORD])
    cf = Debiaser("binary", ids, cf_fill="unk", cf_other_modalities="absent").counterfactual(inputs)
    assert cf.audio.abs().sum() == 0 and cf.vision.abs().sum() == 0
    assert torch.equal(cf.audio_mask, inputs.audio_mask) and torch.equal(cf.vision_mask, inputs.vision_mask)
    assert torch.equal(cf.text_ids, counterfactual_ids(inputs.text_ids, inputs.text_mask, ids, "unk"))
    kept = Debiaser("binary", ids).counterfactual(inputs)
    assert torch.equal(kept.audio, inputs.audio) and torch.equal(kept.vision, inputs.vision)


def test_centred_subtraction_keeps_the_class_balance_of_the_centre():
    rng = np.random.default_rng(0)
    lp = np.log(rng.dirichlet(np.ones(3), size=50)).astype(np.float32)
    cf = np.log(rng.dirichlet([5, 1, 5], size=50)).astype(np.float32)
    centre = cf.mean(axis=0)
    shift = debias(lp, cf, 1.0, centre) - lp
    np.testing.assert_allclose(shift.mean(axis=0), 0.0, atol=1e-5)  # no class offset on the centre's inputs
    np.testing.assert_allclose(debias(lp, cf, 0.7) - debias(lp, cf, 0.7, centre), np.tile(-0.7 * centre, (50, 1)),
                               rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- trained runs


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("debias")
    data, _ = planted_dataset()
    path = root / "planted.pkl"
    save_dataset(data, path)
    return {"root": root, "bert": tiny_bert_dir(root), "data": path}


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CIDER_CACHE_DIR", str(tmp_path / "cache"))


def cfg_for(env, **kw):
    base = dict(text_encoder=str(env["bert"]), freeze_text_encoder=True, epochs=2, patience=5, batch_size=16,
                eval_batch_size=32, model_config={"layers": 1, "heads": 2}, seed=5, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def _log_rows(run_dir):
    with open(run_dir / "train_log.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_centre_is_the_training_mean_and_travels_with_the_checkpoint(env, one_torch_thread):
    cfg = cfg_for(env, cf_fill="unk", cf_other_modalities="absent", cf_centre=True, epochs=1)
    data = load_dataset(env["data"])
    train(cfg, data, env["root"] / "centred", progress=False)
    run = load_run(env["root"] / "centred", device="cpu")
    tr = run.split(data, "train")
    cf_train = Debiaser("binary", run.debiaser.bias_ids, cf_fill="unk", cf_other_modalities="absent").predict(
        run.model, tr).cf_log_probs
    stored = np.asarray(read_json(run.path(MACI_FILE))["cf_centre"])
    np.testing.assert_allclose(stored, cf_train.mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose((cf_train - run.debiaser.cf_centre).mean(axis=0), 0.0, atol=1e-5)
    assert run.debiaser.cf_fill == "unk" and run.debiaser.cf_other_modalities == "absent"


def test_poe_loss_on_a_hand_example():
    branch = BiasBranch(torch.tensor([10, 11]), torch.log(torch.tensor([0.5, 0.1, 0.4])), joint_dim=4, mode="poe")
    with torch.no_grad():
        branch.expert.weight.copy_(torch.tensor([[1.0, -1.0], [0.0, 0.0], [-1.0, 1.0]]))
        branch.expert.bias.copy_(torch.tensor([0.1, -0.5, 0.2]))
    ids = torch.tensor([[CLS_ID, 10, 10, SEP_ID], [CLS_ID, 11, 12, SEP_ID]])
    mask = torch.ones_like(ids)
    main = torch.log_softmax(torch.tensor([[0.3, 0.0, -0.2], [1.0, 0.5, 0.0]]), dim=-1)
    labels = torch.tensor([0, 2])
    bias_logits = torch.tensor([[2.1, -0.5, -1.8], [-0.9, -0.5, 1.2]])  # W @ counts + b by hand
    expected = (F.cross_entropy(main + torch.log_softmax(bias_logits, -1), labels)
                + F.cross_entropy(bias_logits, labels))
    got = branch.training_loss(main, torch.zeros(2, 4), ids, mask, labels)
    assert torch.allclose(got, expected, atol=1e-6)
    # stop-gradient: the combined term does not train the bias expert, only its own CE does
    main_p = main.clone().requires_grad_(True)
    F.nll_loss(combine(main_p, torch.log_softmax(branch.bias_logits(ids, mask), -1).detach()), labels).backward()
    assert branch.expert.weight.grad is None and main_p.grad is not None
    # at test: main log-probs + training log-prior, renormalised
    prior = np.array([0.5, 0.1, 0.4])
    out = inference_log_probs(main.numpy(), np.log(prior))
    ref = torch.log_softmax(main + torch.log(torch.tensor(prior, dtype=torch.float32)), -1).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_learned_mixin_gate_scales_the_bias_and_trains():
    branch = BiasBranch(torch.tensor([10]), torch.zeros(3), joint_dim=4, mode="learned_mixin", entropy_weight=0.1)
    ids, mask = torch.tensor([[CLS_ID, 10, SEP_ID]] * 3), torch.ones(3, 3, dtype=torch.long)
    joint = torch.randn(3, 4)
    main = torch.log_softmax(torch.randn(3, 3), -1)
    loss = branch.training_loss(main, joint, ids, mask, torch.tensor([0, 1, 2]))
    loss.backward()
    assert torch.isfinite(loss) and branch.gate.weight.grad is not None and branch.gate.weight.grad.abs().sum() > 0
    g = torch.full((3, 1), 2.0)
    b = torch.log_softmax(torch.randn(3, 3), -1)
    assert torch.allclose(combine(main, b, g), torch.log_softmax(main + 2.0 * b, -1))


@pytest.mark.parametrize("model,mode,model_config", [
    ("cider", "poe", {"layers": 1, "heads": 2}),
    ("mult", "learned_mixin", {"dim": 8, "heads": 2, "layers": 1}),
])
def test_bias_branch_trains_reloads_and_evaluates(env, one_torch_thread, model, mode, model_config):
    from cider_mer.evaluation.protocol import evaluate

    cfg = cfg_for(env, model=model, model_config=model_config, debias=mode, counterfactual=False,
                  selection="group_mean", selection_min_group=5, debias_entropy_weight=0.05)
    data = load_dataset(env["data"])
    out = env["root"] / f"branch_{model}"
    result = train(cfg, data, out, progress=False)
    rows = _log_rows(out)
    assert {"val_selection", "val_aligned_n", "val_conflicting_n", "val_aligned_metric"} <= set(rows[0])
    assert [int(rows[0]["val_aligned_n"]), int(rows[0]["val_conflicting_n"])] == [12, 12]
    assert rows[0]["val_selection_criterion"] == "group_mean"
    best = max(float(r["val_selection"]) for r in rows)
    assert result.best_value == pytest.approx(best)
    run = load_run(out, device="cpu")
    branch = bias_branch_of(run.model)
    assert branch is not None and branch.mode == mode
    counts = np.bincount(data["train"].labels("binary"), minlength=3)
    np.testing.assert_allclose(branch.log_prior.numpy(), np.log(np.maximum(counts / counts.sum(), 1e-8)), rtol=1e-5)
    # Run.predict (and `cider eval`) = the main head's log-probs + the training log-prior
    raw = predict(run.model, run.split(data, "test")).log_probs
    np.testing.assert_allclose(run.predict(data, "test").log_probs, inference_log_probs(raw, branch.log_prior.numpy()),
                               atol=1e-5)
    res = evaluate(run, data, rates=[0.0, 1.0], seeds=[0], progress=False)
    assert np.isfinite(res.at_rate("non0_acc2", 0.0)) and res.tau_at_rate(0.0) == 0.0


def test_group_selection_needs_the_bias_model_in_maci_json(env, one_torch_thread):
    cfg = cfg_for(env, selection="worst_group", selection_min_group=5, epochs=1)
    data = load_dataset(env["data"])
    out = env["root"] / "grouped"
    train(cfg, data, out, progress=False)
    run = load_run(out, device="cpu")
    assert run.bias_model is not None and "bias_model" in read_json(out / MACI_FILE)
    pred = run.debiaser.predict(run.model, run.split(data, "valid"))
    assert pred.bias_pred is not None and (pred.bias_pred == data["valid"].labels("binary")).sum() == 12
    maci = read_json(out / MACI_FILE)
    del maci["bias_model"]
    from cider_mer.io_utils import atomic_write_json
    from cider_mer.runs import RunError

    atomic_write_json(out / MACI_FILE, maci)
    with pytest.raises(RunError, match="bias_model"):
        load_run(out, device="cpu")


def test_run_with_given_bias_words_uses_only_their_pieces(env, one_torch_thread, tmp_path):
    import shutil

    bert = shutil.copytree(env["bert"], tmp_path / "bert")
    load_tokenizer().save_pretrained(bert)  # the run's tokenizer lives with its (tiny) encoder
    words = load_tokenizer().convert_ids_to_tokens([POS_WORD, NEG_WORD])
    data = load_dataset(env["data"])
    cfg = cfg_for(env, text_encoder=str(bert), selection="group_mean", selection_min_group=5, epochs=1,
                  debias="poe", head="linear", counterfactual=False, bias_words=words)
    train(cfg, data, tmp_path / "given", progress=False)
    run = load_run(tmp_path / "given", device="cpu")
    assert sorted(run.bias_vocab.token_ids.tolist()) == [POS_WORD, NEG_WORD]
    assert bias_branch_of(run.model).vocab_ids.tolist() == run.bias_vocab.token_ids.tolist()
    valid = data["valid"]
    np.testing.assert_array_equal(run.bias_model.predict(valid.text_ids, valid.text_mask) == valid.labels("binary"),
                                  planted_dataset()[1]["valid"])
    with pytest.raises(ConfigError, match="bias_words: bias word"):
        train(cfg.with_overrides(bias_words=["\U0001F9EA"]), data, tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad" / "config.json").exists()


def test_config_rejects_bad_debias_settings():
    with pytest.raises(ConfigError, match="debias"):
        TrainConfig(debias="rubi")
    with pytest.raises(ConfigError, match="selection"):
        TrainConfig(selection="conflicting")
    with pytest.raises(ConfigError, match="cf_fill"):
        TrainConfig(cf_fill="pad")
    with pytest.raises(ConfigError, match="regression"):
        TrainConfig(task="regression", head="linear", counterfactual=False, debias="poe")
    with pytest.raises(ConfigError, match="bias_words"):
        TrainConfig(bias_words=[])
    with pytest.raises(ConfigError, match="bias_words must be a list of strings"):
        TrainConfig(bias_words="plot")
    assert not TrainConfig(counterfactual=False).needs_bias_vocabulary
    assert TrainConfig(counterfactual=False, selection="group_mean").needs_bias_vocabulary


# ----------------------------------------------------------------------------- prior-shifted OOD split


def _shift_toy(seed: int = 0, sizes=(60, 20, 40)) -> dict:
    """Positive clips say "good" (agree); negative clips say "bad" only half the time, "good" otherwise."""
    rng = np.random.default_rng(seed)
    total = sum(sizes)
    y = np.where(np.arange(total) % 2 == 0, 2.0, -2.0)
    texts = []
    for label in y:
        word = "good" if label > 0 or rng.random() < 0.5 else "bad"
        texts.append(f"{word} {rng.choice(['movie', 'actor', 'plot', 'scene'])} really")
    out, start = {}, 0
    for name, n in zip(SPLITS, sizes):
        d = make_dataset_dict(seed=seed, sizes=(n, 1, 1))["train"]
        d["regression_labels"] = y[start:start + n].astype(np.float32)
        d["raw_text"] = np.asarray(texts[start:start + n], dtype=object)
        d["id"] = np.asarray([f"v{i}_0" for i in range(start, start + n)], dtype=object)
        out[name] = d
        start += n
    return out


def test_prior_shift_split_leaves_test_unstratified_and_is_seeded():
    from cider_mer.data.ood_split import ood_split

    data = dataset_from_dict(_shift_toy())
    _, strat = ood_split(data, "binary", seed=0)
    _, shifted = ood_split(data, "binary", seed=0, prior_shift=True)
    gap = lambda m: abs(m["priors"]["test"][0] - m["priors"]["train"][0])  # noqa: E731
    assert gap(strat) < 0.03  # stratified: the pooled priors everywhere
    assert gap(shifted) > gap(strat) + 0.1 and shifted["priors"]["test"][0] > shifted["priors"]["train"][0]
    assert shifted["sizes"] == strat["sizes"] and shifted["prior_shift"] and not strat["prior_shift"]
    assert shifted["priors"]["valid"] == pytest.approx(shifted["priors"]["train"], abs=0.03)  # valid stays train-like
    _, again = ood_split(data, "binary", seed=0, prior_shift=True)
    _, other = ood_split(data, "binary", seed=1, prior_shift=True)
    assert again["ids"] == shifted["ids"] and other["ids"] != shifted["ids"]
    with pytest.raises(ConfigError, match="group_by_video"):
        ood_split(data, "binary", seed=0, group_by_video=True, prior_shift=True)


def test_prior_shift_flag_on_the_cli(tmp_path):
    from cider_mer.cli import main

    path = tmp_path / "toy.pkl"
    save_dataset(dataset_from_dict(_shift_toy()), path)
    main(["data", "ood-split", str(path), "--out", str(tmp_path / "ps.pkl"), "--prior-shift"])
    assert read_json(tmp_path / "ps.pkl.manifest.json")["prior_shift"] is True


# ----------------------------------------------------------------------------- variants


def test_debias_variants_apply_their_settings():
    base = TrainConfig(bias_words=["plot", "music"])  # a base config's given bias words reach every variant
    expected = {
        "maci_unk": {"cf_fill": "unk"},
        "maci_valid_cf": {"cf_fill": "unk", "cf_other_modalities": "absent", "cf_centre": True},
        "maci_valid_cf_group": {"cf_fill": "unk", "cf_other_modalities": "absent", "cf_centre": True,
                                "selection": "group_mean"},
        "poe": {"debias": "poe", "counterfactual": False},
        "learned_mixin": {"debias": "learned_mixin", "counterfactual": False},
        "group_select": {"selection": "group_mean"},
    }
    assert set(DEBIAS_VARIANTS) == set(expected)
    for name, changes in expected.items():
        cfg = get_variant(name).apply(base)
        assert {k: a for k, (a, _) in cfg.differences(base).items()} == changes, name
    assert parse_variants("poe,no_maci,group_select") == ["no_maci", "poe", "group_select"]
    assert "poe" not in parse_variants("all")  # the default suite stays Table V


# ----------------------------------------------------------------------------- the benchmark's statistics


def test_benchmark_pairs_runs_and_gives_a_t_interval():
    bench = benchmark_module("debias_mosi")
    p = bench.paired([1.0, 2.0, 3.0])
    assert p["n"] == 3 and p["mean"] == pytest.approx(2.0)
    assert p["hi"] - p["mean"] == pytest.approx(4.302653 * 1.0 / np.sqrt(3), rel=1e-5)  # t_{0.975, 2} sd/sqrt(n)
    assert bench.paired([5.0])["lo"] is None and bench.paired([])["n"] == 0
    rec = lambda acc: {"non0_acc2": acc, "has0_acc2": acc, "neutral_rate": 1.0, "tau": 0.0}  # noqa: E731
    records = {("stratified", "none", 0, 0): rec(60.0), ("stratified", "none", 0, 1): rec(62.0),
               ("stratified", "poe", 0, 0): rec(61.0), ("stratified", "poe", 0, 1): rec(65.0),
               ("stratified", "poe", 1, 0): rec(99.0),  # no partner run: not paired
               ("iid", "none", 0, 0): rec(70.0), ("iid", "poe", 0, 0): rec(68.0)}
    summary = bench.summarise(records, ["none", "poe"], ["stratified"], "iid")
    row = summary["stratified"]["poe"]
    assert row["pairs"] == 2 and row["delta_non0_acc2"]["mean"] == pytest.approx(2.0)
    assert row["delta_iid_non0_acc2"]["mean"] == pytest.approx(-2.0)
    assert set(bench.method_table("group_mean")) >= {"none", "poe", "maci_valid_cf", "maci_paper", "group_select"}
    given = bench.method_table("group_mean", ["plot", "music"])
    assert given["poe+words"][0] == {**given["poe"][0], "bias_words": ["plot", "music"]}
    assert "none+words" not in given and "plot, music" in given["maci_paper+words"][1]
    assert set(bench.planted_topic_words()) >= {"soundtrack", "villain"}


def test_bias_diagnostic_sees_the_planted_shortcut_reverse_on_the_ood_test(tmp_path):
    from cider_mer.data.synth import write_synthetic

    diag = benchmark_module("bias_diagnostic")
    tokenizer = load_tokenizer(None)
    path = tmp_path / "synth_ood.pkl"
    write_synthetic(path, seed=0, scale=0.3, ood=True, tokenizer=tokenizer)
    planted = benchmark_module("debias_mosi").planted_topic_words()
    stat = build_bias_vocabulary(load_dataset(path)["train"], "binary").token_ids
    fake_lexicon = stat[:5]  # stands in for VADER's lexicon: these pieces must leave the vocabulary
    rows = diag.diagnose({("synthetic", 0): path}, tokenizer, planted, fake_lexicon, lambda _: None)
    row = rows[("synthetic", 0)]
    given = row["given"]
    assert given["k"] == len(word_piece_ids(planted, tokenizer))
    assert given["valid"] > 60.0 and given["test"] < 40.0  # the shortcut holds on valid and reverses on test
    vocabs = diag.vocabularies(load_dataset(path)["train"], tokenizer, [], fake_lexicon)
    assert set(vocabs) == {"statistical", "statistical-lexicon"}
    assert not np.isin(vocabs["statistical-lexicon"], fake_lexicon).any()
    assert list(vocabs["statistical-lexicon"][:10]) == [i for i in stat if i not in fake_lexicon][:10]
