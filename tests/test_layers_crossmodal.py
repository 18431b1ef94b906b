"""The shared fairseq-style encoder of MulT / DLF / MPLMM (notes mult_dlf.md §1)."""

from __future__ import annotations

import math

import pytest
import torch

from cider_mer.models.layers.crossmodal import (
    CrossmodalEncoder,
    CrossmodalLayer,
    causal_mask,
    sinusoidal_codes,
)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _formula(d: int, n: int) -> int:
    """E(d, N) = N (12 d^2 + 13 d) + 2 d (notes §1)."""
    return n * (12 * d * d + 13 * d) + 2 * d


@pytest.mark.parametrize("d,n,h,expected", [
    (50, 2, 10, 61_400), (50, 3, 10, 92_050), (50, 4, 10, 122_700),
    (100, 4, 10, 485_400), (30, 5, 5, 56_010), (60, 5, 5, 220_020),
])
def test_encoder_parameter_count_matches_the_notes(d, n, h, expected):
    encoder = CrossmodalEncoder(d, h, n)
    assert _count(encoder) == expected == _formula(d, n)
    # heads do not change the count
    assert _count(CrossmodalEncoder(d, 1, n)) == expected


def test_layer_parameter_layout():
    d = 20
    layer = CrossmodalLayer(d, 4, 0.0, 0.0, 0.0)
    assert _count(layer) == 12 * d * d + 13 * d
    shapes = {name: tuple(p.shape) for name, p in layer.named_parameters()}
    assert shapes["self_attn.in_proj_weight"] == (3 * d, d)
    assert shapes["self_attn.in_proj_bias"] == (3 * d,)
    assert shapes["self_attn.out_proj.weight"] == (d, d)
    assert shapes["fc1.weight"] == (4 * d, d)
    assert shapes["fc2.weight"] == (d, 4 * d)
    assert len(layer.layer_norms) == 2
    # xavier weights, zero biases
    assert torch.all(layer.self_attn.in_proj_bias == 0) and torch.all(layer.fc1.bias == 0)
    bound = math.sqrt(6.0 / (d + 4 * d))
    assert layer.fc1.weight.abs().max() <= bound


def test_self_and_cross_attention_shapes():
    torch.manual_seed(0)
    encoder = CrossmodalEncoder(16, 4, 2, causal=True).eval()
    query, source = torch.randn(3, 7, 16), torch.randn(3, 11, 16)
    assert encoder(query).shape == (3, 7, 16)
    assert encoder(query, source).shape == (3, 7, 16)
    assert encoder(source, query).shape == (3, 11, 16)
    # cross-attention really reads the source
    assert not torch.allclose(encoder(query, source), encoder(query, source + 1.0))


def test_padded_keys_are_ignored():
    torch.manual_seed(0)
    encoder = CrossmodalEncoder(16, 4, 2, positions=True).eval()
    query, source = torch.randn(2, 6, 16), torch.randn(2, 9, 16)
    padding = torch.zeros(2, 9, dtype=torch.bool)
    padding[0, 5:] = True
    padding[1, 2:] = True
    out = encoder(query, source, padding)
    changed = source.clone()
    changed[padding] = torch.randn(int(padding.sum()), 16) * 5
    assert torch.allclose(out, encoder(query, changed, padding), atol=1e-6)
    # without the mask the same change does alter the output
    assert not torch.allclose(encoder(query, source), encoder(query, changed), atol=1e-4)
    # self-attention: padded steps of the sequence do not change the real steps' outputs
    seq_padding = torch.zeros(2, 6, dtype=torch.bool)
    seq_padding[:, 4:] = True
    changed_query = query.clone()
    changed_query[seq_padding] = torch.randn(int(seq_padding.sum()), 16)
    a = encoder(query, source_padding=seq_padding)[:, :4]
    b = encoder(changed_query, source_padding=seq_padding)[:, :4]
    assert torch.allclose(a, b, atol=1e-6)


def test_fully_padded_source_is_finite_with_finite_gradients():
    torch.manual_seed(0)
    encoder = CrossmodalEncoder(16, 4, 2, causal=True)
    query = torch.randn(2, 5, 16, requires_grad=True)
    source = torch.randn(2, 8, 16, requires_grad=True)
    padding = torch.zeros(2, 8, dtype=torch.bool)
    padding[1] = True  # sample 1 has no valid key
    out = encoder(query, source, padding)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(query.grad).all() and torch.isfinite(source.grad).all()
    assert torch.all(source.grad[1] == 0)
    for p in encoder.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()
    # the zero attention output of a fully padded row: same as attending to nothing, whatever the source
    other = encoder.eval()(query, source * 3, padding)
    assert torch.allclose(other[1], encoder(query, source, padding)[1], atol=1e-6)


def test_causal_mask_rule():
    # j hidden from i when j >= i + 1 + |T_k - T_q|
    mask = causal_mask(3, 3)
    assert mask.tolist() == [[False, True, True], [False, False, True], [False, False, False]]
    mask = causal_mask(46, 371)
    assert mask[0].nonzero().flatten().tolist() == list(range(326, 371))
    assert not mask[45].any()
    assert not causal_mask(371, 46).any()


def test_causal_option_blocks_future_steps():
    torch.manual_seed(0)
    causal = CrossmodalEncoder(16, 4, 2, causal=True).eval()
    plain = CrossmodalEncoder(16, 4, 2, causal=False).eval()
    plain.load_state_dict(causal.state_dict())
    x = torch.randn(2, 6, 16)
    y = x.clone()
    y[:, 4:] = torch.randn(2, 2, 16)  # change the future
    assert torch.allclose(causal(x)[:, :4], causal(y)[:, :4], atol=1e-6)
    assert not torch.allclose(plain(x)[:, :4], plain(y)[:, :4], atol=1e-4)


def test_sinusoidal_codes():
    first = torch.tensor([[1.0, 2.0, 0.0, 3.0]])
    codes = sinusoidal_codes(first, 8)  # half = 4, w_i = exp(-i ln(1e4) / 3)
    assert codes.shape == (1, 4, 8)
    assert torch.all(codes[0, 2] == 0)  # first channel exactly 0 -> padding
    w = torch.exp(-torch.arange(4.0) * math.log(10000.0) / 3)
    assert torch.allclose(codes[0, 3, :4], torch.sin(4 * w))  # position 4 (positions start at 1)
    assert torch.allclose(codes[0, 0, 4:], torch.cos(1 * w))
    odd = sinusoidal_codes(first, 7)
    assert odd.shape == (1, 4, 7) and torch.all(odd[..., 6] == 0)


def test_embedding_scale_and_positions_switch():
    encoder = CrossmodalEncoder(8, 2, 1, positions=False)
    x = torch.randn(1, 3, 8)
    assert torch.allclose(encoder._embed(x), math.sqrt(8) * x)
    with_pos = CrossmodalEncoder(8, 2, 1, positions=True)
    assert torch.allclose(with_pos._embed(x), math.sqrt(8) * x + sinusoidal_codes(x[:, :, 0], 8))
