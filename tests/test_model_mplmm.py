"""MPLMM backbone: parameter parity with the released code, missing-mode prompts, two-stage recipe."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

import cider_mer.models.mplmm  # noqa: F401  (registers "mplmm")
from cider_mer.missing import KeepMasks, apply_missing
from cider_mer.models.interface import DataShapes, EpochPlan, ModelInputs, ObjectiveBatch
from cider_mer.models.mplmm import GENERATORS, MPLMM, MplmmConfig
from cider_mer.models.registry import build_model
from cider_mer.text.encoder import TextEncoder

# ---------------------------------------------------------------- parameter counts (notes §0, §1.8-1.9)

MOSI = dict(text_dim=768, audio_dim=5, vision_dim=20, text_len=50, audio_len=375, vision_len=500)


def mosi_model(num_classes=1, aligned=False, maci=False, **config):
    lengths = dict(audio_len=50, vision_len=50) if aligned else {}
    shapes = DataShapes(**{**MOSI, **lengths}, aligned=aligned, num_classes=num_classes)
    return build_model("mplmm", shapes, config or None, text_encoder=None, maci=maci)


def count(model):
    return model.parameter_counts()["params_excluding_text_encoder"]


@pytest.mark.parametrize("num_classes, expected", [(1, 2_219_066), (3, 2_219_428), (7, 2_220_152)])
def test_released_prompt_model_counts(num_classes, expected):
    model = mosi_model(num_classes)
    assert count(model) == expected == 2_218_885 + 181 * num_classes
    assert model.backbone.joint_dim == 180


def test_aligned_count_and_heads_do_not_matter():
    assert count(mosi_model(aligned=True)) == 1_191_541
    assert count(mosi_model(heads=3)) == 2_219_066


def test_trainable_and_frozen_counts_after_the_weight_transfer():
    model = mosi_model()
    backbone = model.backbone
    assert backbone.config.pretrain_epochs == 40
    backbone.epoch_plan(41)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert (trainable, frozen) == (1_157_786, 1_061_280)
    # The MULTModel part (input projections, 9 transformers, proj1/proj2, head): 1,085,070 + 181 C.
    mult_names = ("proj_l.", "proj_a.", "proj_v.", "trans_", "proj1.", "proj2.")
    mult = sum(p.numel() for n, p in backbone.named_parameters() if n.startswith(mult_names))
    assert mult + sum(p.numel() for p in model.head.parameters()) == 1_085_251


def test_config_validation():
    with pytest.raises(ValueError, match="divide"):
        MplmmConfig(hidden=30, heads=4)
    with pytest.raises(ValueError, match="embed_dropout"):
        MplmmConfig(embed_dropout=1.0)
    with pytest.raises(ValueError, match="pretrain_epochs"):
        MplmmConfig(pretrain_epochs=-1)
    with pytest.raises(ValueError, match="prompt_init"):
        MplmmConfig(prompt_init="normal")


# ---------------------------------------------------------------- small model on CPU

VOCAB = 200
D_T, L, T_A, T_V, D_A, D_V = 16, 8, 12, 10, 5, 7
D, P = 12, 4  # hidden, prompt length of the small model
SMALL = dict(hidden=D, heads=2, layers=2, prompt_length=P)


def small_shapes(aligned=False, num_classes=3):
    return DataShapes(D_T, D_A, D_V, L, L if aligned else T_A, L if aligned else T_V, aligned, num_classes)


def small_model(aligned=False, num_classes=3, maci=False, encoder=False, seed=0, **config):
    torch.manual_seed(seed)
    text_encoder = None
    if encoder:
        from transformers import BertConfig, BertModel

        bert = BertModel(BertConfig(vocab_size=VOCAB, hidden_size=D_T, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=32), add_pooling_layer=False)
        text_encoder = TextEncoder(bert, name="tiny")
    return build_model("mplmm", small_shapes(aligned, num_classes), {**SMALL, **config},
                       text_encoder=text_encoder, maci=maci)


def make_inputs(n=3, aligned=False, seed=0, features=True, text_lens=None, audio_lens=None, vision_lens=None):
    g = torch.Generator().manual_seed(seed)
    t_a, t_v = (L, L) if aligned else (T_A, T_V)
    text_lens = text_lens or [max(3, L - b % (L - 2)) for b in range(n)]
    ids = torch.zeros(n, L, dtype=torch.long)
    for b, length in enumerate(text_lens):
        ids[b, 0], ids[b, length - 1] = 101, 102
        ids[b, 1:length - 1] = torch.randint(104, VOCAB, (length - 2,), generator=g)
    text_mask = (torch.arange(L)[None] < torch.tensor(text_lens)[:, None]).float()

    def frames(lengths, steps, dim):
        lengths = lengths or [steps - b % (steps // 2) for b in range(n)]
        mask = (torch.arange(steps)[None] < torch.tensor(lengths)[:, None]).float()
        return torch.randn(n, steps, dim, generator=g) * mask[..., None], mask

    audio, audio_mask = frames(text_lens if aligned else audio_lens, t_a, D_A)
    vision, vision_mask = frames(text_lens if aligned else vision_lens, t_v, D_V)
    text_features = torch.randn(n, L, D_T, generator=g) if features else None
    return ModelInputs(text_ids=ids, text_mask=text_mask, text_segment=torch.zeros_like(ids), audio=audio,
                       audio_mask=audio_mask, vision=vision, vision_mask=vision_mask, text_features=text_features)


def drop_modalities(inputs: ModelInputs, missing: list[tuple[bool, bool, bool]]) -> ModelInputs:
    """Drop whole modalities per sample with the toolkit's own apply_missing ([UNK] text, zero frames)."""
    flags = torch.tensor(missing)
    keep = KeepMasks(inputs.text_mask.bool() & ~flags[:, :1], inputs.audio_mask.bool() & ~flags[:, 1:2],
                     inputs.vision_mask.bool() & ~flags[:, 2:3])
    length = inputs.text_mask.sum(1).long()
    pos = torch.arange(inputs.text_ids.shape[1])[None]
    keep.text |= (pos == 0) | (pos == (length - 1)[:, None])  # [CLS]/[SEP] always kept
    dropped = apply_missing(inputs.replace(text_features=None), keep)
    return dropped.replace(text_features=inputs.text_features)  # keep the random features for the tests


ALL_PATTERNS = [(True, False, False), (False, True, False), (False, False, True), (True, True, False),
                (True, False, True), (False, True, True), (False, False, False), (True, True, True)]


def capture_inputs(model, names):
    """Forward pre-hooks recording the first input's shape of each named backbone submodule."""
    seen, handles = {}, []
    for name in names:
        module = model.backbone.get_submodule(name)
        handles.append(module.register_forward_pre_hook(
            lambda mod, args, name=name: seen.setdefault(name, []).append(tuple(args[0].shape))))
    return seen, handles


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("fine_tuning", [False, True])
def test_forward_shapes(aligned, fine_tuning):
    model = small_model(aligned=aligned, pretrain_epochs=2)
    plan = model.backbone.epoch_plan(3 if fine_tuning else 1)
    assert plan == (EpochPlan() if fine_tuning else EpochPlan(complete_only=True, selectable=False))
    t_a, t_v = (L, L) if aligned else (T_A, T_V)
    mems = ["trans_l_mem", "trans_a_mem", "trans_v_mem"]
    seen, handles = capture_inputs(model, mems + ["trans_a_with_v"])
    inputs = make_inputs(3, aligned)
    out = model(inputs)
    for h in handles:
        h.remove()
    extra = P if fine_tuning else 0
    assert seen["trans_l_mem"] == [(3, L + extra, 2 * D)]
    assert seen["trans_a_mem"] == [(3, t_a + extra, 2 * D)]
    assert seen["trans_v_mem"] == [(3, t_v + extra, 2 * D)]
    assert seen["trans_a_with_v"] == [(3, t_a, D)]
    assert out.joint.shape == (3, 6 * D)
    assert out.backbone.extras["z0"].shape == (3, 6 * D)
    assert out.log_probs.shape == (3, 3)
    assert out.text_states.shape == (3, L, D_T)
    assert out.backbone.extras["missing_mode"].tolist() == [6, 6, 6]


def test_reencode_path_and_trimmed_text_give_the_same_output():
    model = small_model(encoder=True, pretrain_epochs=0).eval()
    inputs = make_inputs(3, features=False, text_lens=[6, 4, 3])
    full = model(inputs)
    trimmed = inputs.trim_text()
    assert trimmed.text_ids.shape[1] == 6
    short = model(trimmed)
    assert short.text_states.shape == (3, 6, D_T)
    torch.testing.assert_close(short.log_probs, full.log_probs, rtol=1e-5, atol=1e-6)


def test_wrong_frame_lengths_are_refused():
    model = small_model()
    inputs = make_inputs(2)
    with pytest.raises(ValueError, match="fixed lengths"):
        model(inputs.replace(audio=inputs.audio[:, :-1], audio_mask=inputs.audio_mask[:, :-1]))


# ---------------------------------------------------------------- missing modes and prompt choice


def test_missing_mode_rule_from_the_toolkit_masks():
    inputs = drop_modalities(make_inputs(8), ALL_PATTERNS)
    assert small_model().backbone.missing_modes(inputs).tolist() == list(range(8))
    edge = make_inputs(4, text_lens=[2, 5, 5, 5])
    edge.text_ids[1, 1:4] = 100
    edge.text_ids[2, 1:3] = 100  # one real token left: text present
    edge.audio_mask[3] = 0  # no valid audio frame at all: missing even though frames are non-zero
    edge.audio[3] = 1.0
    edge.vision[0] = 0.0
    edge.vision[0, -1, 0] = 5.0  # non-zero value on a padding frame only: vision still missing
    edge.vision_mask[0, -1] = 0
    flags = MPLMM.missing_flags(edge)
    assert flags.tolist() == [[True, False, True], [True, False, False], [False, False, False],
                              [False, True, False]]
    single = make_inputs(1)
    single.audio[0, 3, 2] = 0.0  # one zero value in a frame: not a dropped frame
    assert not MPLMM.missing_flags(single).any()


def test_generators_called_per_missing_pattern():
    model = small_model(pretrain_epochs=0)
    layers = sorted({layer for gens in GENERATORS.values() for _, layer, _ in gens})
    maps = ["l2a", "l2v", "a2l", "a2v", "v2l", "v2a"]
    seen, handles = capture_inputs(model, layers + maps)
    model(drop_modalities(make_inputs(8), ALL_PATTERNS))
    for h in handles:
        h.remove()
    # Each generator sees exactly the one sample of its mode: (1, P + sum of source lengths, d).
    lengths = {"l": L, "a": T_A, "v": T_V}
    for mode, gens in GENERATORS.items():
        for _, layer, sources in gens:
            assert seen.pop(layer) == [(1, P + sum(lengths[s] for s in sources), D)], layer
    assert not seen.keys() & set(layers)
    # Source maps: x2y is used once per sample generating y with x present.
    assert seen["a2l"] == [(1, D_A, T_A)] * 2  # modes 0 (a, v -> l) and 4 (a -> l)
    assert seen["l2a"] == [(1, D_T, L)] * 2  # modes 1 and 5
    # Complete batch: no generator runs.
    seen, handles = capture_inputs(model, layers)
    model(make_inputs(3))
    for h in handles:
        h.remove()
    assert seen == {}


def test_missing_input_is_ignored_and_replaced_by_generation():
    model = small_model(pretrain_epochs=0, prompt_init="rand").eval()
    inputs = drop_modalities(make_inputs(3), [(True, False, False), (False, False, False), (True, True, True)])
    base = model(inputs).joint
    other = inputs.replace(text_features=inputs.text_features + torch.randn_like(inputs.text_features))
    changed = model(other).joint
    torch.testing.assert_close(changed[0], base[0])  # mode 0: text is generated, its input never read
    assert not torch.allclose(changed[1], base[1])  # complete sample reads its text
    assert not torch.allclose(changed[2], base[2])  # mode 7: nothing to generate from, projection is used


def test_signal_and_type_prompts_follow_the_missing_pattern():
    backbone = small_model(pretrain_epochs=0, prompt_init="rand").backbone
    inputs = drop_modalities(make_inputs(8), ALL_PATTERNS)
    flags = MPLMM.missing_flags(inputs)
    tokens = backbone._type_prompts(flags)  # (B, 3, P, 2d)
    assert tokens.shape == (8, 3, P, 2 * D)
    for b, pattern in enumerate(ALL_PATTERNS):
        matrix = sum(getattr(backbone, f"prompt{m}_{'m' if miss else 'nm'}") @ getattr(backbone, f"m_{m}")
                     for m, miss in zip("lav", pattern))
        torch.testing.assert_close(tokens[b], backbone.missing_type_prompt @ matrix)
    # Completion: present modality = projection + "_nm" prompt; mode 7 = projection + "_m" prompt.
    raw = {"l": inputs.text_features, "a": inputs.audio, "v": inputs.vision}
    modes = MPLMM.modes_from_flags(flags)
    done = backbone._complete(raw, modes)
    proj_l = backbone.proj_l(inputs.text_features.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(done["l"][6], proj_l[6] + backbone.promptl_nm.t())
    torch.testing.assert_close(done["l"][7], proj_l[7] + backbone.promptl_m.t())
    generated = backbone.l_avp(torch.cat([backbone.generative_prompt[0].t()[None],
                                          backbone.a2l(inputs.audio[:1].transpose(1, 2)).transpose(1, 2),
                                          backbone.v2l(inputs.vision[:1].transpose(1, 2)).transpose(1, 2)], 1))
    torch.testing.assert_close(done["l"][0], generated[0] + backbone.promptl_m.t())


# ---------------------------------------------------------------- NaN safety and gradients


@pytest.mark.parametrize("fine_tuning", [False, True])
def test_fully_missing_modalities_and_batch_of_one_are_finite(fine_tuning):
    model = small_model(pretrain_epochs=1)
    model.backbone.epoch_plan(2 if fine_tuning else 1)
    cases = {"all patterns": drop_modalities(make_inputs(8), ALL_PATTERNS)}
    no_audio = make_inputs(2)
    no_audio.audio_mask.zero_()
    no_audio.audio.zero_()
    cases["audio mask all zero"] = no_audio
    cases["batch of one"] = make_inputs(1)
    cases["batch of one, all missing"] = drop_modalities(make_inputs(1), [(True, True, True)])
    for name, inputs in cases.items():
        model.zero_grad()
        out = model(inputs)
        assert torch.isfinite(out.log_probs).all() and torch.isfinite(out.joint).all(), name
        out.log_probs.sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None), name


DEAD = {"backbone.missing_type_prompt", "backbone.m_a", "backbone.m_v", "backbone.m_l"}


def _gradients(model, inputs, num_classes=3):
    model.train()
    model.zero_grad()
    out = model(inputs)
    labels = torch.arange(inputs.batch_size) % num_classes
    task = F.nll_loss if num_classes > 1 else (lambda o, y: F.l1_loss(o, y.float()[:, None]))
    batch = ObjectiveBatch(incomplete=out.backbone, complete=None, inputs=inputs, incomplete_inputs=inputs,
                           keep=None, labels=labels, task_loss=task)
    loss = task(out.log_probs, labels) + sum(model.backbone.objective_terms(batch).values())
    loss.backward()
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_gradients_prompt_path_from_scratch():
    torch.manual_seed(1)
    model = small_model(pretrain_epochs=0)
    got = _gradients(model, drop_modalities(make_inputs(8), ALL_PATTERNS))
    names = {n for n, _ in model.named_parameters()}
    # Zero-initialised missing-type prompts and m_* never get a gradient (product of two zeros).
    assert names - got == DEAD
    # With the first release's rand init that path trains too.
    model = small_model(pretrain_epochs=0, prompt_init="rand")
    assert _gradients(model, drop_modalities(make_inputs(8), ALL_PATTERNS)) == names


def test_gradients_in_both_stages_of_the_recipe():
    torch.manual_seed(2)
    model = small_model(pretrain_epochs=2, num_classes=1)
    names = {n for n, _ in model.named_parameters()}
    mult = {n for n in names if n.startswith(("head.", "backbone.proj_", "backbone.trans_", "backbone.proj1.",
                                             "backbone.proj2."))}
    model.backbone.epoch_plan(1)
    assert _gradients(model, make_inputs(4), num_classes=1) == mult  # MULTModel path: no prompt parameter used
    model.backbone.epoch_plan(3)
    frozen = {"backbone." + n for n in model.backbone.frozen_parameter_names()}
    got = _gradients(model, drop_modalities(make_inputs(8), ALL_PATTERNS), num_classes=1)
    assert got == names - frozen - DEAD
    assert all(model.get_parameter(n).grad is None for n in frozen)


# ---------------------------------------------------------------- objective, recipe, MACI


def test_objective_terms_are_empty():
    model = small_model()
    inputs = make_inputs(3)
    out = model(inputs)
    keep = KeepMasks(inputs.text_mask.bool(), inputs.audio_mask.bool(), inputs.vision_mask.bool())
    batch = ObjectiveBatch(incomplete=out.backbone, complete=None, inputs=inputs, incomplete_inputs=inputs,
                           keep=keep, labels=torch.tensor([0, 1, 2]), task_loss=F.nll_loss)
    assert model.backbone.objective_terms(batch) == {}  # MPLMM trains on the task loss alone (notes §1.7)
    assert not model.backbone.needs_complete_pass
    assert not model.backbone.supports_reconstruction and not model.backbone.supports_attention


def _frozen_state(backbone):
    return {n for n, p in backbone.named_parameters() if not p.requires_grad}


def test_epoch_plan_freezes_the_right_parameters_at_the_right_epoch():
    backbone = small_model(pretrain_epochs=3).backbone
    expected = {n for n, _ in backbone.named_parameters() if n.startswith(("trans_", "proj1.", "proj2."))}
    assert len([n for n in expected if n.endswith("in_proj_weight")]) == 6 * 2 + 3 * 3  # 9 encoders
    assert not bool(backbone.fine_tuning)
    for epoch in (1, 2, 3):
        assert backbone.epoch_plan(epoch) == EpochPlan(complete_only=True, selectable=False)
        assert _frozen_state(backbone) == set() and not bool(backbone.fine_tuning)
    for epoch in (4, 4, 5, 9):  # idempotent, stays frozen
        assert backbone.epoch_plan(epoch) == EpochPlan()
        assert _frozen_state(backbone) == expected and bool(backbone.fine_tuning)
    assert set(backbone.frozen_parameter_names()) == expected
    # After a resume the state comes from the epoch number alone.
    resumed = small_model(pretrain_epochs=3).backbone
    assert resumed.epoch_plan(7) == EpochPlan() and _frozen_state(resumed) == expected
    assert backbone.epoch_plan(2) == EpochPlan(complete_only=True, selectable=False)
    assert _frozen_state(backbone) == set()


def test_no_pretraining_trains_everything_with_prompts():
    model = small_model(pretrain_epochs=0)
    assert bool(model.backbone.fine_tuning)
    for epoch in (1, 2):
        assert model.backbone.epoch_plan(epoch) == EpochPlan()
        assert _frozen_state(model.backbone) == set()
    seen, handles = capture_inputs(model, ["trans_l_mem"])
    model(make_inputs(2))
    handles[0].remove()
    assert seen["trans_l_mem"] == [(2, L + P, 2 * D)]


def test_stage_travels_in_the_checkpoint():
    trained = small_model(pretrain_epochs=2)
    trained.backbone.epoch_plan(3)
    fresh = small_model(pretrain_epochs=2, seed=5)
    assert not bool(fresh.backbone.fine_tuning)
    fresh.load_state_dict(trained.state_dict())
    assert bool(fresh.backbone.fine_tuning)
    inputs = make_inputs(2)
    torch.testing.assert_close(fresh.eval()(inputs).log_probs, trained.eval()(inputs).log_probs)


@pytest.mark.parametrize("num_classes", [3, 7])
def test_maci_head_on_the_joint(num_classes):
    model = small_model(num_classes=num_classes, maci=True, pretrain_epochs=0)
    assert model.head.classifiers[0].in_features == 6 * D + 3 * D  # MCM width = hidden (d)
    model.head.set_statistics(torch.full((num_classes,), 1.0 / num_classes), torch.randn(num_classes,
                                                                                           D_T + D_A + D_V))
    for mode in (model.train, model.eval):
        mode()
        out = model(drop_modalities(make_inputs(3), [(True, False, False), (False, False, False),
                                                     (False, True, True)]))
        assert out.log_probs.shape == (3, num_classes)
        torch.testing.assert_close(out.log_probs.exp().sum(-1), torch.ones(3))


def test_a_run_too_short_to_leave_pre_training_is_refused():
    """Stage-1 epochs are never selected, so a run that never leaves them would save no model."""
    from cider_mer.config import TrainConfig
    from cider_mer.errors import ConfigError

    with pytest.raises(ConfigError, match=r"epochs must be >= 41 for model 'mplmm'.*got 40"):
        TrainConfig(model="mplmm", epochs=40)
    assert TrainConfig(model="mplmm", epochs=41).model_config.first_selectable_epoch == 41
    assert TrainConfig(model="mplmm", epochs=3, model_config={"pretrain_epochs": 2}).epochs == 3
