"""Tiny-width SC-VAEs on CPU: block equations, shapes, coords, subdivision and ordering contracts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from backend.models.sc_vae import (
    FlexiDualGridVaeDecoder,
    FlexiDualGridVaeEncoder,
    SparseUnetVaeDecoder,
    SparseUnetVaeEncoder,
)
from backend.models.sc_vae.blocks import SparseConvNeXtBlock3d, SparseResBlockC2S3d, SparseResBlockS2C3d
from backend.sparse.neighbors import build_neighbor_map
from backend.sparse.spatial import build_s2c_map
from backend.sparse.tensor import SparseTensor
from kernels.sparse_conv.reference import subm_conv3d_reference
from tests.sparse.helpers import shell_coords

_CH = [32, 16, 16, 8, 8]
_DEC = {"model_channels": _CH, "latent_channels": 4, "num_blocks": [1, 1, 1, 1, 0],
        "block_type": ["SparseConvNeXtBlock3d"] * 5, "up_block_type": ["SparseResBlockC2S3d"] * 4}
_ENC = {"model_channels": _CH[::-1], "latent_channels": 4, "num_blocks": [0, 1, 1, 1, 1],
        "block_type": ["SparseConvNeXtBlock3d"] * 5, "down_block_type": ["SparseResBlockS2C3d"] * 4}


def _randomize(model: torch.nn.Module, seed: int, subdiv_bias: float = 0.0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        for m in model.modules():
            if isinstance(m, SparseResBlockC2S3d) and m.pred_subdiv:
                m.to_subdiv.bias.fill_(subdiv_bias)  # keep enough children alive
    return model.eval()


def _conv(conv, x):
    return subm_conv3d_reference(x.feats, build_neighbor_map(x.coords), conv.weight, conv.bias)


def _ln(t, norm=None, eps=1e-6):
    w, b = (None, None) if norm is None or norm.weight is None else (norm.weight, norm.bias)
    return F.layer_norm(t, t.shape[-1:], w, b, eps)


@torch.no_grad()
def test_convnext_block_equation():
    block = _randomize(SparseConvNeXtBlock3d(8), seed=0)
    coords = shell_coords(6)
    x = SparseTensor(coords, torch.randn(len(coords), 8))
    h = _ln(_conv(block.conv, x), block.norm)
    want = x.feats + block.mlp[2](F.silu(block.mlp[0](h)))
    torch.testing.assert_close(block(x).feats, want)


@torch.no_grad()
def test_s2c_block_equation():
    block = _randomize(SparseResBlockS2C3d(8, 16), seed=1)
    coords = shell_coords(8)
    x = SparseTensor(coords, torch.randn(len(coords), 8))
    m = build_s2c_map(coords)
    n_par = len(m.parent_coords)
    h = _conv(block.conv1, x.replace(F.silu(_ln(x.feats, block.norm1))))  # [N, 2]
    packed = torch.zeros(n_par, 8, 2)
    packed[m.parent_index, m.child_index] = h
    coarse = SparseTensor(m.parent_coords, packed.reshape(n_par, 16))
    h2 = _conv(block.conv2, coarse.replace(F.silu(_ln(coarse.feats))))
    xs = torch.zeros(n_par, 8, 8)
    xs[m.parent_index, m.child_index] = x.feats
    skip = xs.reshape(n_par, 64).reshape(n_par, 16, 4).mean(-1)  # groups of 4 consecutive channels
    out = block(x)
    assert torch.equal(out.coords, m.parent_coords)
    torch.testing.assert_close(out.feats, h2 + skip)


@torch.no_grad()
def test_c2s_block_equation_and_predicted_mask():
    block = _randomize(SparseResBlockC2S3d(16, 8), seed=2)
    coords = shell_coords(5)
    x = SparseTensor(coords, torch.randn(len(coords), 16))
    out, logits = block(x)
    torch.testing.assert_close(logits, block.to_subdiv(x.feats))  # on the block input
    mask = logits > 0
    p, s = mask.nonzero(as_tuple=True)  # parent-major, ascending slot
    h = _conv(block.conv1, x.replace(F.silu(_ln(x.feats, block.norm1)))).reshape(len(x), 8, 8)[p, s]
    fine = coords[p].clone()
    fine[:, 1:] = fine[:, 1:] * 2 + torch.stack([s & 1, (s >> 1) & 1, (s >> 2) & 1], 1).int()
    hf = SparseTensor(fine, h)
    h2 = _conv(block.conv2, hf.replace(F.silu(_ln(h))))
    child_x = x.feats.reshape(len(x), 8, 2)[p, s]  # C_in / 8 = 2 channels per child
    skip = child_x[:, torch.arange(8) // 4]  # channel k of the output reads input channel k // 4
    assert torch.equal(out.coords, fine)
    torch.testing.assert_close(out.feats, h2 + skip)


@pytest.fixture(scope="module")
def latent():
    coords = shell_coords(4, batch=2)  # 2 samples on a 4^3 latent grid
    return SparseTensor(coords, torch.randn(len(coords), 4, generator=torch.Generator().manual_seed(9)))


@torch.no_grad()
def test_shape_decoder_subs_upsample_and_fdg_output(latent):
    dec = _randomize(FlexiDualGridVaeDecoder(**_DEC, resolution=999), seed=3, subdiv_bias=0.0)
    out, subs = dec(latent, return_subs=True)
    assert len(subs) == 4 and torch.equal(subs[0].coords, latent.coords)
    for level in range(4):
        assert subs[level].feats.shape == (len(subs[level]), 8)
        n_next = len(out) if level == 3 else len(subs[level + 1])
        assert int((subs[level].feats > 0).sum()) == n_next  # early pruning: only logit > 0 children
        assert torch.equal(dec.upsample(latent, level), subs[level].coords)
    assert torch.equal(dec.upsample(latent, 4), out.coords)
    assert len(out) > len(latent)
    parents = torch.unique(out.coords[:, 1:] // 16 + out.coords[:, :1] * 1000, dim=0)
    assert len(parents) <= len(latent)  # every fine voxel descends from a latent voxel
    assert out.batch_size == 2
    assert out.offsets.shape == (len(out), 3) and out.intersected.dtype == torch.bool
    assert ((out.offsets > -0.5) & (out.offsets < 1.5)).all() and (out.split_weight > 0).all()
    assert len(out.sample(1)) == int((out.coords[:, 0] == 1).sum())


@torch.no_grad()
def test_texture_decoder_follows_shape_subs_exactly(latent):
    shape_dec = _randomize(FlexiDualGridVaeDecoder(**_DEC), seed=4, subdiv_bias=0.0)
    tex_dec = _randomize(SparseUnetVaeDecoder(out_channels=6, pred_subdiv=False, **_DEC), seed=5)
    shape, subs = shape_dec(latent, return_subs=True)
    assert len(shape) > 4 * len(latent)  # the random decoder still subdivides
    tex = tex_dec(latent, guide_subs=subs)
    assert torch.equal(tex.coords, shape.coords) and tex.feats.shape == (len(shape), 6)
    tex_masks = tex_dec(latent, guide_subs=[s.feats > 0 for s in subs])  # bool masks work too
    torch.testing.assert_close(tex_masks.feats, tex.feats)
    with pytest.raises(ValueError):
        tex_dec(latent)  # neither guide nor maps
    with pytest.raises(ValueError):
        tex_dec(latent, return_subs=True)


@torch.no_grad()
def test_encoder_maps_decode_back_onto_the_input_voxels_in_order():
    coords = shell_coords(40, batch=2, thickness=1.5)
    coords = coords[torch.randperm(len(coords), generator=torch.Generator().manual_seed(0))]
    gen = torch.Generator().manual_seed(1)
    verts = SparseTensor(coords, torch.rand(len(coords), 3, generator=gen))
    inter = verts.replace(torch.rand(len(coords), 3, generator=gen) > 0.5)
    enc = _randomize(FlexiDualGridVaeEncoder(**_ENC), seed=6)
    latent, maps = enc(verts, inter, return_maps=True)
    want = torch.unique(torch.cat([coords[:, :1], coords[:, 1:] // 16], 1), dim=0)
    assert torch.equal(latent.coords, want.int()) and latent.feats.shape == (len(want), 4)
    assert [len(m) for m in maps] == sorted(len(m) for m in maps)  # coarse to fine
    assert torch.equal(maps[-1].fine_coords, coords)
    tex_dec = _randomize(SparseUnetVaeDecoder(out_channels=6, pred_subdiv=False, **_DEC), seed=7)
    tex = tex_dec(latent, s2c_maps=maps)
    assert torch.equal(tex.coords, coords) and tex.feats.shape == (len(coords), 6)
    # Same latent, the encoder's maps: identical whichever encoder produced them.
    tex_enc = _randomize(SparseUnetVaeEncoder(in_channels=6, **_ENC), seed=8)
    assert torch.equal(tex_enc(verts.replace(torch.randn(len(coords), 6))).coords, latent.coords)


@torch.no_grad()
def test_fp16_storage_runs_and_returns_fp32(latent):
    dec = SparseUnetVaeDecoder(out_channels=6, pred_subdiv=True, use_fp16=True, **_DEC)
    dec = _randomize(dec, seed=9, subdiv_bias=0.0)
    assert dec.dtype == torch.float16 and dec.blocks[0][0].norm.weight.dtype == torch.float32
    out = dec(latent)
    assert out.feats.dtype == torch.float32 and torch.isfinite(out.feats).all()


@torch.no_grad()
def test_decoding_at_a_grid_leaves_the_shared_decoders_unchanged(latent):
    """The pipeline caches one shape decoder for every job: the grid a job extracts its mesh on is
    an argument of that job, never written into the cached module."""
    from backend.pipeline.stages import decode

    shape_dec = _randomize(FlexiDualGridVaeDecoder(**_DEC, resolution=999), seed=4, subdiv_bias=0.0)
    tex_dec = _randomize(SparseUnetVaeDecoder(out_channels=6, pred_subdiv=False, **_DEC), seed=5)
    state = lambda m: {k: v for k, v in vars(m).items() if not k.startswith("_")}  # noqa: E731
    before = state(shape_dec), state(tex_dec)
    assets = decode(shape_dec, tex_dec, latent, latent.replace(torch.zeros(len(latent), 4)), 64, fill_holes=0)
    assert [a.resolution for a in assets] == [64, 64] and all(len(a.faces) for a in assets)
    assert (state(shape_dec), state(tex_dec)) == before
