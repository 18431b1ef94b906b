"""EMT-DLFR backbone: parameter parity with the original, shapes, masking, objective terms, MACI."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.nn import functional as F

import cider_mer.models.emt_dlfr  # noqa: F401  (registers "emt_dlfr")
from cider_mer.maci.mcm import MCMHead
from cider_mer.missing import KeepMasks, apply_missing
from cider_mer.models.emt_dlfr import EmtDlfrConfig
from cider_mer.models.interface import DataShapes, ModelInputs, ObjectiveBatch
from cider_mer.models.registry import build_model

MOSI = dict(text_dim=768, audio_dim=5, vision_dim=20, text_len=50, audio_len=375, vision_len=500)
MPU, POOL = 330_112, 148_225  # one CrossSelfTransformer block / one attention pool at D = 128 (notes §3)


def mosi_model(num_classes=1, aligned=False, config=None, maci=False):
    lengths = dict(audio_len=50, vision_len=50) if aligned else {}
    shapes = DataShapes(**{**MOSI, **lengths}, aligned=aligned, num_classes=num_classes)
    return build_model("emt_dlfr", shapes, config, text_encoder=None, maci=maci)


def own_count(module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------- parameter parity (notes §0, §3)


@pytest.mark.parametrize("num_classes, expected", [(1, 2_322_779), (3, 2_323_293), (7, 2_324_321)])
def test_mosi_unaligned_count_matches_the_original(num_classes, expected):
    counts = mosi_model(num_classes).parameter_counts()
    assert counts["params_excluding_text_encoder"] == expected
    assert expected == 2_322_522 + 257 * num_classes


def test_per_module_counts_match_the_notes_table():
    backbone = mosi_model().backbone
    expected = {
        "audio_model": 5_520, "video_model": 24_096,
        "proj_audio": 2_048, "proj_video": 4_096, "proj_text": 98_304,
        "fusion": 478_337,
        "gmc_projector": 147_840, "text_projector": 590_592, "audio_projector": 272, "video_projector": 1_056,
        "gmc_predictor": 98_944, "text_predictor": 394_496, "audio_predictor": 288, "video_predictor": 1_088,
        "recon_text": 99_072, "recon_audio": 645, "recon_video": 2_580,
        "post_fusion_layer_1": 307_456, "post_fusion_layer_2": 65_792,
    }
    assert {name: own_count(getattr(backbone, name)) for name in expected} == expected
    assert own_count(backbone.fusion.units) == MPU and own_count(backbone.fusion.pools) == POOL
    assert len(backbone.fusion.units) == 1 and len(backbone.fusion.pools) == 1
    assert own_count(mosi_model().head) == 257  # post_fusion_layer_3, Linear(256, 1)
    assert backbone.joint_dim == 256


def test_count_does_not_depend_on_lengths_or_alignment():
    assert mosi_model(aligned=True).parameter_counts()["params_excluding_text_encoder"] == 2_322_779


def test_unshared_variants_follow_the_sharing_formula():
    base = 2_322_779 - MPU - POOL
    layers = 3
    cases = [
        (dict(mpu_share=False), 2 * MPU + POOL),
        (dict(modality_share=False), 3 * MPU + POOL),
        (dict(layer_share=False), layers * (MPU + POOL)),
        (dict(mpu_share=False, modality_share=False, layer_share=False), layers * (6 * MPU + POOL)),
    ]
    for options, fusion in cases:
        counts = mosi_model(config=options).parameter_counts()
        assert counts["params_excluding_text_encoder"] == base + fusion, options


def test_learnable_positions_add_a_table():
    counts = mosi_model(config={"learnable_pos_emb": True}).parameter_counts()
    assert counts["params_excluding_text_encoder"] == 2_322_779 + 1024 * 128


def test_config_defaults_and_validation():
    c = EmtDlfrConfig()
    assert (c.d_model, c.fusion_layers, c.heads, c.attraction_weight, c.reconstruction_weight) == (128, 3, 4, 1.0, 1.0)
    assert (c.attn_dropout, c.ff_dropout, c.post_fusion_dropout, c.recon_loss) == (0.3, 0.1, 0.3, "SmoothL1Loss")
    with pytest.raises(ValueError, match="divide"):
        EmtDlfrConfig(heads=3)
    with pytest.raises(ValueError, match="attn_dropout"):
        EmtDlfrConfig(attn_dropout=1.0)
    with pytest.raises(ValueError, match="recon_loss"):
        EmtDlfrConfig(recon_loss="Huber")
    with pytest.raises(ValueError, match="attraction_weight"):
        EmtDlfrConfig(attraction_weight=-1.0)


# ---------------------------------------------------------------- small models

B, L, T_A, T_V, D_T, D_A, D_V = 3, 8, 12, 10, 16, 5, 7
SMALL = {"d_model": 32, "heads": 4, "fusion_layers": 2, "gmc_pred_dim": 16, "text_pred_dim": 8}


def small_shapes(aligned=False, num_classes=1):
    return DataShapes(D_T, D_A, D_V, L, L if aligned else T_A, L if aligned else T_V, aligned, num_classes)


def small_model(aligned=False, num_classes=1, maci=False, text_encoder=None, seed=0, **options):
    torch.manual_seed(seed)
    model = build_model("emt_dlfr", small_shapes(aligned, num_classes), {**SMALL, **options},
                        text_encoder=text_encoder, maci=maci)
    return model


def _prefix(lengths, steps):
    return (torch.arange(steps)[None, :] < torch.tensor(lengths)[:, None]).float()


def make_inputs(aligned=False, seed=0, text_lens=(8, 5, 3), audio_lens=(12, 7, 2), vision_lens=(10, 4, 9)):
    g = torch.Generator().manual_seed(seed)
    n = len(text_lens)
    ids = torch.zeros(n, L, dtype=torch.long)
    for b, length in enumerate(text_lens):
        ids[b, 0], ids[b, length - 1] = 101, 102
        ids[b, 1 : length - 1] = torch.randint(104, 200, (length - 2,), generator=g)
    text_mask = _prefix(text_lens, L)
    if aligned:
        audio_mask = vision_mask = text_mask
    else:
        audio_mask, vision_mask = _prefix(audio_lens[:n], T_A), _prefix(vision_lens[:n], T_V)
    return ModelInputs(
        text_ids=ids, text_mask=text_mask, text_segment=torch.zeros_like(ids),
        audio=torch.randn(n, audio_mask.shape[1], D_A, generator=g) * audio_mask[..., None],
        audio_mask=audio_mask.clone(),
        vision=torch.randn(n, vision_mask.shape[1], D_V, generator=g) * vision_mask[..., None],
        vision_mask=vision_mask.clone(),
        text_features=torch.randn(n, L, D_T, generator=g),
    )


def tiny_encoder():
    from transformers import BertConfig, BertModel

    from cider_mer.text.encoder import TextEncoder

    torch.manual_seed(1)
    bert = BertModel(BertConfig(vocab_size=200, hidden_size=D_T, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32))
    return TextEncoder(bert, name="tiny")


def regression_loss(raw, labels):
    return F.l1_loss(raw.view(-1), labels.view(-1))


def classification_loss(raw, labels):
    return F.cross_entropy(raw, labels)


def random_keep(inputs: ModelInputs, seed=0, rate=0.5) -> KeepMasks:
    g = torch.Generator().manual_seed(seed)
    keep = [(torch.rand(m.shape, generator=g) > rate) & m.bool()
            for m in (inputs.text_mask, inputs.audio_mask, inputs.vision_mask)]
    length = inputs.text_mask.sum(1).long()
    pos = torch.arange(inputs.text_mask.shape[1])[None, :]
    keep[0] |= (pos == 0) | (pos == (length - 1)[:, None])  # [CLS] / [SEP] always kept
    return KeepMasks(keep[0] & inputs.text_mask.bool(), keep[1], keep[2])


def objective_batch(model, inputs, keep, labels, task_loss=regression_loss, complete_features=True):
    inputs_m = apply_missing(inputs, keep)
    if inputs.text_features is not None:  # precomputed path: stand-in states for the text with [UNK]s
        inputs_m = inputs_m.replace(text_features=inputs.text_features * keep.text[..., None].float())
    incomplete = model(inputs_m)
    complete = model(inputs if complete_features else inputs.replace(text_features=None))
    batch = ObjectiveBatch(incomplete=incomplete.backbone, complete=complete.backbone, inputs=inputs,
                           incomplete_inputs=inputs_m, keep=keep, labels=labels, task_loss=task_loss,
                           head=model.head)
    return incomplete, batch


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("num_classes", [1, 3])
def test_forward_shapes(aligned, num_classes):
    model = small_model(aligned, num_classes)
    out = model(make_inputs(aligned))
    assert out.log_probs.shape == (B, num_classes)
    assert out.joint.shape == (B, 256)
    assert out.text_states.shape == (B, L, D_T)
    x = out.backbone.extras
    d, t_a, t_v = SMALL["d_model"], (L if aligned else T_A), (L if aligned else T_V)
    expected = {
        "gmc_tokens": (B, 3, d), "z_gmc": (B, 3 * d), "p_gmc": (B, 3 * d), "z_text": (B, D_T), "p_text": (B, D_T),
        "z_audio": (B, 16), "p_audio": (B, 16), "z_vision": (B, 32), "p_vision": (B, 32),
        "recon_text": (B, L - 1, D_T), "recon_audio": (B, t_a, D_A), "recon_vision": (B, t_v, D_V),
        "fusion_h": (B, D_T + 16 + 32 + 3 * d),
    }
    assert {k: tuple(v.shape) for k, v in x.items()} == expected
    assert (out.joint >= 0).all()  # x_f is a ReLU output
    assert model.backbone.needs_complete_pass
    assert not model.backbone.supports_reconstruction and not model.backbone.supports_attention


def test_reencoded_text_equals_precomputed_states():
    encoder = tiny_encoder()
    model = small_model(text_encoder=encoder).eval()
    inputs = make_inputs()
    with torch.no_grad():
        states = encoder(inputs.text_ids, inputs.text_mask, inputs.text_segment)
        via_encoder = model(inputs.replace(text_features=None))
        via_features = model(inputs.replace(text_features=states))
    assert torch.allclose(via_encoder.joint, via_features.joint, atol=1e-6)
    counts = model.parameter_counts()
    assert counts["params_text_encoder"] == sum(p.numel() for p in encoder.parameters())
    assert counts["params_excluding_text_encoder"] == counts["params_total"] - counts["params_text_encoder"]


def test_frame_encoder_matches_a_packed_lstm():
    model = small_model().eval()
    inputs = make_inputs()
    enc = model.backbone.audio_model
    lengths = inputs.audio_mask.sum(1).long()
    packed = torch.nn.utils.rnn.pack_padded_sequence(inputs.audio, lengths, batch_first=True, enforce_sorted=False)
    out, (h_n, _) = enc.rnn(packed)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T_A)
    sequence, utterance = enc(inputs.audio, inputs.audio_mask > 0)
    assert torch.allclose(utterance, enc.linear(h_n[-1]), atol=1e-6)
    assert torch.allclose(sequence, enc.linear(out), atol=1e-6)


def test_padding_content_does_not_change_the_output():
    model = small_model().eval()
    inputs = make_inputs()
    noisy = inputs.replace(
        audio=inputs.audio + 5.0 * (1 - inputs.audio_mask)[..., None],
        vision=inputs.vision - 3.0 * (1 - inputs.vision_mask)[..., None],
        text_features=inputs.text_features + 7.0 * (1 - inputs.text_mask)[..., None],
    )
    with torch.no_grad():
        a, b = model(inputs), model(noisy)
    assert torch.allclose(a.joint, b.joint, atol=1e-5)
    # Reconstructions of valid positions are unchanged too ([SEP] is a padding position of the word sequence).
    valid_words = (torch.arange(L - 1)[None, :] < (inputs.text_mask.sum(1) - 2)[:, None])
    assert torch.allclose(a.backbone.extras["recon_text"][valid_words], b.backbone.extras["recon_text"][valid_words],
                          atol=1e-5)
    valid = inputs.audio_mask.bool()
    assert torch.allclose(a.backbone.extras["recon_audio"][valid], b.backbone.extras["recon_audio"][valid], atol=1e-5)


def test_one_shared_mpu_serves_both_directions_and_all_layers():
    model = small_model().eval()
    calls = []
    unit = model.backbone.fusion.units[0]
    handle = unit.register_forward_hook(lambda m, args, out: calls.append(tuple(out.shape)))
    with torch.no_grad():
        model(make_inputs())
    handle.remove()
    d = SMALL["d_model"]
    per_layer = [(B, L - 1, d), (B, 3, d), (B, T_A, d), (B, 3, d), (B, T_V, d), (B, 3, d)]
    assert calls == per_layer * SMALL["fusion_layers"]


# ---------------------------------------------------------------- missing data, batch size 1, gradients


def _degenerate_inputs():
    inputs = make_inputs(text_lens=(8, 2, 3))  # sample 1: only [CLS] [SEP], no word
    inputs.audio_mask[1] = 0  # sample 1: no audio frame at all
    inputs.audio[1] = 0
    inputs.vision_mask[2] = 0  # sample 2: no vision frame
    inputs.vision[2] = 0
    return inputs


def test_fully_missing_modalities_and_batch_of_one_stay_finite():
    model = small_model().train()
    for inputs in (_degenerate_inputs(), make_inputs(text_lens=(2,), audio_lens=(0,), vision_lens=(0,))):
        keep = random_keep(inputs)
        labels = torch.linspace(-1, 1, inputs.batch_size)
        incomplete, batch = objective_batch(model, inputs, keep, labels)
        assert torch.isfinite(incomplete.log_probs).all()
        assert all(torch.isfinite(v).all() for v in incomplete.backbone.extras.values())
        terms = model.backbone.objective_terms(batch)
        assert all(torch.isfinite(t) for t in terms.values())
        loss = regression_loss(incomplete.log_probs, labels) + sum(terms.values())
        model.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_batch_norm_at_batch_size_one_uses_running_statistics_without_updating():
    model = small_model().train()
    bn = model.backbone.gmc_predictor[1]
    before = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    out = model(make_inputs(text_lens=(6,), audio_lens=(5,), vision_lens=(4,)))
    assert torch.isfinite(out.joint).all()
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    assert int(bn.num_batches_tracked) == before[2]
    model(make_inputs())  # batch of 3: ordinary batch statistics, running stats updated
    assert int(bn.num_batches_tracked) == before[2] + 1


@pytest.mark.parametrize("num_classes", [1, 3])
def test_every_parameter_gets_a_gradient(num_classes):
    # The original trains every parameter (projectors through the predictors; z is detached only as a target).
    model = small_model(num_classes=num_classes).train()
    inputs = make_inputs()
    keep = random_keep(inputs, seed=3)
    labels = torch.tensor([0.5, -1.0, 2.0]) if num_classes == 1 else torch.tensor([0, 2, 1])
    task = regression_loss if num_classes == 1 else classification_loss
    incomplete, batch = objective_batch(model, inputs, keep, labels, task_loss=task)
    raw = incomplete.log_probs
    loss = task(raw, labels) + sum(model.backbone.objective_terms(batch).values())
    loss.backward()
    no_grad = sorted(n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0)
    assert no_grad == []


# ---------------------------------------------------------------- objective terms


def test_objective_terms_keys_ranges_and_weights():
    model = small_model().train()
    inputs = make_inputs()
    keep = random_keep(inputs, seed=5)
    labels = torch.tensor([0.5, -1.0, 2.0])
    incomplete, batch = objective_batch(model, inputs, keep, labels)
    terms = model.backbone.objective_terms(batch)
    assert set(terms) == {"aux_attraction", "aux_complete_task", "aux_reconstruction"}
    assert all(t.dim() == 0 and torch.isfinite(t) for t in terms.values())
    assert -4.0 <= terms["aux_attraction"].item() <= 4.0  # a sum of four negative cosines
    assert terms["aux_complete_task"].item() >= 0 and terms["aux_reconstruction"].item() > 0
    # The complete-view task term is the task loss of the head on the complete pass.
    expected_task = regression_loss(model.head(batch.complete.joint), labels)
    assert torch.allclose(terms["aux_complete_task"], expected_task)

    config = model.backbone.config
    model.backbone.config = dataclasses.replace(config, attraction_weight=2.0, reconstruction_weight=0.5)
    scaled = model.backbone.objective_terms(batch)
    model.backbone.config = config
    assert torch.allclose(scaled["aux_attraction"], 2 * terms["aux_attraction"])
    assert torch.allclose(scaled["aux_complete_task"], 2 * terms["aux_complete_task"])
    assert torch.allclose(scaled["aux_reconstruction"], 0.5 * terms["aux_reconstruction"])


def test_reconstruction_only_counts_dropped_positions():
    model = small_model().eval()
    inputs = make_inputs()
    labels = torch.zeros(B)
    full_keep = KeepMasks(inputs.text_mask.bool(), inputs.audio_mask.bool(), inputs.vision_mask.bool())
    _, batch = objective_batch(model, inputs, full_keep, labels)
    assert model.backbone.objective_terms(batch)["aux_reconstruction"].item() == 0.0

    keep = random_keep(inputs, seed=7)
    _, batch = objective_batch(model, inputs, keep, labels)
    base = model.backbone.objective_terms(batch)["aux_reconstruction"]
    # Changing the complete frames at kept positions does not change the target term...
    kept_changed = inputs.replace(audio=inputs.audio + 10.0 * keep.audio[..., None].float())
    changed = dataclasses.replace(batch, inputs=kept_changed)
    assert torch.allclose(model.backbone.objective_terms(changed)["aux_reconstruction"], base)
    # ...while changing them at dropped positions does.
    dropped = inputs.audio_mask.bool() & ~keep.audio
    assert dropped.any()
    dropped_changed = inputs.replace(audio=inputs.audio + 10.0 * dropped[..., None].float())
    changed = dataclasses.replace(batch, inputs=dropped_changed)
    assert model.backbone.objective_terms(changed)["aux_reconstruction"].item() > base.item() + 1.0


def test_objective_without_complete_pass_or_head():
    model = small_model().eval()
    inputs = make_inputs()
    _, batch = objective_batch(model, inputs, random_keep(inputs), torch.zeros(B))
    assert model.backbone.objective_terms(dataclasses.replace(batch, complete=None)) == {}
    with pytest.raises(RuntimeError, match="head"):
        model.backbone.objective_terms(dataclasses.replace(batch, head=None))
    assert own_count(model) == own_count(model.backbone) + own_count(model.head)


# ---------------------------------------------------------------- MACI


@pytest.mark.parametrize("num_classes", [3, 7])
def test_maci_head_on_the_joint(num_classes):
    model = small_model(num_classes=num_classes, maci=True)
    assert isinstance(model.head, MCMHead)
    model.head.set_statistics(torch.full((num_classes,), 1.0 / num_classes), torch.randn(num_classes, D_T + D_A + D_V))
    inputs = make_inputs()
    for mode in (model.train, model.eval):
        mode()
        out = model(inputs)
        assert out.log_probs.shape == (B, num_classes)
        assert torch.allclose(out.log_probs.exp().sum(-1), torch.ones(B), atol=1e-5)
    counts = model.parameter_counts()
    assert counts["params_maci"] == own_count(model.head) > 0
    model.train()
    labels = torch.arange(B) % num_classes
    _, batch = objective_batch(model, inputs, random_keep(inputs), labels, task_loss=classification_loss)
    terms = model.backbone.objective_terms(batch)
    assert all(torch.isfinite(t) for t in terms.values())
