import pytest
import torch

from cider_mer.missing import (
    SMM_SUBSETS,
    EvalMissingness,
    MissingModeError,
    apply_missing,
    dropped_masks,
    sample_training_keep,
    smm_rates,
)
from cider_mer.models.interface import ModelInputs


def make_inputs(n=64, L=20, Ta=30, Tv=40, seed=0, aligned=False):
    g = torch.Generator().manual_seed(seed)
    if aligned:
        Ta = Tv = L
    tlen = torch.randint(3, L + 1, (n,), generator=g)
    pos = torch.arange(L)[None]
    tmask = (pos < tlen[:, None]).float()
    ids = torch.randint(1000, 5000, (n, L), generator=g)
    ids[:, 0] = 101
    ids[torch.arange(n), tlen - 1] = 102
    ids = ids * tmask.long()
    if aligned:
        amask = vmask = tmask.clone()
    else:
        amask = (torch.arange(Ta)[None] < torch.randint(1, Ta + 1, (n, 1), generator=g)).float()
        vmask = (torch.arange(Tv)[None] < torch.randint(1, Tv + 1, (n, 1), generator=g)).float()
    audio = torch.randn(n, Ta, 3, generator=g) * amask[..., None]
    vision = torch.randn(n, Tv, 4, generator=g) * vmask[..., None]
    return ModelInputs(ids, tmask, torch.zeros_like(ids), audio, amask, vision, vmask)


def masks_for(inp):
    return inp.text_mask, inp.audio_mask, inp.vision_mask


@pytest.mark.parametrize("mode", ["RMFM", "RMFM_same", "RMM"])
def test_rate_zero_is_exact_noop(mode):
    inp = make_inputs()
    em = EvalMissingness(mode, *masks_for(inp), seed=3, aligned=False)
    out = apply_missing(inp, em.masks(0.0))
    assert torch.equal(out.text_ids, inp.text_ids)
    assert torch.equal(out.audio, inp.audio) and torch.equal(out.vision, inp.vision)
    assert torch.equal(out.text_mask, inp.text_mask)


@pytest.mark.parametrize("mode", ["TMFM", "STMFM"])
def test_aligned_modes_rate_zero_noop(mode):
    inp = make_inputs(aligned=True)
    em = EvalMissingness(mode, *masks_for(inp), seed=3, aligned=True)
    out = apply_missing(inp, em.masks(0.0))
    assert torch.equal(out.text_ids, inp.text_ids) and torch.equal(out.audio, inp.audio)


@pytest.mark.parametrize("mode,aligned", [("RMFM", False), ("RMM", False), ("TMFM", True), ("STMFM", True)])
def test_rate_one_keeps_only_cls_sep_and_padding(mode, aligned):
    inp = make_inputs(aligned=aligned)
    em = EvalMissingness(mode, *masks_for(inp), seed=5, aligned=aligned)
    out = apply_missing(inp, em.masks(1.0))
    valid = inp.text_mask.bool()
    special = (inp.text_ids == 101) | (inp.text_ids == 102)
    # every valid non-special token became [UNK]; [CLS]/[SEP] and padding untouched
    assert torch.all(out.text_ids[valid & ~special] == 100)
    assert torch.equal(out.text_ids[special], inp.text_ids[special])
    assert torch.all(out.text_ids[~valid] == 0)
    assert torch.equal(out.text_mask, inp.text_mask)
    if mode in ("RMFM", "RMM"):
        assert torch.count_nonzero(out.audio) == 0 and torch.count_nonzero(out.vision) == 0
    else:  # aligned modes share the text mask, which always keeps [CLS]/[SEP] steps
        assert torch.count_nonzero(out.audio * (~special)[..., None]) == 0


def test_empirical_drop_rate_rmfm():
    inp = make_inputs(n=400)
    em = EvalMissingness("RMFM", *masks_for(inp), seed=0, aligned=False)
    keep = em.masks(0.3)
    drop = dropped_masks(inp, keep)
    # exclude [CLS]/[SEP] from the text denominator: they are always kept
    n_text = inp.text_mask.sum() - 2 * inp.text_mask.shape[0]
    total = n_text + inp.audio_mask.sum() + inp.vision_mask.sum()
    rate = (drop.text.sum() + drop.audio.sum() + drop.vision.sum()) / total
    assert abs(float(rate) - 0.3) < 0.01


def test_empirical_drop_rate_rmm_per_modality():
    inp = make_inputs(n=4000)
    keep = EvalMissingness("RMM", *masks_for(inp), seed=1, aligned=False).masks(0.4)
    audio_dropped = (keep.audio.sum(1) == 0).float().mean()
    assert abs(float(audio_dropped) - 0.4) < 0.03


@pytest.mark.parametrize("mode,aligned", [("RMFM", False), ("RMM", False), ("TMFM", True)])
def test_masks_nested_across_rates(mode, aligned):
    inp = make_inputs(aligned=aligned)
    em = EvalMissingness(mode, *masks_for(inp), seed=7, aligned=aligned)
    prev = None
    for r in [0.0, 0.1, 0.3, 0.5, 0.7, 1.0]:
        k = em.masks(r)
        if prev is not None:  # kept at the higher rate => kept at the lower rate
            for a, b in ((k.text, prev.text), (k.audio, prev.audio), (k.vision, prev.vision)):
                assert not torch.any(a & ~b)
        prev = k


def test_same_seed_same_masks_different_seed_different():
    inp = make_inputs()
    a = EvalMissingness("RMFM", *masks_for(inp), seed=11, aligned=False).masks(0.5)
    b = EvalMissingness("RMFM", *masks_for(inp), seed=11, aligned=False).masks(0.5)
    c = EvalMissingness("RMFM", *masks_for(inp), seed=12, aligned=False).masks(0.5)
    assert torch.equal(a.text, b.text) and torch.equal(a.audio, b.audio)
    assert not torch.equal(a.audio, c.audio)


@pytest.mark.parametrize("mode", ["TMFM", "STMFM"])
def test_aligned_only_modes_refuse_unaligned(mode):
    inp = make_inputs()
    with pytest.raises(MissingModeError, match="aligned"):
        EvalMissingness(mode, *masks_for(inp), seed=0, aligned=False)


def test_stmfm_block_is_contiguous_with_expected_length():
    inp = make_inputs(aligned=True)
    em = EvalMissingness("STMFM", *masks_for(inp), seed=2, aligned=True)
    keep = em.masks(0.5)
    length = inp.text_mask.sum(1).long()
    for i in range(inp.batch_size):
        dropped = (~keep.text[i][: length[i]]).nonzero().flatten()
        expected = int(torch.round(torch.tensor((int(length[i]) - 2) * 0.5, dtype=torch.float64)))
        assert len(dropped) == expected
        if len(dropped):
            assert dropped.max() - dropped.min() + 1 == len(dropped)
            assert dropped.min() >= 1 and dropped.max() <= length[i] - 2
        assert torch.equal(keep.audio[i], keep.text[i]) and torch.equal(keep.vision[i], keep.text[i])


@pytest.mark.parametrize("subset", SMM_SUBSETS)
def test_smm_subsets_exact(subset):
    inp = make_inputs()
    em = EvalMissingness("SMM", *masks_for(inp), seed=0, aligned=False)
    k = em.masks(subset)
    special = (inp.text_ids == 101) | (inp.text_ids == 102)
    valid = inp.text_mask.bool()
    if "L" in subset:
        assert torch.equal(k.text, valid)
    else:
        assert torch.equal(k.text, special & valid)
    assert torch.equal(k.audio, inp.audio_mask.bool() if "A" in subset else torch.zeros_like(k.audio))
    assert torch.equal(k.vision, inp.vision_mask.bool() if "V" in subset else torch.zeros_like(k.vision))
    assert smm_rates(subset) == tuple(0.0 if m in subset else 1.0 for m in "LAV")


def test_rmfm_same_equal_rates_equals_rmfm():
    inp = make_inputs()
    a = EvalMissingness("RMFM", *masks_for(inp), seed=4, aligned=False).masks(0.4)
    b = EvalMissingness("RMFM_same", *masks_for(inp), seed=4, aligned=False).masks((0.4, 0.4, 0.4))
    assert torch.equal(a.text, b.text) and torch.equal(a.vision, b.vision)
    c = EvalMissingness("RMFM_same", *masks_for(inp), seed=4, aligned=False).masks((0.0, 1.0, 0.0))
    assert torch.equal(c.text, inp.text_mask.bool()) and not c.audio.any()


def test_training_sampler_per_sample_rates_vary_and_per_position_is_half():
    inp = make_inputs(n=2000, L=40, Ta=60, Tv=60)
    g = torch.Generator().manual_seed(0)
    k = sample_training_keep(*masks_for(inp), generator=g, scheme="per_sample")
    frac = k.audio.sum(1) / inp.audio_mask.sum(1)
    long = inp.audio_mask.sum(1) >= 40
    assert frac[long].std() > 0.2  # per-sample rates spread over [0, 1)
    assert abs(float(frac[long].mean()) - 0.5) < 0.05
    k2 = sample_training_keep(*masks_for(inp), generator=torch.Generator().manual_seed(0), scheme="per_position")
    frac2 = k2.audio.sum(1) / inp.audio_mask.sum(1)
    assert frac2[long].std() < 0.12 and abs(float(frac2[long].mean()) - 0.5) < 0.03
    # always keeps [CLS]/[SEP]
    special = (inp.text_ids == 101) | (inp.text_ids == 102)
    assert torch.all(k.text[special])
    with pytest.raises(MissingModeError):
        sample_training_keep(*masks_for(inp), generator=g, scheme="bogus")


def test_bad_rate_and_mode_are_refused():
    inp = make_inputs()
    with pytest.raises(MissingModeError, match="unknown missing mode"):
        EvalMissingness("XYZ", *masks_for(inp), seed=0, aligned=False)
    with pytest.raises(MissingModeError, match=r"\[0, 1\]"):
        EvalMissingness("RMFM", *masks_for(inp), seed=0, aligned=False).masks(1.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_masks_match_cpu():
    inp = make_inputs()
    em_cpu = EvalMissingness("RMFM", *masks_for(inp), seed=9, aligned=False)
    em_gpu = EvalMissingness("RMFM", *(m.cuda() for m in masks_for(inp)), seed=9, aligned=False)
    assert torch.equal(em_cpu.masks(0.3).text, em_gpu.masks(0.3).text)
    out = apply_missing(inp.to("cuda"), em_cpu.masks(0.3).to("cuda"))
    assert out.text_ids.is_cuda
    g = torch.Generator(device="cuda").manual_seed(0)
    k = sample_training_keep(*(m.cuda() for m in masks_for(inp)), generator=g)
    assert k.text.is_cuda
