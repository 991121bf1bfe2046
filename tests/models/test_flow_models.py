"""The flow DiTs against an independent, plain functional transcription of the official code.

The reference below reads the state dict directly and spells out every step in fp32
(timestep [cos, sin], shared + per-block modulation, LN eps 1e-6 / final 1e-5, QK-RMSNorm,
interleaved RoPE with 21-style frequencies, cross-attention without modulation or gate).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from backend.models import AttentionBackend, SLatFlowModel, SparseStructureFlowModel
from backend.sparse import SparseTensor

TINY = dict(model_channels=64, cond_channels=24, num_blocks=2, num_heads=2, mlp_ratio=5.3334,
            pe_mode="rope", share_mod=True, qk_rms_norm=True, qk_rms_norm_cross=True, dtype="float32")


def _randomise(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if name.endswith("gamma") else 0.0))


def _ref_ape(coords, channels, dtype):
    """The official absolute position embedding, spelled out: per axis [sin(c f_j)..., cos(c f_j)...]."""
    nf = channels // 3 // 2
    out = torch.zeros(len(coords), channels, dtype=dtype)
    for i, xyz in enumerate(coords.tolist()):
        for axis, c in enumerate(xyz):
            for j in range(nf):
                f = 1.0 / 10000 ** (j / nf)
                out[i, axis * 2 * nf + j] = math.sin(c * f)
                out[i, axis * 2 * nf + nf + j] = math.cos(c * f)
    return out


def _ref_forward(sd, tokens, t, cond, coords, heads, pe_mode="rope"):
    """tokens [L, Cin], t scalar, cond [M, Cc], coords [L, 3] -> [L, Cout] (one sample, tokens' dtype)."""
    dtype = tokens.dtype
    C = sd["input_layer.weight"].shape[0]
    D = C // heads
    lin = lambda x, name: x @ sd[name + ".weight"].T + sd[name + ".bias"]  # noqa: E731
    half = 128
    freqs = torch.tensor([math.exp(-math.log(10000) * k / half) for k in range(half)], dtype=dtype)
    temb = torch.cat([torch.cos(t * freqs), torch.sin(t * freqs)])
    temb = lin(F.silu(lin(temb, "t_embedder.mlp.0")), "t_embedder.mlp.2")
    mod = lin(F.silu(temb), "adaLN_modulation.1")
    fd = D // 2 // 3
    rf = torch.tensor([1.0 / 10000 ** (j / fd) for j in range(fd)], dtype=dtype)
    angles = torch.zeros(len(tokens), D // 2, dtype=dtype)
    for axis in range(3):
        angles[:, axis * fd:(axis + 1) * fd] = coords[:, axis:axis + 1].to(dtype) * rf

    def rope(x):  # x [L, H, D]
        if pe_mode == "ape":
            return x
        a, b = x[..., 0::2], x[..., 1::2]
        c, s = torch.cos(angles)[:, None], torch.sin(angles)[:, None]
        out = torch.empty_like(x)
        out[..., 0::2], out[..., 1::2] = a * c - b * s, a * s + b * c
        return out

    def rms(x, name):
        return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12) * sd[name + ".gamma"] * math.sqrt(D)

    def attn(q, k, v):  # [L, H, D], [M, H, D]
        w = torch.softmax(torch.einsum("lhd,mhd->hlm", q, k) / math.sqrt(D), dim=-1)
        return torch.einsum("hlm,mhd->lhd", w, v).reshape(len(q), C)

    ln = lambda x: F.layer_norm(x, (C,), eps=1e-6)  # noqa: E731
    h = lin(tokens, "input_layer")
    if pe_mode == "ape":
        h = h + _ref_ape(coords, C, dtype)
    nblocks = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    for i in range(nblocks):
        p = f"blocks.{i}."
        m = (sd[p + "modulation"] + mod).chunk(6)
        x = ln(h) * (1 + m[1]) + m[0]
        q, k, v = lin(x, p + "self_attn.to_qkv").reshape(-1, 3, heads, D).unbind(1)
        q, k = rope(rms(q, p + "self_attn.q_rms_norm")), rope(rms(k, p + "self_attn.k_rms_norm"))
        h = h + m[2] * lin(attn(q, k, v), p + "self_attn.to_out")
        x = F.layer_norm(h, (C,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        q = rms(lin(x, p + "cross_attn.to_q").reshape(-1, heads, D), p + "cross_attn.q_rms_norm")
        k, v = lin(cond, p + "cross_attn.to_kv").reshape(-1, 2, heads, D).unbind(1)
        k = rms(k, p + "cross_attn.k_rms_norm")
        h = h + lin(attn(q, k, v), p + "cross_attn.to_out")
        x = ln(h) * (1 + m[4]) + m[3]
        h = h + m[5] * lin(F.gelu(lin(x, p + "mlp.mlp.0"), approximate="tanh"), p + "mlp.mlp.2")
    return lin(F.layer_norm(h, (C,), eps=1e-5), "out_layer")


@pytest.fixture(scope="module")
def tex_model():
    model = SLatFlowModel(resolution=32, in_channels=16, out_channels=8, **TINY).eval()
    _randomise(model, 1)
    return model


def _sparse_input(n_per_sample, seed=0):
    g = torch.Generator().manual_seed(seed)
    coords = []
    for b, n in enumerate(n_per_sample):
        xyz = torch.randperm(32**3, generator=g)[:n]
        xyz = torch.stack([xyz // 1024, (xyz // 32) % 32, xyz % 32], 1)
        coords.append(torch.cat([torch.full((n, 1), b), xyz], 1))
    coords = torch.cat(coords).int()
    return SparseTensor(coords, torch.randn(len(coords), 8, generator=g))


@torch.no_grad()
def test_slat_flow_matches_functional_reference_with_concat_cond(tex_model):
    x = _sparse_input([40])
    concat = x.replace(torch.randn(40, 8))
    t, cond = torch.tensor([730.0]), torch.randn(1, 11, 24)
    out = tex_model(x, t, cond, concat_cond=concat)
    sd = tex_model.state_dict()
    ref = _ref_forward(sd, torch.cat([x.feats, concat.feats], 1), t[0], cond[0], x.coords[:, 1:], heads=2)
    assert out.coords is x.coords and out.feats.shape == (40, 8)
    assert torch.allclose(out.feats, ref, atol=1e-4, rtol=1e-4)
    # noise first: swapping the halves changes the answer
    swapped = tex_model(concat, t, cond, concat_cond=x)
    assert not torch.allclose(swapped.feats, out.feats, atol=1e-3)


@torch.no_grad()
@pytest.mark.parametrize("backend", [AttentionBackend.SDPA, AttentionBackend.REFERENCE])
def test_slat_flow_packed_batch_equals_separate_samples(tex_model, backend):
    tex_model.set_attention_backend(backend)
    x = _sparse_input([30, 17])
    concat = x.replace(torch.randn(47, 8))
    t, cond = torch.tensor([100.0, 900.0]), torch.randn(2, 9, 24)
    both = tex_model(x, t, cond, concat_cond=concat)
    for b, rows in enumerate([slice(0, 30), slice(30, 47)]):
        coords = x.coords[rows].clone()
        coords[:, 0] = 0
        single = tex_model(SparseTensor(coords, x.feats[rows]), t[b:b + 1], cond[b:b + 1],
                           concat_cond=SparseTensor(coords, concat.feats[rows]))
        assert torch.allclose(both.feats[rows], single.feats, atol=1e-5)
    tex_model.set_attention_backend(AttentionBackend.SDPA)


@torch.no_grad()
def test_ss_flow_matches_reference_and_flattens_x_slowest():
    model = SparseStructureFlowModel(resolution=4, in_channels=3, out_channels=3, **TINY).eval()
    _randomise(model, 2)
    x, t, cond = torch.randn(2, 3, 4, 4, 4), torch.tensor([10.0, 990.0]), torch.randn(2, 5, 24)
    out = model(x, t, cond)
    assert out.shape == (2, 3, 4, 4, 4)
    grid = torch.stack(torch.meshgrid(*[torch.arange(4)] * 3, indexing="ij"), -1).reshape(-1, 3)
    sd = {k: v for k, v in model.state_dict().items() if k != "rope_phases"}
    for b in range(2):
        tokens = x[b].reshape(3, -1).T  # [64, 3], token i = (x, y, z) = grid[i]
        ref = _ref_forward(sd, tokens, t[b], cond[b], grid, heads=2)
        assert torch.allclose(out[b].reshape(3, -1).T, ref, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_ss_flow_with_absolute_positions_matches_reference():
    ape = {**TINY, "pe_mode": "ape"}
    model = SparseStructureFlowModel(resolution=4, in_channels=3, out_channels=3, **ape)
    _randomise(model.eval(), 3)
    buffers = dict(model.named_buffers())
    assert set(buffers) == {"pos_emb"} and buffers["pos_emb"].shape == (64, 64)  # the official buffer
    x, t, cond = torch.randn(2, 3, 4, 4, 4), torch.tensor([10.0, 990.0]), torch.randn(2, 5, 24)
    out = model(x, t, cond)
    grid = torch.stack(torch.meshgrid(*[torch.arange(4)] * 3, indexing="ij"), -1).reshape(-1, 3)
    sd = {k: v for k, v in model.state_dict().items() if k != "pos_emb"}
    for b in range(2):
        ref = _ref_forward(sd, x[b].reshape(3, -1).T, t[b], cond[b], grid, heads=2, pe_mode="ape")
        assert torch.allclose(out[b].reshape(3, -1).T, ref, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_slat_flow_with_absolute_positions_matches_reference_packed_and_alone():
    model = SLatFlowModel(resolution=32, in_channels=8, out_channels=8, **{**TINY, "pe_mode": "ape"}).eval()
    _randomise(model, 4)
    x = _sparse_input([30, 17])
    t, cond = torch.tensor([100.0, 900.0]), torch.randn(2, 9, 24)
    both = model(x, t, cond)
    sd = model.state_dict()
    for b, rows in enumerate([slice(0, 30), slice(30, 47)]):
        ref = _ref_forward(sd, x.feats[rows], t[b], cond[b], x.coords[rows, 1:], heads=2, pe_mode="ape")
        assert torch.allclose(both.feats[rows], ref, atol=1e-4, rtol=1e-4)


def test_unknown_position_mode_is_refused():
    with pytest.raises(ValueError, match="pe_mode"):
        SparseStructureFlowModel(resolution=4, in_channels=3, out_channels=3,
                                 **{**TINY, "pe_mode": "learned"})


@torch.no_grad()
def test_bf16_blocks_stay_close_to_fp32(tex_model):
    x = _sparse_input([50])
    t, cond = torch.tensor([500.0]), torch.randn(1, 7, 24)
    concat = x.replace(torch.randn(50, 8))
    ref = tex_model(x, t, cond, concat_cond=concat).feats
    bf = SLatFlowModel(resolution=32, in_channels=16, out_channels=8, **{**TINY, "dtype": "bfloat16"})
    bf.load_state_dict(tex_model.state_dict())
    assert bf.blocks[0].self_attn.to_qkv.weight.dtype == torch.bfloat16
    assert bf.blocks[0].modulation.dtype == torch.float32 and bf.input_layer.weight.dtype == torch.float32
    out = bf(x, t, cond, concat_cond=concat).feats
    assert out.dtype == torch.float32
    assert (out - ref).abs().max() < 0.1 * ref.abs().max()


@pytest.mark.gpu
@torch.no_grad()
@pytest.mark.parametrize("backend", [AttentionBackend.SDPA, AttentionBackend.SDPA_CUDNN,
                                     AttentionBackend.SDPA_FLASH])
def test_gpu_bf16_slat_forward_matches_reference_backend(backend):
    args = {**TINY, "model_channels": 256, "num_heads": 2, "dtype": "bfloat16"}  # head dim 128
    model = SLatFlowModel(resolution=64, in_channels=32, out_channels=32, **args).cuda().eval()
    x = _sparse_input([300]).to("cuda")
    x = x.replace(torch.randn(300, 32, device="cuda"))
    t, cond = torch.tensor([400.0], device="cuda"), torch.randn(1, 77, 24, device="cuda")
    model.set_attention_backend(AttentionBackend.REFERENCE)
    ref = model(x, t, cond).feats
    model.set_attention_backend(backend)
    out = model(x, t, cond).feats
    assert (out - ref).abs().max() <= 0.05 * ref.abs().max()
