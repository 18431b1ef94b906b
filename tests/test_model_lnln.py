"""LNLN backbone: parameter parity with the authors' code, shapes, masking, objective terms, gradients."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.nn import functional as F

import cider_mer.models.lnln  # noqa: F401  (registers "lnln")
from cider_mer.missing import KeepMasks, apply_missing, sample_training_keep
from cider_mer.models.interface import DataShapes, ModelInputs, ObjectiveBatch
from cider_mer.models.lnln import LNLN, LnlnConfig, gradient_reversal
from cider_mer.models.registry import build_model
from cider_mer.text.encoder import TextEncoder

MOSI = dict(text_dim=768, audio_dim=5, vision_dim=20, text_len=50, audio_len=375, vision_len=500)


def mosi_count(num_classes=1, aligned=False, config=None) -> int:
    lengths = dict(audio_len=50, vision_len=50) if aligned else {}
    shapes = DataShapes(**{**MOSI, **lengths}, aligned=aligned, num_classes=num_classes)
    model = build_model("lnln", shapes, config, text_encoder=None, maci=False)
    return model.parameter_counts()["params_excluding_text_encoder"]


# ---------------------------------------------------------------- parameter parity (notes §0, §2.9)


def test_mosi_regression_count_matches_the_measured_figure():
    assert mosi_count(1) == 6_483_012


@pytest.mark.parametrize("num_classes, expected", [(3, 6_483_270), (7, 6_483_786)])
def test_class_heads_add_129_per_output(num_classes, expected):
    assert mosi_count(num_classes) == expected == 6_483_012 + 129 * (num_classes - 1)


def test_aligned_count():
    assert mosi_count(1, aligned=True) == 6_383_812


def test_four_heads_keep_dim_head_64():
    # notes §2.9: with dim_head fixed at 64, 4 heads give an encoder layer of 165,248 (20 such layers).
    assert mosi_count(1, config={"heads": 4}) == 6_483_012 - 20 * (296_320 - 165_248) == 3_861_572


def closed_form(heads, tokens, depths, dims, lengths, num_classes, hyper_depth, h=128, m=128, dh=64, e=64):
    """The notes' closed form (§2.9); depths = (encoders, proxy, completeness, reconstructors, language, fusion)."""
    d_fe, d_px, d_cc, d_rc, d_le, d_fu = depths
    t = tokens
    layer = 4 * h * heads * dh + 2 * h * m + m + 10 * h
    n_layers = 3 * d_fe + d_px + d_cc + 3 * d_rc + d_le + d_fu
    rho = (2 * t * h + h * (sum(dims) + 3) + h * sum(lengths) + 6 * t * h + 5 * t * h + (t + 2) * h
           + (h * h // 2 + h + 1) + (h * e + 3 * e + 2) + 3 * t * h + t * h + (2 * t + 3) * h + (h + 1) * num_classes)
    return n_layers * layer + hyper_depth * (6 * h * h + 9 * h) + rho


@pytest.mark.parametrize("heads, tokens, depths, hyper_depth, dims, lengths, num_classes", [
    (4, 6, (1, 3, 2, 1, 3, 1), 2, (300, 7, 11), (20, 33, 41), 3),
    (2, 3, (3, 1, 1, 2, 2, 4), 3, (64, 74, 35), (39, 400, 50), 7),
])
def test_counts_follow_the_closed_form(heads, tokens, depths, hyper_depth, dims, lengths, num_classes):
    d_fe, d_px, d_cc, d_rc, d_le, d_fu = depths
    config = dict(heads=heads, tokens=tokens, encoder_depth=d_fe, proxy_depth=d_px, completeness_depth=d_cc,
                  reconstructor_depth=d_rc, language_depth=d_le, fusion_depth=d_fu, hyper_depth=hyper_depth)
    shapes = DataShapes(*dims, *lengths, aligned=False, num_classes=num_classes)
    count = build_model("lnln", shapes, config, maci=False).parameter_counts()["params_excluding_text_encoder"]
    assert count == closed_form(heads, tokens, depths, dims, lengths, num_classes, hyper_depth)


def test_config_validation():
    assert LnlnConfig().alpha == 0.9 and LnlnConfig().beta == 0.8 and LnlnConfig().gamma == 0.1
    with pytest.raises(ValueError, match="sigma"):
        LnlnConfig(sigma=2.0)
    with pytest.raises(ValueError, match="hyper_depth"):
        LnlnConfig(hyper_depth=4, language_depth=2)
    with pytest.raises(ValueError, match="divide"):
        LnlnConfig(dim=128, hyper_heads=3)
    with pytest.raises(ValueError, match="beta"):
        LnlnConfig(beta=-0.1)
    with pytest.raises(ValueError, match="dropout"):
        LnlnConfig(dropout=1.0)


# ---------------------------------------------------------------- small model on CPU

B, L, T_A, T_V, D_T, D_A, D_V = 3, 8, 12, 10, 16, 5, 7
H, T = 16, 4
SMALL = dict(dim=H, tokens=T, heads=2, dim_head=8, mlp_dim=16, completeness_hidden=8, discriminator_hidden=8,
             hyper_heads=2)


@pytest.fixture(scope="module")
def encoder():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=200, hidden_size=D_T, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32), add_pooling_layer=False)
    return TextEncoder(bert, name="tiny")


def shapes(aligned=False, num_classes=1):
    return DataShapes(D_T, D_A, D_V, L, L if aligned else T_A, L if aligned else T_V, aligned, num_classes)


def small_model(encoder=None, aligned=False, num_classes=1, maci=False, seed=0, **options):
    torch.manual_seed(seed)
    return build_model("lnln", shapes(aligned, num_classes), {**SMALL, **options}, text_encoder=encoder, maci=maci)


def _lengths_mask(lengths, steps):
    return (torch.arange(steps)[None, :] < torch.tensor(lengths)[:, None]).float()


def make_inputs(aligned=False, seed=0, text_lens=(8, 6, 3), audio_lens=(12, 5, 1), vision_lens=(10, 3, 7),
                features=True):
    g = torch.Generator().manual_seed(seed)
    n = len(text_lens)
    ids = torch.zeros(n, L, dtype=torch.long)
    for b, length in enumerate(text_lens):
        ids[b, 0], ids[b, length - 1] = 101, 102
        ids[b, 1: length - 1] = torch.randint(104, 200, (length - 2,), generator=g)
    text_mask = _lengths_mask(text_lens, L)
    if aligned:
        audio_mask, vision_mask = text_mask.clone(), text_mask.clone()
    else:
        audio_mask, vision_mask = _lengths_mask(audio_lens[:n], T_A), _lengths_mask(vision_lens[:n], T_V)
    audio = torch.randn(n, audio_mask.shape[1], D_A, generator=g) * audio_mask[..., None]
    vision = torch.randn(n, vision_mask.shape[1], D_V, generator=g) * vision_mask[..., None]
    states = torch.randn(n, L, D_T, generator=g) * text_mask[..., None] if features else None
    return ModelInputs(text_ids=ids, text_mask=text_mask, text_segment=torch.zeros_like(ids), audio=audio,
                       audio_mask=audio_mask, vision=vision, vision_mask=vision_mask, text_features=states)


def task_loss_for(num_classes):
    if num_classes == 1:
        return lambda raw, y: F.l1_loss(raw, y.view(-1, 1).to(raw.dtype))
    return lambda raw, y: F.cross_entropy(raw, y)


def objective_batch(model, inputs, seed=0, num_classes=1, keep=None):
    """Run the incomplete and complete passes as the trainer does; return (head output, ObjectiveBatch)."""
    if keep is None:
        g = torch.Generator().manual_seed(seed)
        keep = sample_training_keep(inputs.text_mask, inputs.audio_mask, inputs.vision_mask, g)
    incomplete_inputs = apply_missing(inputs, keep)
    out = model(incomplete_inputs)
    complete = model.backbone(inputs)
    n = inputs.batch_size
    labels = torch.linspace(-2, 2, n) if num_classes == 1 else torch.arange(n) % num_classes
    batch = ObjectiveBatch(incomplete=out.backbone, complete=complete, inputs=inputs,
                           incomplete_inputs=incomplete_inputs, keep=keep, labels=labels,
                           task_loss=task_loss_for(num_classes))
    return out, batch


@pytest.mark.parametrize("aligned", [False, True])
def test_forward_shapes(aligned):
    model = small_model(aligned=aligned, num_classes=3)
    out = model(make_inputs(aligned))
    ex = out.backbone.extras
    assert isinstance(model.backbone, LNLN) and model.backbone.joint_dim == H
    assert out.joint.shape == (B, H)
    assert out.log_probs.shape == (B, 3)
    assert out.text_states.shape == (B, L, D_T)
    for name in ("text_tokens", "audio_tokens", "vision_tokens", "proxy", "dominant"):
        assert ex[name].shape == (B, T, H), name
    assert ex["fusion_tokens"].shape == (B, T + 1, H)
    assert ex["completeness"].shape == (B, 1)
    assert ((ex["completeness"] > 0) & (ex["completeness"] < 1)).all()
    # joint = mean of the fusion tokens after the extra token; h_d = (1 - w) h_p + w h_t
    torch.testing.assert_close(out.joint, ex["fusion_tokens"][:, 1:].mean(1))
    w = ex["completeness"][..., None]
    torch.testing.assert_close(ex["dominant"], (1 - w) * ex["proxy"] + w * ex["text_tokens"])


def test_default_config_forward_shapes():
    torch.manual_seed(0)
    model = build_model("lnln", shapes(num_classes=1), None, maci=False)
    out = model(make_inputs())
    assert out.joint.shape == (B, 128) and out.log_probs.shape == (B, 1)
    assert out.backbone.extras["text_tokens"].shape == (B, 8, 128)
    assert out.backbone.extras["fusion_tokens"].shape == (B, 9, 128)
    # dim_head fixed at 64: q/k/v project 128 -> 8 * 64 = 512
    assert model.backbone.text_tokens.layers[0].attn.to_q.weight.shape == (512, 128)
    assert model.backbone.hyper_layers[0].to_q.weight.shape == (128, 128)


def test_initialisation_follows_the_original():
    bb = small_model().backbone
    assert torch.equal(bb.h_hyper, torch.ones_like(bb.h_hyper)) and torch.equal(bb.h_p, torch.ones_like(bb.h_p))
    for enc in (bb.text_tokens, bb.audio_tokens, bb.vision_tokens, bb.proxy_generator, bb.completeness_encoder):
        assert not enc.extra.detach().any()
        assert enc.pos.detach().std() > 0.5  # randn table
    assert bb.language_encoder.extra is None and all(r.extra is None for r in bb.reconstructors)
    assert not bb.fusion.extra.detach().any()


def test_reencode_path_matches_precomputed_states(encoder):
    model = small_model(encoder).eval()
    inputs = make_inputs(features=False)
    with torch.no_grad():
        states = encoder(inputs.text_ids, inputs.text_mask, inputs.text_segment)
        a = model(inputs)
        b = model(inputs.replace(text_features=states))
    torch.testing.assert_close(a.joint, b.joint)
    torch.testing.assert_close(a.text_states, states)


def test_padding_is_masked_by_default_and_attended_with_mask_padding_false():
    inputs = make_inputs()
    garbage = inputs.replace(audio=inputs.audio + 5.0 * (1 - inputs.audio_mask)[..., None],
                             vision=inputs.vision - 3.0 * (1 - inputs.vision_mask)[..., None])
    masked = small_model().eval()
    with torch.no_grad():
        torch.testing.assert_close(masked(inputs).joint, masked(garbage).joint)
        # a batch trimmed to its longest text gives the same outputs
        short = make_inputs(text_lens=(6, 5, 3))
        torch.testing.assert_close(masked(short).joint, masked(short.trim_text()).joint)
        assert short.trim_text().text_ids.shape[1] == 6
    original = small_model(mask_padding=False).eval()
    with torch.no_grad():
        assert not torch.allclose(original(inputs).joint, original(garbage).joint)


@pytest.mark.parametrize("mask_padding", [True, False])
def test_fully_missing_modality_and_batch_of_one_are_finite(mask_padding, encoder):
    model = small_model(encoder, mask_padding=mask_padding)
    inputs = make_inputs()
    # sample 0 without audio, sample 1 without vision (masks all zero), sample 2 with every inner token dropped
    audio_mask, vision_mask = inputs.audio_mask.clone(), inputs.vision_mask.clone()
    audio_mask[0] = 0
    vision_mask[1] = 0
    inputs = inputs.replace(audio=inputs.audio * audio_mask[..., None], audio_mask=audio_mask,
                            vision=inputs.vision * vision_mask[..., None], vision_mask=vision_mask)
    keep = KeepMasks(inputs.text_mask.bool(), audio_mask.bool(), vision_mask.bool())
    keep.text[2, 1:2] = False
    out, batch = objective_batch(model, inputs, keep=keep)
    assert torch.isfinite(out.log_probs).all() and torch.isfinite(out.joint).all()
    terms = model.backbone.objective_terms(batch)
    assert all(torch.isfinite(v) for v in terms.values())
    # the whole audio of the batch missing, at batch size 1
    one = make_inputs(text_lens=(5,), audio_lens=(1,), vision_lens=(4,))
    one = one.replace(audio=torch.zeros_like(one.audio), audio_mask=torch.zeros_like(one.audio_mask))
    out, batch = objective_batch(model, one, seed=3)
    assert out.log_probs.shape == (1, 1) and out.joint.shape == (1, H)
    assert torch.isfinite(out.log_probs).all()
    loss = batch.task_loss(out.log_probs, batch.labels) + sum(model.backbone.objective_terms(batch).values())
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("num_classes", [1, 3])
def test_every_parameter_gets_a_gradient(num_classes, encoder):
    model = small_model(encoder, num_classes=num_classes)
    out, batch = objective_batch(model, make_inputs(), num_classes=num_classes)
    loss = batch.task_loss(out.log_probs, batch.labels) + sum(model.backbone.objective_terms(batch).values())
    loss.backward()
    # The original trains every parameter. The one exception is at initialisation only: h_hyper is all
    # ones, the first hyper layer's LN4 normalises that constant to 0, so its weight gets no gradient.
    without = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert without == ["backbone.hyper_layers.0.norm_hyper.weight"]
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    # ... and once h_hyper has moved (any optimiser step does), that weight trains as well.
    model.zero_grad()
    with torch.no_grad():
        model.backbone.h_hyper.add_(1e-3 * torch.randn_like(model.backbone.h_hyper))
    out, batch = objective_batch(model, make_inputs(), num_classes=num_classes)
    loss = batch.task_loss(out.log_probs, batch.labels) + sum(model.backbone.objective_terms(batch).values())
    loss.backward()
    assert model.backbone.hyper_layers[0].norm_hyper.weight.grad.abs().sum() > 0


def test_objective_terms_keys_signs_and_weights(encoder):
    model = small_model(encoder)
    bb = model.backbone
    _, batch = objective_batch(model, make_inputs())
    terms = bb.objective_terms(batch)
    assert set(terms) == {"aux_completeness", "aux_adversarial", "aux_reconstruction"}
    for value in terms.values():
        assert value.dim() == 0 and torch.isfinite(value) and value >= 0
    assert terms["aux_adversarial"] > 0 and terms["aux_reconstruction"] > 0
    base = bb.config
    for key, weight in (("aux_completeness", "alpha"), ("aux_adversarial", "beta"),
                        ("aux_reconstruction", "gamma")):
        bb.config = dataclasses.replace(base, **{weight: 2 * getattr(base, weight)})
        doubled = bb.objective_terms(batch)
        torch.testing.assert_close(doubled[key], 2 * terms[key])
        others = set(terms) - {key}
        assert all(torch.equal(doubled[k], terms[k]) for k in others)
        bb.config = dataclasses.replace(base, **{weight: 0.0})
        assert bb.objective_terms(batch)[key] == 0
    bb.config = base
    # unweighted values by hand
    w = batch.incomplete.extras["completeness"]
    labels = LNLN.completeness_labels(batch.keep.text, batch.inputs.text_mask)
    torch.testing.assert_close(terms["aux_completeness"], 0.9 * F.mse_loss(w, labels))
    h_d, clean = batch.incomplete.extras["dominant"], batch.complete.extras["text_tokens"]
    logits = bb.discriminator(torch.cat([h_d, clean]).reshape(-1, H))
    n = h_d.shape[0] * T
    torch.testing.assert_close(terms["aux_adversarial"],
                               0.8 * F.cross_entropy(logits, torch.tensor([1] * n + [0] * n)))
    # without a complete pass (MSSD's step) only the completeness term remains, as in the original's eval loss
    only = bb.objective_terms(dataclasses.replace(batch, complete=None))
    assert set(only) == {"aux_completeness"}
    torch.testing.assert_close(only["aux_completeness"], terms["aux_completeness"])


def test_completeness_labels_are_the_kept_fraction_of_inner_tokens():
    text_mask = _lengths_mask([6, 2, 4], L)
    keep = text_mask.bool().clone()
    keep[0, 1] = keep[0, 3] = False  # 2 of the 4 inner tokens of sample 0 dropped
    keep[2, 1:3] = False  # both inner tokens of sample 2 dropped
    labels = LNLN.completeness_labels(keep, text_mask)
    assert labels.shape == (3, 1)
    torch.testing.assert_close(labels, torch.tensor([[0.5], [1.0], [0.0]]))


def test_flags_and_reconstruction_targets_are_not_detached(encoder):
    model = small_model(encoder)
    bb = model.backbone
    assert bb.needs_complete_pass and not bb.supports_reconstruction and not bb.supports_attention
    _, batch = objective_batch(model, make_inputs())
    # cut the incomplete pass off: the reconstruction term still trains the encoders through its targets
    detached = dataclasses.replace(batch.incomplete, extras={k: v.detach() for k, v in batch.incomplete.extras.items()})
    bb.objective_terms(dataclasses.replace(batch, incomplete=detached))["aux_reconstruction"].backward()
    for module in (bb.project_audio, bb.project_vision, bb.project_text, bb.audio_tokens):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_gradient_reversal_flips_the_adversarial_gradient_of_the_proxy_generator(encoder):
    x = torch.randn(4, requires_grad=True)
    gradient_reversal(x, 0.5).sum().backward()
    torch.testing.assert_close(x.grad, torch.full((4,), -0.5))

    def proxy_grads(alpha):
        model = small_model(encoder, grl_alpha=alpha)
        _, batch = objective_batch(model, make_inputs())
        model.backbone.objective_terms(batch)["aux_adversarial"].backward()
        gen = [p.grad.clone() for p in model.backbone.proxy_generator.parameters()]
        disc = [p.grad.clone() for p in model.backbone.discriminator.parameters()]
        return gen, disc

    gen_rev, disc_rev = proxy_grads(1.0)
    gen_id, disc_id = proxy_grads(-1.0)  # reversal of the reversal: a plain gradient
    for a, b in zip(gen_rev, gen_id):
        torch.testing.assert_close(a, -b)
    for a, b in zip(disc_rev, disc_id):  # the discriminator itself is not reversed
        torch.testing.assert_close(a, b)


def test_maci_head_on_the_joint():
    model = small_model(num_classes=3, maci=True)
    model.head.set_statistics(torch.tensor([0.2, 0.3, 0.5]), torch.randn(3, D_T + D_A + D_V))
    assert model.parameter_counts()["params_maci"] > 0
    for mode in (model.train, model.eval):
        mode()
        out = model(make_inputs())
        assert out.log_probs.shape == (B, 3)
        torch.testing.assert_close(out.log_probs.exp().sum(-1), torch.ones(B))
    plain = small_model(num_classes=3, maci=False)
    assert plain.parameter_counts()["params_maci"] == 0
