"""Timestep embedding, QK-RMSNorm, 3-D RoPE and norms against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from backend.models.dit_layers import (
    LayerNorm32,
    QKRMSNorm,
    apply_rope,
    layer_norm_fp32,
    rope_frequencies,
    rope_phases,
    timestep_features,
)
from backend.models.ss_decoder import ChannelLayerNorm3d, pixel_shuffle_3d


def test_timestep_features_are_cos_then_sin():
    t = torch.tensor([0.0, 500.0])
    emb = timestep_features(t, 256)
    assert emb.shape == (2, 256) and emb.dtype == torch.float32
    # k = 0: frequency 1; k = 64: exp(-ln(1e4) * 64/128) = 1e-2.
    assert torch.allclose(emb[1, 0], torch.tensor(math.cos(500.0)), atol=1e-6)
    assert torch.allclose(emb[1, 128], torch.tensor(math.sin(500.0)), atol=1e-6)
    assert torch.allclose(emb[1, 64], torch.tensor(math.cos(5.0)), atol=1e-5)
    assert torch.allclose(emb[1, 128 + 64], torch.tensor(math.sin(5.0)), atol=1e-5)
    assert torch.equal(emb[0, :128], torch.ones(128)) and torch.equal(emb[0, 128:], torch.zeros(128))


def test_qk_rms_norm_is_l2_normalise_times_gamma_times_sqrt_dim():
    norm = QKRMSNorm(head_dim=4, num_heads=2)
    with torch.no_grad():
        norm.gamma.copy_(torch.tensor([[1.0, 2.0, 1.0, 1.0], [0.5, 0.5, 0.5, 0.5]]))
    x = torch.tensor([[[3.0, 4.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]])  # [1, H=2, D=4]
    y = norm(x)
    # head 0: x / 5 * gamma * 2 ; head 1: x / 2 * 0.5 * 2
    expected = torch.tensor([[[1.2, 3.2, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]]])
    assert torch.allclose(y, expected, atol=1e-6)
    # Computed in fp32, returned in the input dtype.
    assert norm(x.to(torch.bfloat16)).dtype == torch.bfloat16


def test_rope_frequencies_and_phase_layout_at_head_dim_128():
    freqs = rope_frequencies(128)
    assert freqs.shape == (21,)
    assert torch.allclose(freqs, 1.0 / 10000 ** (torch.arange(21) / 21))
    coords = torch.tensor([[2, 3, 5]])
    ph = rope_phases(coords, 128)
    assert ph.shape == (1, 64) and ph.dtype == torch.complex64
    angle = torch.angle(ph[0])
    expected = torch.cat([2 * freqs, 3 * freqs, 5 * freqs, torch.zeros(1)])
    # compare on the unit circle (angles wrap)
    assert torch.allclose(torch.polar(torch.ones(64), expected), ph[0], atol=1e-6)
    assert angle[63] == 0 and torch.allclose(ph[0].abs(), torch.ones(64))


def test_apply_rope_rotates_adjacent_pairs_and_leaves_last_pair():
    head_dim = 128
    x = torch.randn(1, 1, 1, head_dim)
    coords = torch.tensor([[1, 0, 0]])
    out = apply_rope(x, rope_phases(coords, head_dim)[None])
    freqs = rope_frequencies(head_dim)
    for i in (0, 1, 20):  # x-axis pairs (2i, 2i+1), angle = 1 * freq_i
        a, b = x[0, 0, 0, 2 * i], x[0, 0, 0, 2 * i + 1]
        c, s = math.cos(freqs[i]), math.sin(freqs[i])
        assert torch.allclose(out[0, 0, 0, 2 * i], a * c - b * s, atol=1e-6)
        assert torch.allclose(out[0, 0, 0, 2 * i + 1], a * s + b * c, atol=1e-6)
    # y/z pairs (angle 0) and the last pair are untouched.
    assert torch.allclose(out[..., 42:], x[..., 42:], atol=1e-7)
    # Norm-preserving and dtype-preserving.
    assert torch.allclose(out.norm(), x.norm(), atol=1e-5)
    assert apply_rope(x.bfloat16(), rope_phases(coords, head_dim)[None]).dtype == torch.bfloat16


def test_rope_relative_property():
    """q.k after RoPE depends only on the coordinate difference."""
    q, k = torch.randn(1, 1, 1, 32), torch.randn(1, 1, 1, 32)

    def score(cq, ck):
        pq = rope_phases(torch.tensor([cq]), 32)[None]
        pk = rope_phases(torch.tensor([ck]), 32)[None]
        return (apply_rope(q, pq) * apply_rope(k, pk)).sum()

    assert torch.allclose(score([1, 2, 3], [4, 4, 4]), score([11, 7, 30], [14, 9, 31]), atol=1e-5)


def test_layer_norm_fp32_reduced_precision_matches_upcast_path():
    x = (torch.randn(64, 96) * 3 + 1).bfloat16()
    direct = layer_norm_fp32(x, 1e-6)
    upcast = torch.nn.functional.layer_norm(x.float(), (96,), eps=1e-6).bfloat16()
    assert direct.dtype == torch.bfloat16
    # At most one bf16 rounding step apart.
    assert ((direct.float() - upcast.float()).abs() <= upcast.float().abs() * 2**-7 + 1e-6).all()
    w, b = torch.randn(96), torch.randn(96)
    affine = layer_norm_fp32(x, 1e-6, w, b)
    assert torch.equal(affine, torch.nn.functional.layer_norm(x.float(), (96,), w, b, 1e-6).bfloat16())


def test_pixel_shuffle_3d_x_is_the_most_significant_bit():
    x = torch.arange(8.0).reshape(1, 8, 1, 1, 1)  # channel index = sx*4 + sy*2 + sz
    y = pixel_shuffle_3d(x, 2)
    assert y.shape == (1, 1, 2, 2, 2)
    for sx in range(2):
        for sy in range(2):
            for sz in range(2):
                assert y[0, 0, sx, sy, sz] == sx * 4 + sy * 2 + sz


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_layer_norm_modules_compute_like_the_upcast_reference(dtype):
    torch.manual_seed(0)
    norm = LayerNorm32(24, eps=1e-6)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = (torch.randn(50, 24) * 4 + 2).to(dtype)
    cdt = torch.float64 if dtype == torch.float64 else torch.float32
    ref = torch.nn.functional.layer_norm(x.to(cdt), (24,), norm.weight.to(cdt), norm.bias.to(cdt), 1e-6)
    assert torch.equal(norm(x), ref.to(dtype))
    channel = ChannelLayerNorm3d(24)
    channel.load_state_dict(norm.state_dict())
    vol = (torch.randn(2, 24, 3, 4, 5) * 3).to(dtype)
    out = channel(vol)
    assert out.dtype == dtype
    expect = torch.nn.functional.layer_norm(vol.movedim(1, -1).to(cdt), (24,), norm.weight.to(cdt),
                                            norm.bias.to(cdt), 1e-5).to(dtype).movedim(-1, 1)
    assert torch.equal(out, expect)
