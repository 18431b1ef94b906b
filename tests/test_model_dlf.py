"""DLF backbone: exact parameter counts (notes mult_dlf.md §0, §3.7), shapes, missing data, gradients,
objective terms and MACI."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.nn import functional as F

import cider_mer.models.dlf  # noqa: F401  (registers "dlf")
from cider_mer.missing import KeepMasks
from cider_mer.models.dlf import DLF, UNTRAINED_MODULES, DlfConfig, label_margin_hinge
from cider_mer.models.interface import DataShapes, ModelInputs, ObjectiveBatch
from cider_mer.models.registry import build_model
from cider_mer.text.encoder import TextEncoder


def mosi_shapes(num_classes: int, aligned: bool = False) -> DataShapes:
    return DataShapes(768, 5, 20, 50, 50 if aligned else 375, 50 if aligned else 500, aligned, num_classes)


def untrained_count(backbone: DLF) -> int:
    return sum(p.numel() for name in UNTRAINED_MODULES for p in getattr(backbone, name).parameters())


# ---------------------------------------------------------------- parameter counts


@pytest.mark.parametrize(
    "aligned, num_classes, expected, dead",
    [
        (False, 1, 10_750_808, 7_184_703),
        (False, 3, 10_843_324, None),
        (False, 7, 11_028_356, None),
        (True, 1, 2_923_308, 1_294_703),
        (True, 3, 2_938_324, None),
        (True, 7, 2_968_356, None),
    ],
)
def test_mosi_counts_match_the_notes(aligned, num_classes, expected, dead):
    model = build_model("dlf", mosi_shapes(num_classes, aligned), None, text_encoder=None, maci=False)
    counts = model.parameter_counts()
    assert counts["params_excluding_text_encoder"] == expected
    assert counts["params_maci"] == 0
    # closed form (notes §3.7): 10,704,550 + 46,258 C unaligned, 2,915,800 + 7,508 C aligned
    assert expected == (2_915_800 + 7_508 * num_classes if aligned else 10_704_550 + 46_258 * num_classes)
    assert model.backbone.joint_dim == 300
    assert model.head.out.in_features == 300 and model.head.out.out_features == num_classes
    if dead is not None:
        assert untrained_count(model.backbone) == dead


def test_config_validation():
    with pytest.raises(ValueError, match="divide"):
        DlfConfig(dim=50, heads=7)
    with pytest.raises(ValueError, match="text_dropout"):
        DlfConfig(text_dropout=1.0)
    with pytest.raises(ValueError, match="triplet_weight"):
        DlfConfig(triplet_weight=-0.1)


def test_modality_shorter_than_its_kernel_is_zero_padded_to_it():
    """A text-only file stores absent audio/vision as one zero frame: DLF pads it to the kernel (5)."""
    torch.manual_seed(0)
    short = build_model("dlf", DataShapes(D_T, D_A, D_V, L, 1, 1, False, 3), None, maci=False).eval()
    torch.manual_seed(0)
    five = build_model("dlf", DataShapes(D_T, D_A, D_V, L, 5, 5, False, 3), None, maci=False).eval()
    assert short.backbone.steps == {"l": L - 4, "a": 1, "v": 1}
    assert sum(p.numel() for p in short.parameters()) == sum(p.numel() for p in five.parameters())
    inputs = make_inputs()
    absent = inputs.replace(audio=torch.zeros(3, 1, D_A), audio_mask=torch.zeros(3, 1),
                            vision=torch.zeros(3, 1, D_V), vision_mask=torch.zeros(3, 1))
    as_five = inputs.replace(audio=torch.zeros(3, 5, D_A), audio_mask=torch.zeros(3, 5),
                             vision=torch.zeros(3, 5, D_V), vision_mask=torch.zeros(3, 5))
    out = short(absent)
    assert torch.isfinite(out.log_probs).all()
    assert torch.allclose(out.log_probs, five(as_five).log_probs)


# ---------------------------------------------------------------- small model

B, L, T_A, T_V, D_T, D_A, D_V = 3, 8, 12, 10, 16, 5, 7
VOCAB = 200


def small_shapes(num_classes: int = 3, aligned: bool = False) -> DataShapes:
    return DataShapes(D_T, D_A, D_V, L, L if aligned else T_A, L if aligned else T_V, aligned, num_classes)


def small_model(num_classes=3, aligned=False, maci=False, text_encoder=None, seed=0, **config):
    torch.manual_seed(seed)
    return build_model("dlf", small_shapes(num_classes, aligned), config or None, text_encoder=text_encoder,
                       maci=maci)


def _mask(lengths, steps):
    return (torch.arange(steps)[None, :] < torch.tensor(lengths)[:, None]).float()


def make_inputs(aligned=False, seed=0, text_lens=(8, 6, 3), audio_lens=(12, 7, 2), vision_lens=(10, 4, 10),
                features=True):
    g = torch.Generator().manual_seed(seed)
    n = len(text_lens)
    ids = torch.zeros(n, L, dtype=torch.long)
    for b, length in enumerate(text_lens):
        ids[b, 0] = 101
        ids[b, 1:length - 1] = torch.randint(104, VOCAB, (length - 2,), generator=g)
        ids[b, length - 1] = 102
    text_mask = _mask(text_lens, L)
    if aligned:
        audio_mask, vision_mask = text_mask.clone(), text_mask.clone()
    else:
        audio_mask, vision_mask = _mask(audio_lens[:n], T_A), _mask(vision_lens[:n], T_V)
    audio = torch.randn(n, audio_mask.shape[1], D_A, generator=g) * audio_mask[..., None]
    vision = torch.randn(n, vision_mask.shape[1], D_V, generator=g) * vision_mask[..., None]
    text_features = torch.randn(n, L, D_T, generator=g) * text_mask[..., None] if features else None
    return ModelInputs(text_ids=ids, text_mask=text_mask, text_segment=torch.zeros_like(ids), audio=audio,
                       audio_mask=audio_mask, vision=vision, vision_mask=vision_mask, text_features=text_features)


def tiny_encoder(seed=0) -> TextEncoder:
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    bert = BertModel(BertConfig(vocab_size=VOCAB, hidden_size=D_T, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32))
    return TextEncoder(bert, name="tiny")


def task_loss(raw: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if raw.shape[1] == 1:
        return F.l1_loss(raw.squeeze(1), labels.float())
    return F.cross_entropy(raw, labels)


def objective_batch(out, inputs, labels) -> ObjectiveBatch:
    keep = KeepMasks(inputs.text_mask.bool(), inputs.audio_mask.bool(), inputs.vision_mask.bool())
    return ObjectiveBatch(incomplete=out, complete=None, inputs=inputs, incomplete_inputs=inputs, keep=keep,
                          labels=labels, task_loss=task_loss)


TERMS = {"aux_homo", "aux_hetero_l", "aux_hetero_a", "aux_hetero_v", "aux_recon", "aux_specific", "aux_ortho",
         "aux_triplet"}


@pytest.mark.parametrize("aligned", [False, True])
def test_forward_shapes(aligned):
    model = small_model(num_classes=3, aligned=aligned)
    inputs = make_inputs(aligned)
    out = model(inputs)
    steps = {"l": L - 4, "a": (L if aligned else T_A) - 4, "v": (L if aligned else T_V) - 4}  # k = 5
    assert out.log_probs.shape == (B, 3)
    assert out.joint.shape == (B, 300)
    assert out.text_states.shape == (B, L, D_T)
    x = out.backbone.extras
    for m, t in steps.items():
        for key in ("origin", "s", "c", "recon"):
            assert x[f"{key}_{m}"].shape == (B, t, 50)
        assert x[f"s_{m}_r"].shape == (B, t, 50)
        assert x[f"c_{m}_sim"].shape == (B, 50)
        assert x[f"logits_{m}_hetero"].shape == (B, 3)
    assert x["logits_c"].shape == (B, 3)
    bb = model.backbone
    assert bb.align_c_a.in_features == 50 * steps["a"] and bb.align_c_v.in_features == 50 * steps["v"]
    assert bb.trans_a_mem.layers.__len__() == 3 and bb.trans_l_mem.layers.__len__() == 2
    assert out.backbone.attention_logits is None and out.backbone.reconstructions is None


def test_regression_output_and_reencoded_text():
    encoder = tiny_encoder()
    model = small_model(num_classes=1, text_encoder=encoder)
    model.eval()
    inputs = make_inputs(features=False)
    out = model(inputs)
    assert out.log_probs.shape == (B, 1)
    assert out.text_states.shape == (B, L, D_T)
    # the same states passed as features give the same output
    with torch.no_grad():
        states = encoder(inputs.text_ids, inputs.text_mask, inputs.text_segment)
        again = model(inputs.replace(text_features=states))
    torch.testing.assert_close(again.log_probs, out.log_probs.detach())


def test_trimmed_text_gives_the_untrimmed_output():
    model = small_model().eval()
    inputs = make_inputs(text_lens=(6, 5, 3))
    trimmed = inputs.trim_text()
    assert trimmed.text_ids.shape[1] == 6
    with torch.no_grad():
        torch.testing.assert_close(model(trimmed).log_probs, model(inputs).log_probs)
    longer = inputs.replace(audio=torch.zeros(B, T_A + 1, D_A), audio_mask=torch.ones(B, T_A + 1))
    with pytest.raises(ValueError, match="audio length"):
        model(longer)


def test_fully_missing_modality_and_batch_of_one_stay_finite():
    model = small_model(num_classes=3)
    model.train()
    inputs = make_inputs()
    # sample 1: no audio frame at all; the whole batch: vision missing (zeros, mask kept as padding)
    audio_mask = inputs.audio_mask.clone()
    audio_mask[1] = 0
    inputs = inputs.replace(audio=inputs.audio * audio_mask[..., None], audio_mask=audio_mask,
                            vision=torch.zeros_like(inputs.vision))
    labels = torch.tensor([0, 2, 1])
    for batch_inputs, y in ((inputs, labels), (inputs.replace(**{k: getattr(inputs, k)[:1] for k in (
            "text_ids", "text_mask", "text_segment", "audio", "audio_mask", "vision", "vision_mask",
            "text_features")}), labels[:1])):
        out = model(batch_inputs)
        assert torch.isfinite(out.log_probs).all()
        terms = model.backbone.objective_terms(objective_batch(out.backbone, batch_inputs, y))
        assert all(torch.isfinite(t) for t in terms.values())
        loss = F.nll_loss(out.log_probs, y) + sum(terms.values())
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert all(torch.isfinite(g).all() for g in grads)
        model.zero_grad()
    # every audio frame missing for every sample
    empty = inputs.replace(audio=torch.zeros_like(inputs.audio), audio_mask=torch.zeros_like(inputs.audio_mask))
    out = model(empty)
    assert torch.isfinite(out.log_probs).all()


@pytest.mark.parametrize("num_classes", [1, 3])
def test_gradients_reach_exactly_the_trained_parameters(num_classes):
    model = small_model(num_classes=num_classes, text_encoder=tiny_encoder())
    model.train()
    inputs = make_inputs(features=False)
    labels = torch.tensor([-2.5, 0.0, 2.5]) if num_classes == 1 else torch.tensor([0, 2, 1])
    out = model(inputs)
    terms = model.backbone.objective_terms(objective_batch(out.backbone, inputs, labels))
    task = task_loss(out.log_probs, labels) if num_classes == 1 else F.nll_loss(out.log_probs, labels)
    (task + sum(terms.values())).backward()
    without_grad = {name for name, p in model.named_parameters()
                    if p.grad is None and not name.startswith("backbone.text_encoder.")}
    expected = {f"backbone.{module}.{name}" for module in UNTRAINED_MODULES
                for name, _ in getattr(model.backbone, module).named_parameters()}
    assert without_grad == expected
    # align_c_* are trained only through the triplet loss: it must reach them
    assert model.backbone.align_c_l.weight.grad.abs().sum() > 0
    # the text encoder is trained through the model (BERT's unused pooler aside)
    assert model.backbone.text_encoder.model.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def test_objective_terms_keys_values_and_weights():
    model = small_model(num_classes=3).eval()
    inputs = make_inputs()
    labels = torch.tensor([0, 2, 1])
    with torch.no_grad():
        out = model(inputs).backbone
        terms = model.backbone.objective_terms(objective_batch(out, inputs, labels))
        assert set(terms) == TERMS
        for name, value in terms.items():
            assert value.dim() == 0 and torch.isfinite(value) and value >= 0, name
        x = out.extras
        torch.testing.assert_close(terms["aux_hetero_l"], 3.0 * F.cross_entropy(x["logits_l_hetero"], labels))
        torch.testing.assert_close(terms["aux_homo"], F.cross_entropy(x["logits_c"], labels))
        recon = sum(((x[f"recon_{m}"] - x[f"origin_{m}"]) ** 2).mean() for m in "lav")
        torch.testing.assert_close(terms["aux_recon"], 0.1 * recon)
        assert terms["aux_ortho"] > 0 and terms["aux_recon"] > 0 and terms["aux_specific"] > 0
        config = model.backbone.config
        doubled = {f.name: 2 * getattr(config, f.name) for f in dataclasses.fields(config) if f.name.endswith("weight")}
        model.backbone.config = dataclasses.replace(config, **doubled)
        twice = model.backbone.objective_terms(objective_batch(out, inputs, labels))
    for name in TERMS:
        torch.testing.assert_close(twice[name], 2 * terms[name])
    assert not model.backbone.needs_complete_pass
    assert config.hetero_text_weight == 3.0 and config.recon_weight == config.specific_weight == 0.1
    assert config.ortho_weight == config.triplet_weight == 0.01


def test_label_margin_hinge_against_a_direct_loop():
    torch.manual_seed(1)
    feats = torch.randn(9, 4)
    labels = torch.tensor([0.0, 0.0, 0.0, 1.2, 1.2, 1.2, -0.6, -0.6, -0.6])
    cos = F.cosine_similarity(feats[:, None], feats[None], dim=-1)
    losses = []
    for i in range(9):
        pos = [p for p in range(9) if p != i and labels[p] == labels[i]]
        neg = [n for n in range(9) if labels[n] != labels[i]]
        pairs = [max(0.0, float(0.15 * abs(labels[i] - labels[n]) - cos[i, p] + cos[i, n])) for p in pos for n in neg]
        losses.append(sum(pairs) / len(pairs))
    expected = sum(losses) / len(losses)
    assert abs(float(label_margin_hinge(feats, labels)) - expected) < 1e-5
    assert abs(float(label_margin_hinge(feats, labels, chunk_elements=1)) - expected) < 1e-5
    # one label only: no negatives, loss 0
    assert float(label_margin_hinge(feats, torch.zeros(9))) == 0.0


def test_maci_head_on_the_joint():
    model = small_model(num_classes=3, maci=True)
    model.head.set_statistics(torch.tensor([0.3, 0.2, 0.5]), torch.randn(3, D_T + D_A + D_V))
    for mode in (model.train, model.eval):
        mode()
        out = model(make_inputs())
        assert out.log_probs.shape == (B, 3)
        torch.testing.assert_close(out.log_probs.exp().sum(dim=1), torch.ones(B))
    assert model.parameter_counts()["params_maci"] > 0
    plain = small_model(num_classes=3, maci=False)
    assert isinstance(plain.backbone, DLF) and plain.head.out.in_features == model.backbone.joint_dim
