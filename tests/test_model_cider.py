"""CIDer backbone: exact parameter counts, masking, gradients, determinism, padding invariance."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from cider_mer.models.cider import CIDer, CiderConfig
from cider_mer.models.interface import DataShapes, ModelInputs
from cider_mer.models.layers.mct import MultimodalCompositeAttention, MultimodalCompositeTransformer
from cider_mer.models.layers.positional import SinusoidalPositions
from cider_mer.models.layers.wsam import WordAlignedAttention, word_positions
from cider_mer.models.registry import build_model
from cider_mer.text.encoder import TextEncoder

E = 32
MOSI_UNALIGNED = dict(text_dim=768, audio_dim=5, vision_dim=20, text_len=50, audio_len=375, vision_len=500)


def mosi_counts(num_classes=3, layers=2, heads=8, aligned=False, **options):
    lengths = dict(audio_len=50, vision_len=50) if aligned else {}
    shapes = DataShapes(**{**MOSI_UNALIGNED, **lengths}, aligned=aligned, num_classes=num_classes)
    model = build_model("cider", shapes, {"layers": layers, "hidden": E, "heads": heads, **options}, maci=True)
    return model.parameter_counts()


# ---------------------------------------------------------------- parameter counts (reference §3.11)


@pytest.mark.parametrize("heads", [1, 2, 4, 8])
def test_mosi_unaligned_counts_match_reference_for_any_head_count(heads):
    binary = mosi_counts(num_classes=3, heads=heads)
    seven = mosi_counts(num_classes=7, heads=heads)
    assert binary["params_excluding_text_encoder"] == 244_086
    assert binary["params_maci"] == 33_545
    assert seven["params_excluding_text_encoder"] == 251_806
    assert seven["params_maci"] == 41_265


def test_counts_per_depth_and_aligned():
    assert mosi_counts(layers=1)["params_excluding_text_encoder"] == 211_606
    assert mosi_counts(layers=3)["params_excluding_text_encoder"] == 276_566
    assert mosi_counts(aligned=True)["params_excluding_text_encoder"] == 204_561


def test_ablation_counts_follow_the_formulas():
    full = mosi_counts()["params_excluding_text_encoder"]
    text_len, audio_len, vision_len = 50, 375, 500
    # w/o WSAM: two WSAM modules gone; reconstruction time-Linears T->T instead of L->T.
    no_wsam = full - 2 * (4 * E * E + 4 * E) + audio_len * (audio_len - text_len) + vision_len * (vision_len - text_len)
    assert mosi_counts(use_wsam=False)["params_excluding_text_encoder"] == no_wsam == 582_513
    # w/o MCT: each layer's attention is 4E^2+4E instead of 23E^2+14E.
    no_mct = full - 2 * (19 * E * E + 10 * E)
    assert mosi_counts(use_mct=False)["params_excluding_text_encoder"] == no_mct == 204_534


def test_config_rejects_heads_not_dividing_hidden():
    with pytest.raises(ValueError, match="divide"):
        CiderConfig(hidden=32, heads=3)
    with pytest.raises(ValueError, match="embed_dropout"):
        CiderConfig(embed_dropout=1.0)


# ---------------------------------------------------------------- small model on CPU

VOCAB = 300
B, L, T_A, T_V, D_A, D_V = 4, 12, 20, 24, 5, 7


@pytest.fixture(scope="module")
def encoder_model():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    return BertModel(config, add_pooling_layer=False)


def small_model(encoder_model, aligned=False, seed=0, **options) -> torch.nn.Module:
    torch.manual_seed(seed)
    shapes = DataShapes(
        text_dim=32,
        audio_dim=D_A,
        vision_dim=D_V,
        text_len=L,
        audio_len=L if aligned else T_A,
        vision_len=L if aligned else T_V,
        aligned=aligned,
        num_classes=3,
    )
    config = {"hidden": 16, "heads": 4, "layers": 2, **options}
    encoder = TextEncoder(encoder_model)
    model = build_model("cider", shapes, config, text_encoder=encoder, maci=True)
    model.head.set_statistics(torch.tensor([0.3, 0.2, 0.5]), torch.randn(3, 32 + D_A + D_V))
    return model


def _frame_mask(lengths, steps):
    return (torch.arange(steps)[None, :] < torch.tensor(lengths)[:, None]).float()


def make_inputs(aligned=False, seed=0, text_lens=(12, 9, 5, 2), audio_lens=(20, 13, 4, 1), vision_lens=(24, 10, 24, 3)):
    g = torch.Generator().manual_seed(seed)
    n = len(text_lens)
    ids = torch.zeros(n, L, dtype=torch.long)
    for b, length in enumerate(text_lens):
        ids[b, 0] = 101
        ids[b, 1 : length - 1] = torch.randint(104, VOCAB, (length - 2,), generator=g)
        ids[b, length - 1] = 102
    text_mask = _frame_mask(text_lens, L)
    if aligned:
        audio_mask = vision_mask = text_mask
    else:
        audio_mask, vision_mask = _frame_mask(audio_lens[:n], T_A), _frame_mask(vision_lens[:n], T_V)
    audio = torch.randn(n, audio_mask.shape[1], D_A, generator=g) * audio_mask[..., None]
    vision = torch.randn(n, vision_mask.shape[1], D_V, generator=g) * vision_mask[..., None]
    return ModelInputs(
        text_ids=ids,
        text_mask=text_mask,
        text_segment=torch.zeros_like(ids),
        audio=audio,
        audio_mask=audio_mask.clone(),
        vision=vision,
        vision_mask=vision_mask.clone(),
    )


@pytest.mark.parametrize("aligned", [False, True])
def test_output_shapes(encoder_model, aligned):
    model = small_model(encoder_model, aligned=aligned)
    out = model(make_inputs(aligned), need_recon=True)
    s = 3 * L
    assert out.log_probs.shape == (B, 3)
    assert out.joint.shape == (B, 48)
    assert out.text_states.shape == (B, L, 32)
    assert out.attention_logits.shape == (B, 4, s, s)
    assert out.attention_mask.shape == (B, s)
    rec = out.reconstructions
    assert rec.text.shape == (B, L, 32)
    assert rec.audio.shape == (B, L if aligned else T_A, D_A)
    assert rec.vision.shape == (B, L if aligned else T_V, D_V)
    assert model(make_inputs(aligned)).reconstructions is None


def test_fused_validity_after_wsam(encoder_model):
    model = small_model(encoder_model)
    inputs = make_inputs()
    inputs.audio_mask[1] = 0  # sample 1 has no audio frame at all
    mask = model(inputs).attention_mask
    text_mask = inputs.text_mask
    assert torch.equal(mask[:, :L], text_mask)
    expected_audio = text_mask.clone()
    expected_audio[1] = 0
    assert torch.equal(mask[:, L : 2 * L], expected_audio)
    assert torch.equal(mask[:, 2 * L :], text_mask)


def _missing_cases(aligned):
    no_audio = make_inputs(aligned)
    no_audio.audio_mask.zero_()
    no_audio.audio.zero_()
    zero_vision = make_inputs(aligned)
    zero_vision.vision.zero_()
    unk_text = make_inputs(aligned)
    real = unk_text.text_mask.bool() & (unk_text.text_ids != 101) & (unk_text.text_ids != 102)
    unk_text.text_ids[real] = 100
    return {"audio lengths 0": no_audio, "vision all zeros": zero_vision, "text all [UNK]": unk_text}


@pytest.mark.parametrize("aligned", [False, True])
def test_missing_modalities_give_finite_outputs_and_grads(encoder_model, aligned):
    model = small_model(encoder_model, aligned=aligned)
    for name, inputs in _missing_cases(aligned).items():
        model.zero_grad()
        out = model(inputs, need_recon=True)
        assert torch.isfinite(out.log_probs).all(), name
        assert torch.isfinite(out.attention_logits).all(), name
        out.log_probs.sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None), name


def _training_loss(out, inputs, labels):
    rec = out.reconstructions
    return (
        F.nll_loss(out.log_probs, labels)
        + F.smooth_l1_loss(rec.text, out.text_states.detach())
        + F.smooth_l1_loss(rec.audio, inputs.audio)
        + F.smooth_l1_loss(rec.vision, inputs.vision)
    )


@pytest.mark.parametrize("aligned", [False, True])
def test_every_learnable_parameter_gets_a_gradient(encoder_model, aligned):
    model = small_model(encoder_model, aligned=aligned)
    model.train()
    inputs = make_inputs(aligned)
    out = model(inputs, need_recon=True)
    _training_loss(out, inputs, torch.tensor([0, 1, 2, 0])).backward()
    encoder_ids = model.encoder_parameter_ids()
    for name, param in model.named_parameters():
        if id(param) in encoder_ids:
            continue
        if aligned and ".wsam_" in name:
            assert param.grad is None, f"{name}: WSAM must be unused on aligned data"
            continue
        assert param.grad is not None and param.grad.abs().sum() > 0, f"{name} gets no gradient"
    word_embeddings = model.text_encoder.model.embeddings.word_embeddings.weight
    assert word_embeddings.grad is not None and word_embeddings.grad.abs().sum() > 0


@pytest.mark.parametrize("options", [{}, {"use_wsam": False}, {"use_mct": False}])
def test_eval_is_deterministic_and_batch_of_one_works(encoder_model, options):
    model = small_model(encoder_model, **options).eval()
    inputs = make_inputs()
    with torch.no_grad():
        first, second = model(inputs), model(inputs)
        single = model(ModelInputs(**{k: v[:1] for k, v in vars(inputs).items() if v is not None}), need_recon=True)
    assert torch.equal(first.log_probs, second.log_probs)
    assert torch.equal(first.joint, second.joint)
    assert single.log_probs.shape == (1, 3)
    torch.testing.assert_close(single.joint, first.joint[:1], atol=1e-5, rtol=1e-5)


def _pad_frames(inputs: ModelInputs, extra: int) -> ModelInputs:
    return inputs.replace(
        audio=F.pad(inputs.audio, (0, 0, 0, extra)),
        audio_mask=F.pad(inputs.audio_mask, (0, extra)),
        vision=F.pad(inputs.vision, (0, 0, 0, extra)),
        vision_mask=F.pad(inputs.vision_mask, (0, extra)),
    )


@pytest.mark.parametrize("options", [{}, {"use_wsam": False}, {"use_wsam": False, "use_mct": False}])
def test_extra_padding_frames_change_nothing(encoder_model, options):
    model = small_model(encoder_model, **options).eval()
    inputs = make_inputs()
    with torch.no_grad():
        base = model(inputs).joint
        padded = model(_pad_frames(inputs, 7)).joint
    torch.testing.assert_close(padded, base, atol=1e-5, rtol=1e-5)


def test_extra_padding_tokens_change_nothing(encoder_model):
    model = small_model(encoder_model).eval()
    inputs = make_inputs()
    longer = inputs.replace(
        text_ids=F.pad(inputs.text_ids, (0, 5)),
        text_mask=F.pad(inputs.text_mask, (0, 5)),
        text_segment=F.pad(inputs.text_segment, (0, 5)),
    )
    with torch.no_grad():
        base, padded = model(inputs), model(longer)
    torch.testing.assert_close(padded.joint, base.joint, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded.log_probs, base.log_probs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("aligned", [False, True])
def test_trimming_a_batch_to_its_longest_text_is_exact(encoder_model, aligned):
    model = small_model(encoder_model, aligned=aligned).eval()
    inputs = make_inputs(aligned=aligned, text_lens=(7, 5, 3, 2), audio_lens=(20, 13, 4, 1), vision_lens=(24, 10, 24, 3))
    trimmed = inputs.trim_text()
    assert trimmed.text_ids.shape[1] == 7 < inputs.text_ids.shape[1]
    with torch.no_grad():
        full, cut = model(inputs, need_recon=True), model(trimmed, need_recon=True)
    torch.testing.assert_close(cut.joint, full.joint, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cut.log_probs, full.log_probs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cut.reconstructions.audio, full.reconstructions.audio, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cut.reconstructions.text, full.reconstructions.text[:, :7], atol=1e-5, rtol=1e-5)


def test_reconstruction_refuses_other_lengths(encoder_model):
    model = small_model(encoder_model, use_wsam=False).eval()
    with pytest.raises(ValueError, match="audio reconstruction"):
        model(_pad_frames(make_inputs(), 3), need_recon=True)


def test_precomputed_text_features_replace_the_encoder(encoder_model):
    model = small_model(encoder_model).eval()
    inputs = make_inputs()
    with torch.no_grad():
        encoded = model(inputs)
        cached = model(inputs.replace(text_features=encoded.text_states))
    torch.testing.assert_close(cached.joint, encoded.joint)
    shapes = model.backbone.shapes
    bare = CIDer(model.backbone.config, shapes, text_encoder=None)
    with pytest.raises(ValueError, match="text_features"):
        bare(inputs)


# ---------------------------------------------------------------- layers

BRANCH_MODALITIES = {"tri": (0, 1, 2), "la": (0, 1), "lv": (0, 2), "av": (1, 2), "l": (0,), "a": (1,), "v": (2,)}
SUMMARIES = {"l": ("tri", "la", "lv", "l"), "a": ("tri", "la", "av", "a"), "v": ("tri", "lv", "av", "v")}


def naive_mca(mca: MultimodalCompositeAttention, x, valid, sizes):
    """Reference MCA: one explicit (B, H, S, S) mask, softmax and row mask per branch."""
    b, s, e = x.shape
    h, hd = mca.heads, e // mca.heads
    q, k, v = F.linear(x, mca.in_proj_weight, mca.in_proj_bias).chunk(3, dim=-1)

    def split(t):
        return t.reshape(b, s, h, hd).transpose(1, 2)

    logits = (split(q) * hd**-0.5) @ split(k).transpose(-1, -2)
    modality = torch.repeat_interleave(torch.arange(3), torch.tensor(sizes))
    branch_out = {}
    for name, members in BRANCH_MODALITIES.items():
        member = torch.isin(modality, torch.tensor(members))
        keys = (member[None, :] & valid)[:, None, None, :]
        weights = torch.softmax(logits.masked_fill(~keys, -1e9), dim=-1) * keys * member[None, None, :, None]
        branch_out[name] = mca.out_proj[name]((weights @ split(v)).transpose(1, 2).reshape(b, s, e))
    starts = [0, sizes[0], sizes[0] + sizes[1], s]
    pieces = [
        mca.summarize[m](torch.cat([branch_out[n][:, starts[i] : starts[i + 1]] for n in SUMMARIES[m]], dim=-1))
        for i, m in enumerate("lav")
    ]
    return mca.final_out_proj(torch.cat(pieces, dim=1)), logits


@pytest.mark.parametrize("heads", [1, 4])
def test_mca_matches_explicit_seven_mask_reference(heads):
    torch.manual_seed(0)
    sizes = (5, 7, 6)
    mca = MultimodalCompositeAttention(16, heads).double().eval()
    x = torch.randn(3, sum(sizes), 16, dtype=torch.float64) * 3
    valid = torch.rand(3, sum(sizes)) > 0.3
    valid[1, 5:12] = False  # sample 1: audio absent, so branch "a" has no key for its audio rows
    valid[2, :5] = False  # sample 2: text absent
    out, logits = mca(x, valid, sizes)
    expected, expected_logits = naive_mca(mca, x, valid, sizes)
    torch.testing.assert_close(logits, expected_logits)
    torch.testing.assert_close(out, expected)


def test_mca_tri_dropout_only_in_training():
    torch.manual_seed(0)
    mca = MultimodalCompositeAttention(16, 4, attn_dropout=0.5)
    x, valid = torch.randn(2, 9, 16), torch.ones(2, 9, dtype=torch.bool)
    with torch.no_grad():
        train_out, _ = mca(x, valid, (3, 3, 3))
        mca.eval()
        eval_out, _ = mca(x, valid, (3, 3, 3))
        expected, _ = naive_mca(mca, x, valid, (3, 3, 3))
    assert torch.isfinite(train_out).all() and not torch.allclose(train_out, eval_out)
    torch.testing.assert_close(eval_out, expected)


def test_transformer_positions_restart_per_modality():
    mct = MultimodalCompositeTransformer(8, heads=2, layers=1).eval()
    seen = []
    mct.layers[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    x = torch.zeros(1, 9, 8)
    mct(x, torch.ones(1, 9, dtype=torch.bool), (4, 2, 3))
    table = mct.positions(4)
    torch.testing.assert_close(seen[0][0], torch.cat([table[:4], table[:2], table[:3]]))


def test_sinusoidal_positions_sin_even_cos_odd_over_time():
    table = SinusoidalPositions(8)(6)
    assert table.shape == (6, 8)
    assert table[3, 0] == pytest.approx(math.sin(3))
    assert table[3, 1] == pytest.approx(math.cos(3))
    assert table[3, 2] == pytest.approx(math.sin(3 / 10000 ** (2 / 8)))
    assert table[3, 3] == pytest.approx(math.cos(3 / 10000 ** (2 / 8)))
    with pytest.raises(ValueError, match="position codes"):
        SinusoidalPositions(8)(1025)


def test_wsam_only_words_query_and_empty_audio_is_finite():
    torch.manual_seed(0)
    wsam = WordAlignedAttention(8)
    torch.nn.init.normal_(wsam.out_proj.bias)
    text_mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]], dtype=torch.float)
    words = word_positions(text_mask)
    assert words.tolist() == [[False, True, True, True, False, False], [False, True, False, False, False, False]]
    frames = torch.randn(2, 10, 8)
    frame_valid = torch.ones(2, 10, dtype=torch.bool)
    frame_valid[1] = False  # no valid frame at all
    out = wsam(torch.randn(2, 6, 8), frames, text_mask, frame_valid)
    assert torch.isfinite(out).all()
    bias_only = ~words
    bias_only[1] = True
    torch.testing.assert_close(out[bias_only], wsam.out_proj.bias.expand(int(bias_only.sum()), -1))
    assert not torch.allclose(out[0, 1], wsam.out_proj.bias)
