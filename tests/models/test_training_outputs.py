"""Training-only outputs: VAE posteriors, teacher-forced decoder outputs, the SS encoder."""

from __future__ import annotations

import pytest
import torch

from backend.models import SparseStructureDecoder, SparseStructureEncoder, model_class
from backend.models.sc_vae import FlexiDualGridVaeDecoder, FlexiDualGridVaeEncoder, SparseUnetVaeDecoder
from backend.sparse.tensor import SparseTensor
from tests.models.test_sc_vae_forward import _DEC, _ENC, _randomize
from tests.sparse.helpers import shell_coords


def _inputs(seed=0):
    coords = shell_coords(10, batch=2)
    coords = coords[torch.randperm(len(coords), generator=torch.Generator().manual_seed(seed))]
    coords = coords[torch.argsort(coords[:, 0], stable=True)]  # samples contiguous, voxels shuffled
    gen = torch.Generator().manual_seed(seed + 1)
    verts = SparseTensor(coords, torch.rand(len(coords), 3, generator=gen))
    return verts, verts.replace(torch.rand(len(coords), 3, generator=gen) > 0.5)


@torch.no_grad()
def test_encode_posterior_is_to_latent_split_in_mean_and_logvar():
    verts, inter = _inputs()
    enc = _randomize(FlexiDualGridVaeEncoder(**_ENC), seed=1)
    mean, logvar, maps = enc.encode_posterior(verts, inter)
    latent, fwd_maps = enc(verts, inter, return_maps=True)
    assert torch.equal(mean.feats, latent.feats) and torch.equal(mean.coords, latent.coords)
    assert logvar.feats.shape == mean.feats.shape and torch.equal(logvar.coords, mean.coords)
    assert not torch.allclose(logvar.feats, mean.feats)
    raw, _ = enc._encode(enc._input(verts, inter))
    torch.testing.assert_close(torch.cat([mean.feats, logvar.feats], 1), raw.feats)
    assert [torch.equal(a.fine_coords, b.fine_coords) for a, b in zip(maps, fwd_maps)] == [True] * 4


def test_teacher_forced_shape_decoder_returns_raw_outputs_and_subdivision_logits():
    verts, inter = _inputs(2)
    enc = _randomize(FlexiDualGridVaeEncoder(**_ENC), seed=3)
    dec = _randomize(FlexiDualGridVaeDecoder(**_DEC), seed=4, subdiv_bias=-5.0).train()
    with torch.no_grad():  # logits all -5 + tiny: on its own the decoder would prune everything
        for stage in dec.blocks[:4]:
            stage[-1].to_subdiv.weight.mul_(1e-4)
    mean, _, maps = enc.encode_posterior(verts, inter)
    out, subs = dec(mean, return_subs=True, s2c_maps=maps)
    assert torch.equal(out.coords, verts.coords)  # exactly the input voxels, in order
    assert len(subs) == 4
    for level, (sub, mapping) in enumerate(zip(subs, maps)):
        target = mapping.child_mask()
        assert torch.equal(sub.coords, mapping.parent_coords) and sub.feats.shape == target.shape
        n_next = len(verts) if level == 3 else len(subs[level + 1])
        assert int(target.sum()) == n_next and (sub.feats < 0).all()  # forced despite the logits
    logits = out.intersection_logits
    assert logits.shape == (len(verts), 3) and torch.equal(out.intersected, logits > 0)
    assert ((out.offsets > -0.5) & (out.offsets < 1.5)).all() and (out.split_weight > 0).all()
    assert torch.equal(out.sample(1).intersection_logits, logits[out.coords[:, 0] == 1])
    loss = sum(torch.nn.functional.binary_cross_entropy_with_logits(s.feats, m.child_mask().float())
               for s, m in zip(subs, maps)) + logits.sum() + out.offsets.sum() + out.split_weight.sum()
    loss.backward()
    stage_ends = [stage[-1] for stage in dec.blocks[:4]]
    assert all(b.to_subdiv.weight.grad.abs().sum() > 0 for b in stage_ends)
    assert dec.from_latent.weight.grad.abs().sum() > 0


def test_teacher_forced_texture_decoder_gives_raw_six_channels_on_the_input_voxels():
    verts, inter = _inputs(5)
    enc = _randomize(FlexiDualGridVaeEncoder(**_ENC), seed=6)
    tex = _randomize(SparseUnetVaeDecoder(out_channels=6, pred_subdiv=False, **_DEC), seed=7).train()
    mean, _, maps = enc.encode_posterior(verts, inter)
    out = tex(mean, s2c_maps=maps)
    assert torch.equal(out.coords, verts.coords) and out.feats.shape == (len(verts), 6)
    assert out.feats.requires_grad and (out.feats.abs() > 1).any()  # raw, not squashed to [-1, 1]


_SS_ENC = dict(in_channels=1, latent_channels=8, num_res_blocks=2, channels=[32, 128, 512],
               num_res_blocks_middle=2, norm_type="layer", use_fp16=True)


def test_ss_encoder_official_keys_shapes_and_registry():
    assert model_class("SparseStructureEncoder") is SparseStructureEncoder
    with torch.device("meta"):
        sd = SparseStructureEncoder(**_SS_ENC).state_dict()
    want = {"input_layer.weight": (32, 1, 3, 3, 3), "blocks.0.norm1.weight": (32,),
            "blocks.1.conv2.weight": (32, 32, 3, 3, 3), "blocks.2.conv.weight": (128, 32, 2, 2, 2),
            "blocks.2.conv.bias": (128,), "blocks.4.conv1.weight": (128, 128, 3, 3, 3),
            "blocks.5.conv.weight": (512, 128, 2, 2, 2), "blocks.7.norm2.bias": (512,),
            "middle_block.1.conv2.weight": (512, 512, 3, 3, 3), "out_layer.0.weight": (512,),
            "out_layer.2.weight": (16, 512, 3, 3, 3), "out_layer.2.bias": (16,)}
    for key, shape in want.items():
        assert tuple(sd[key].shape) == shape, key
    assert {k.split(".")[0] for k in sd} == {"input_layer", "blocks", "middle_block", "out_layer"}
    assert len({k.split(".")[1] for k in sd if k.startswith("blocks.")}) == 8
    assert sd["blocks.2.conv.weight"].dtype == torch.float16
    assert sd["out_layer.2.weight"].dtype == torch.float32


@pytest.mark.parametrize("use_fp16", [False, True])
def test_ss_encoder_shapes_posterior_and_decoder_round_trip(use_fp16):
    enc = SparseStructureEncoder(1, 8, 1, [8, 16, 16], num_res_blocks_middle=1, use_fp16=use_fp16)
    dec = SparseStructureDecoder(1, 8, 1, [16, 16, 8], num_res_blocks_middle=1, use_fp16=use_fp16)
    x = (torch.rand(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0)) > 0.7).float()
    with torch.no_grad():
        z = enc(x)
        z2, mean, logvar = enc(x, return_raw=True)
        sampled = enc(x, sample_posterior=True, generator=torch.Generator().manual_seed(1))
        logits = dec(z)
    assert z.shape == (2, 8, 4, 4, 4) and z.dtype == torch.float32
    assert torch.equal(z, mean) and torch.equal(z2, mean) and logvar.shape == mean.shape
    assert not torch.equal(sampled, mean) and torch.isfinite(sampled).all()
    assert logits.shape == x.shape
