"""MulT (MMSA's BERT version): parameter parity with the notes, shapes, masking, gradients, heads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import cider_mer.models.mult  # noqa: F401  (registers "mult")
from cider_mer.maci.mcm import MCMHead
from cider_mer.missing import KeepMasks
from cider_mer.models.interface import DataShapes, ModelInputs, ObjectiveBatch
from cider_mer.models.layers.crossmodal import CrossmodalEncoder
from cider_mer.models.mult import MulT, MultConfig
from cider_mer.models.registry import build_model, get_spec
from cider_mer.text.encoder import TextEncoder


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _enc(d: int, n: int) -> int:
    return n * (12 * d * d + 13 * d) + 2 * d


def mosi_count(num_classes: int, aligned: bool = False, text_dim: int = 768, config=None) -> int:
    lengths = (50, 50) if aligned else (375, 500)
    shapes = DataShapes(text_dim, 5, 20, 50, *lengths, aligned, num_classes)
    model = build_model("mult", shapes, config, text_encoder=None, maci=False)
    return model.parameter_counts()["params_excluding_text_encoder"]


# ---------------------------------------------------------------- parity (notes §0, §2.7)


@pytest.mark.parametrize("num_classes,expected", [(1, 2_571_551), (3, 2_572_153), (7, 2_573_357)])
@pytest.mark.parametrize("aligned", [False, True])
def test_mosi_counts_match_the_measured_mmsa_model(num_classes, expected, aligned):
    assert mosi_count(num_classes, aligned) == expected
    # closed form: d sum(k d_m) + 6 E(d, N) + 3 E(2d, max(N, 3)) + 2 (36 d^2 + 6 d) + (6d + 1) C
    d = 50
    formula = (d * 5 * (768 + 5 + 20) + 6 * _enc(d, 4) + 3 * _enc(2 * d, 4) + 2 * (36 * d * d + 6 * d)
               + (6 * d + 1) * num_classes)
    assert formula == expected == 2_571_250 + 301 * num_classes


def test_mult_orig_setting_counts():
    """MulT-orig: d = 30, 5 heads, 5 levels, k = 1, positions on: 1,071,211 (300-d text), 1,085,251 (768-d)."""
    orig = {"dim": 30, "heads": 5, "layers": 5, "conv_kernel_l": 1, "conv_kernel_a": 1, "conv_kernel_v": 1,
            "positions": True}
    assert mosi_count(1, text_dim=300, config=orig) == 1_071_211
    assert mosi_count(1, text_dim=768, config=orig) == 1_085_251


def test_module_table_of_the_notes():
    shapes = DataShapes(768, 5, 20, 50, 375, 500, False, 1)
    backbone = build_model("mult", shapes, None, maci=False).backbone
    assert backbone.joint_dim == 300
    assert (_count(backbone.proj_l), _count(backbone.proj_a), _count(backbone.proj_v)) == (192_000, 1_250, 5_000)
    for name in ("l_with_a", "l_with_v", "a_with_l", "a_with_v", "v_with_l", "v_with_a"):
        assert _count(getattr(backbone, f"trans_{name}")) == 122_700
    for m in "lav":
        assert _count(getattr(backbone, f"trans_{m}_mem")) == 485_400
    assert _count(backbone.proj1) == _count(backbone.proj2) == 90_300
    # per-pair attention dropout (MMSA get_network), causal on, positions off
    expected = {"l_with_a": 0.2, "l_with_v": 0.0, "a_with_l": 0.3, "a_with_v": 0.0, "v_with_l": 0.3,
                "v_with_a": 0.2, "l_mem": 0.3, "a_mem": 0.3, "v_mem": 0.3}
    for name, p in expected.items():
        enc = getattr(backbone, f"trans_{name}")
        assert isinstance(enc, CrossmodalEncoder)
        assert enc.causal and not enc.positions and enc.embed_dropout == 0.2
        assert all(layer.self_attn.attn_dropout == p for layer in enc.layers)
        assert all(layer.relu_dropout == 0.0 and layer.res_dropout == 0.0 for layer in enc.layers)
        assert len(enc.layers) == 4
        assert enc.heads == 10


def test_registry_and_config_validation():
    assert get_spec("mult").config_cls is MultConfig
    assert "Tsai" in get_spec("mult").source
    with pytest.raises(ValueError):
        MultConfig(dim=50, heads=7)
    with pytest.raises(ValueError):
        MultConfig(text_dropout=1.0)
    with pytest.raises(ValueError):
        MultConfig(conv_kernel_a=0)


def test_modality_shorter_than_its_kernel_is_padded_and_masked():
    """A text-only file stores absent audio/vision as one zero frame (mask 0): MulT pads it to the
    kernel (5), and the padding mask leaves h_a, h_v at zero."""
    torch.manual_seed(0)
    model = build_model("mult", DataShapes(16, 5, 7, 8, 1, 1, False, 3), None, maci=False).eval()
    assert model.backbone.lengths == (8, 5, 5)
    inputs = small_inputs(small_shapes(3))
    absent = inputs.replace(audio=torch.zeros(3, 1, 5), audio_mask=torch.zeros(3, 1),
                            vision=torch.zeros(3, 1, 7), vision_mask=torch.zeros(3, 1))
    out = model(absent)
    assert torch.isfinite(out.log_probs).all()
    assert torch.all(out.backbone.extras["h_a"] == 0) and torch.all(out.backbone.extras["h_v"] == 0)
    assert out.backbone.extras["h_l"].abs().sum() > 0


# ---------------------------------------------------------------- small inputs

SMALL = dict(text_dim=16, audio_dim=5, vision_dim=7)


def small_shapes(num_classes: int = 3, aligned: bool = False) -> DataShapes:
    lengths = (8, 8, 8) if aligned else (8, 12, 10)
    return DataShapes(**SMALL, text_len=lengths[0], audio_len=lengths[1], vision_len=lengths[2],
                      aligned=aligned, num_classes=num_classes)


def small_inputs(shapes: DataShapes, batch: int = 3, seed: int = 0, text_lengths=None) -> ModelInputs:
    g = torch.Generator().manual_seed(seed)
    L, Ta, Tv = shapes.text_len, shapes.audio_len, shapes.vision_len
    text_lengths = text_lengths or [L - (i % 3) for i in range(batch)]
    ids = torch.zeros(batch, L, dtype=torch.long)
    mask = torch.zeros(batch, L)
    for i, n in enumerate(text_lengths):
        ids[i, 0], ids[i, 1:n - 1], ids[i, n - 1] = 101, torch.randint(103, 200, (n - 2,), generator=g), 102
        mask[i, :n] = 1
    audio_mask = torch.ones(batch, Ta)
    vision_mask = torch.ones(batch, Tv)
    if batch > 1:
        audio_mask[1, Ta - 3:] = 0
        vision_mask[1, Tv - 2:] = 0
    audio = torch.randn(batch, Ta, shapes.audio_dim, generator=g) * audio_mask[..., None]
    vision = torch.randn(batch, Tv, shapes.vision_dim, generator=g) * vision_mask[..., None]
    features = torch.randn(batch, L, shapes.text_dim, generator=g) * mask[..., None]
    return ModelInputs(text_ids=ids, text_mask=mask, text_segment=torch.zeros_like(ids), audio=audio,
                       audio_mask=audio_mask, vision=vision, vision_mask=vision_mask, text_features=features)


def small_model(num_classes: int = 3, aligned: bool = False, maci: bool = False, seed: int = 0, **config):
    torch.manual_seed(seed)
    return build_model("mult", small_shapes(num_classes, aligned), config or None, maci=maci)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("num_classes", [1, 3])
def test_forward_shapes(aligned, num_classes):
    shapes = small_shapes(num_classes, aligned)
    model = small_model(num_classes, aligned).eval()
    b = model.backbone
    seen = {}
    names = ["proj_l", "proj_a", "proj_v", "trans_l_with_a", "trans_a_with_v", "trans_v_with_l",
             "trans_l_mem", "trans_a_mem", "trans_v_mem"]
    for name in names:
        getattr(b, name).register_forward_hook(lambda mod, args, out, name=name: seen.__setitem__(name, out.shape))
    out = model(small_inputs(shapes))
    t_l, t_a, t_v = (4, 4, 4) if aligned else (4, 8, 6)  # T - 5 + 1
    assert seen["proj_l"] == (3, 50, t_l) and seen["proj_a"] == (3, 50, t_a) and seen["proj_v"] == (3, 50, t_v)
    assert seen["trans_l_with_a"] == (3, t_l, 50)
    assert seen["trans_a_with_v"] == (3, t_a, 50)
    assert seen["trans_v_with_l"] == (3, t_v, 50)
    assert seen["trans_l_mem"] == (3, t_l, 100)
    assert seen["trans_a_mem"] == (3, t_a, 100)
    assert seen["trans_v_mem"] == (3, t_v, 100)
    assert out.joint.shape == (3, 300)
    assert out.text_states.shape == (3, 8, 16)
    for key in ("h_l", "h_a", "h_v"):
        assert out.backbone.extras[key].shape == (3, 100)
    assert out.backbone.extras["last_hs"].shape == (3, 300)
    assert out.log_probs.shape == (3, num_classes)
    if num_classes > 1:
        assert torch.allclose(out.log_probs.exp().sum(-1), torch.ones(3), atol=1e-5)


def test_joint_is_the_residual_block_output():
    model = small_model().eval()
    b = model.backbone
    out = model(small_inputs(small_shapes()))
    last_hs = out.backbone.extras["last_hs"]
    expected = b.proj2(F.relu(b.proj1(last_hs))) + last_hs
    assert torch.allclose(out.joint, expected, atol=1e-6)
    assert torch.equal(last_hs, torch.cat([out.backbone.extras[k] for k in ("h_l", "h_a", "h_v")], dim=-1))


def test_unmasked_mode_pools_the_literal_last_step():
    model = small_model(mask_padding=False).eval()
    seen = {}
    model.backbone.trans_a_mem.register_forward_hook(lambda m, a, out: seen.__setitem__("a", out))
    out = model(small_inputs(small_shapes()))
    assert torch.equal(out.backbone.extras["h_a"], seen["a"][:, -1])


def test_masked_mode_pools_the_last_valid_step_and_ignores_padding():
    shapes = small_shapes()
    model = small_model().eval()
    seen = {}
    model.backbone.trans_a_mem.register_forward_hook(lambda m, a, out: seen.__setitem__("a", out))
    inputs = small_inputs(shapes)
    model(inputs)
    # sample 1 has 9 valid audio frames -> conv steps 0..7 touch a valid frame -> all 8 steps valid;
    # cut it to 4 valid frames: steps 0..3 valid, the pooled step is 3
    short = inputs.audio_mask.clone()
    short[1, 4:] = 0
    cut = inputs.replace(audio_mask=short, audio=inputs.audio * short[..., None])
    out_cut = model(cut)
    assert torch.equal(out_cut.backbone.extras["h_a"][1], seen["a"][1, 3])
    # changing frames at padded positions changes nothing
    noisy = cut.replace(audio=cut.audio + (1 - short)[..., None] * torch.randn_like(cut.audio) * 5)
    assert torch.allclose(model(noisy).joint, out_cut.joint, atol=1e-6)
    # masking matters only where there is padding: with all-valid masks, masked == unmasked
    unmasked = small_model(mask_padding=False).eval()
    unmasked.load_state_dict(model.state_dict())
    full = small_inputs(shapes, text_lengths=[8, 8, 8]).replace(
        audio_mask=torch.ones(3, 12), vision_mask=torch.ones(3, 10))
    assert torch.allclose(model(full).joint, unmasked(full).joint, atol=1e-5)
    assert not torch.allclose(model(cut).joint[1], unmasked(cut).joint[1], atol=1e-4)


@pytest.mark.parametrize("mask_padding", [True, False])
def test_trimmed_text_gives_the_same_outputs(mask_padding):
    shapes = small_shapes()
    model = small_model(mask_padding=mask_padding).eval()
    inputs = small_inputs(shapes, text_lengths=[6, 5, 6])
    trimmed = inputs.trim_text()
    assert trimmed.text_ids.shape[1] == 6
    assert torch.allclose(model(inputs).joint, model(trimmed).joint, atol=1e-6)


@pytest.mark.parametrize("batch", [1, 3])
def test_fully_missing_audio_is_finite_and_trains(batch):
    shapes = small_shapes(3)
    model = small_model(3, maci=False).train()
    inputs = small_inputs(shapes, batch=batch)
    mask = inputs.audio_mask.clone()
    mask[0] = 0  # sample 0 has no audio frame at all
    inputs = inputs.replace(audio_mask=mask, audio=inputs.audio * mask[..., None])
    out = model(inputs)
    assert torch.isfinite(out.log_probs).all() and torch.isfinite(out.joint).all()
    assert torch.all(out.backbone.extras["h_a"][0] == 0)
    labels = torch.arange(batch) % 3
    loss = F.nll_loss(out.log_probs, labels)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name


def test_whole_batch_without_audio_or_vision_is_finite():
    shapes = small_shapes(1)
    model = small_model(1).eval()
    inputs = small_inputs(shapes)
    inputs = inputs.replace(audio_mask=torch.zeros(3, 12), vision_mask=torch.zeros(3, 10),
                            audio=torch.zeros(3, 12, 5), vision=torch.zeros(3, 10, 7))
    out = model(inputs)
    assert torch.isfinite(out.log_probs).all()
    assert torch.all(out.backbone.extras["h_a"] == 0) and torch.all(out.backbone.extras["h_v"] == 0)


def _objective_batch(model, inputs, labels, task_loss):
    out = model.backbone(inputs)
    keep = KeepMasks(inputs.text_mask > 0, inputs.audio_mask > 0, inputs.vision_mask > 0)
    return out, ObjectiveBatch(incomplete=out, complete=None, inputs=inputs, incomplete_inputs=inputs, keep=keep,
                               labels=labels, task_loss=task_loss)


@pytest.mark.parametrize("num_classes", [1, 3])
def test_every_parameter_gets_a_gradient_and_no_objective_terms(num_classes):
    """MMSA trains the task loss only: objective_terms is empty, and no parameter is left untrained."""
    shapes = small_shapes(num_classes)
    model = small_model(num_classes).train()
    inputs = small_inputs(shapes)
    if num_classes == 1:
        labels = torch.tensor([0.5, -1.0, 2.0])
        task_loss = lambda raw, y: F.l1_loss(raw.squeeze(-1), y)  # noqa: E731
    else:
        labels = torch.tensor([0, 1, 2])
        task_loss = lambda raw, y: F.cross_entropy(raw, y)  # noqa: E731
    out, batch = _objective_batch(model, inputs, labels, task_loss)
    terms = model.backbone.objective_terms(batch)
    assert terms == {}
    assert not MulT.needs_complete_pass
    assert not MulT.supports_reconstruction and not MulT.supports_attention
    raw = model.head.out(out.joint)
    loss = task_loss(raw, labels) + sum(terms.values())
    loss.backward()
    missing = {name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0}
    assert missing == set()


def test_reencode_path_with_a_tiny_bert():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    encoder = TextEncoder(BertModel(BertConfig(vocab_size=200, hidden_size=16, num_hidden_layers=1,
                                               num_attention_heads=2, intermediate_size=32)), name="tiny")
    shapes = small_shapes(3)
    model = build_model("mult", shapes, None, text_encoder=encoder, maci=False).train()
    inputs = small_inputs(shapes).replace(text_features=None)
    out = model(inputs)
    assert out.text_states.shape == (3, 8, 16) and out.log_probs.shape == (3, 3)
    counts = model.parameter_counts()
    assert counts["params_text_encoder"] == _count(encoder)
    F.nll_loss(out.log_probs, torch.tensor([0, 1, 2])).backward()
    assert encoder.model.embeddings.word_embeddings.weight.grad.abs().sum() > 0  # gradients reach the encoder
    with pytest.raises(ValueError):  # text-encoder width must match shapes.text_dim
        build_model("mult", DataShapes(32, 5, 7, 8, 12, 10, False, 3), None, text_encoder=encoder, maci=False)


@pytest.mark.parametrize("num_classes", [3, 7])
def test_maci_head_on_the_joint(num_classes):
    shapes = small_shapes(num_classes)
    model = small_model(num_classes, maci=True)
    assert isinstance(model.head, MCMHead)
    assert model.head.classifiers[0].in_features == 300 + 3 * 32  # joint (6d) + 3 MLP widths
    inputs = small_inputs(shapes)
    for mode in (model.train, model.eval):
        mode()
        out = model(inputs)
        assert out.log_probs.shape == (3, num_classes)
        assert torch.allclose(out.log_probs.exp().sum(-1), torch.ones(3), atol=1e-5)
    plain = mosi_count(num_classes)
    maci = build_model("mult", DataShapes(768, 5, 20, 50, 375, 500, False, num_classes), None, maci=True)
    counts = maci.parameter_counts()
    assert counts["params_excluding_text_encoder"] - counts["params_maci"] == plain - 301 * num_classes
