"""The tiny release folder: complete, loadable strictly, and every network runs one forward."""

from __future__ import annotations

import json

import pytest
import torch

from backend.models import load_model, read_pipeline_config
from backend.models.loading import read_safetensors_header
from backend.models.tiny_checkpoint import TINY_MODELS
from backend.sparse import SparseTensor


def test_folder_layout(tiny_checkpoint):
    names = {p.name for p in (tiny_checkpoint / "ckpts").iterdir()}
    for stem in TINY_MODELS:
        assert {f"{stem}.json", f"{stem}.safetensors"} <= names
    total = sum(p.stat().st_size for p in tiny_checkpoint.rglob("*") if p.is_file())
    assert total < 20 * 2**20
    header = read_safetensors_header(tiny_checkpoint / "ckpts/ss_flow_img_dit_1_3B_64_bf16.safetensors")
    assert "rope_phases" not in header
    assert header["blocks.0.mlp.mlp.0.weight"]["dtype"] == "BF16"
    assert header["blocks.0.modulation"]["dtype"] == "F32"
    vae = read_safetensors_header(tiny_checkpoint / "ckpts/tex_dec_next_dc_f16c32_fp16.safetensors")
    convs = [k for k in vae if k.startswith("blocks.") and k.endswith("conv.weight")]
    assert convs and {vae[k]["dtype"] for k in convs} == {"F16"}


def test_pipeline_files_parse_with_official_defaults(tiny_checkpoint):
    p = read_pipeline_config(tiny_checkpoint)
    t = read_pipeline_config(tiny_checkpoint / "texturing_pipeline.json")
    assert p.default_pipeline_type == "1024_cascade" and p.low_vram is True
    ss = p.sparse_structure_sampler
    assert (ss.steps, ss.guidance_strength, ss.guidance_rescale, ss.guidance_interval, ss.rescale_t) == (
        12, 7.5, 0.7, (0.6, 1.0), 5.0)
    assert p.shape_slat_sampler.guidance_rescale == 0.5 and p.shape_slat_sampler.rescale_t == 3.0
    assert p.tex_slat_sampler.guidance_interval == (0.6, 0.9) and p.tex_slat_sampler.guidance_strength == 1.0
    assert len(p.shape_slat_normalization.mean) == 32 and p.shape_slat_normalization.mean[0] == 0.781296
    assert t.tex_slat_normalization.std[-1] == 2.775190
    assert set(t.models) == {"shape_slat_encoder", "tex_slat_decoder", "tex_slat_flow_model_512",
                             "tex_slat_flow_model_1024"}
    assert p.models["sparse_structure_decoder"] == "ckpts/ss_dec_conv3d_16l8_fp16"


@torch.no_grad()
def test_flow_models_and_ss_decoder_load_strictly_and_run(tiny_checkpoint):
    p = read_pipeline_config(tiny_checkpoint)
    cond = torch.randn(1, 1029, 32)
    ss = load_model(tiny_checkpoint, p.models["sparse_structure_flow_model"], dtype=torch.float32)
    v = ss(torch.randn(1, 8, 16, 16, 16), torch.tensor([500.0]), cond)
    assert v.shape == (1, 8, 16, 16, 16) and torch.isfinite(v).all()
    dec = load_model(tiny_checkpoint, p.models["sparse_structure_decoder"], dtype=torch.float32)
    logits = dec(v)
    assert logits.shape == (1, 1, 64, 64, 64) and torch.isfinite(logits).all()

    coords = torch.cat([torch.zeros(60, 1), torch.randint(0, 32, (60, 3))], 1).int()
    x = SparseTensor(coords, torch.randn(60, 32))
    shape = load_model(tiny_checkpoint, p.models["shape_slat_flow_model_512"])  # stored bf16 blocks
    assert shape.dtype == torch.bfloat16
    out = shape(x, torch.tensor([500.0]), cond)
    assert out.feats.shape == (60, 32) and torch.isfinite(out.feats).all()
    tex = load_model(tiny_checkpoint, p.models["tex_slat_flow_model_1024"], dtype=torch.float32)
    out = tex(x, torch.tensor([500.0]), cond, concat_cond=x)
    assert out.feats.shape == (60, 32) and torch.isfinite(out.feats).all()


@torch.no_grad()
def test_sc_vaes_load_strictly_and_run(tiny_checkpoint):
    p = read_pipeline_config(tiny_checkpoint)
    t = read_pipeline_config(tiny_checkpoint / "texturing_pipeline.json")
    coords = torch.cat([torch.zeros(6, 1), torch.tensor([[1, 1, 1], [1, 2, 1], [2, 1, 1],
                                                          [2, 2, 2], [3, 2, 2], [3, 3, 3]])], 1).int()
    latent = SparseTensor(coords, torch.randn(6, 32))
    shape_dec = load_model(tiny_checkpoint, p.models["shape_slat_decoder"], dtype=torch.float32)
    fdg, subs = shape_dec(latent, return_subs=True)
    assert len(subs) == 4 and subs[0].feats.shape == (6, 8)
    tex_dec = load_model(tiny_checkpoint, p.models["tex_slat_decoder"])  # stored fp16 blocks
    assert tex_dec.dtype == torch.float16
    voxels = tex_dec(latent, guide_subs=subs)
    assert voxels.feats.shape == (len(fdg.coords), 6) and torch.equal(voxels.coords, fdg.coords)
    enc = load_model(tiny_checkpoint, t.models["shape_slat_encoder"], dtype=torch.float32)
    n = len(fdg.coords)
    if n:
        z = enc(voxels.replace(torch.rand(n, 3)), voxels.replace(torch.rand(n, 3) > 0.5))
        assert z.feats.shape[1] == 32 and torch.isfinite(z.feats).all()


def test_dinov3_loads_with_transformers(tiny_checkpoint):
    transformers = pytest.importorskip("transformers")
    path = read_pipeline_config(tiny_checkpoint).image_cond_model.args["model_name"]
    cfg = json.loads((tiny_checkpoint / "dinov3_tiny/config.json").read_text())
    assert cfg["patch_size"] == 16 and cfg["num_register_tokens"] == 4 and cfg["hidden_size"] == 32
    model = transformers.DINOv3ViTModel.from_pretrained(path).eval()
    with torch.no_grad():
        out = model(pixel_values=torch.randn(1, 3, 64, 64)).last_hidden_state
    assert out.shape == (1, 1 + 4 + 16, 32)
