"""End to end on CPU with the tiny checkpoint: image -> GLB, samples, retexture, errors, cancel."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from backend.geometry import PbrMaterial, TriangleMesh
from backend.meshio import read_gltf, write_glb
from backend.pipeline.api import (
    Cancelled,
    CancelToken,
    ExportOptions,
    GenerateRequest,
    RetextureRequest,
    SamplerOverrides,
)
from backend.pipeline.errors import ModelUnavailableError, OutOfMemoryError
from backend.pipeline.generator import Trellis2Generator
from backend.pipeline.runtime import Runtime
from backend.pipeline.stages import cascade_coords
from tests.fixtures import images
from tests.fixtures.meshes import box
from tests.fixtures.structure import GivenStructure
from tests.pipeline.conftest import small_shell

FAST = SamplerOverrides(steps=2)
EXPORT = ExportOptions(texture_size=64, faces=800)


def _generator(root, samples=1, radius=0.08):
    shell = GivenStructure(lambda grid: small_shell(grid, radius, samples=samples))
    return Trellis2Generator(Runtime(model=str(root), device="cpu", offline=True), structure=shell)


def _request(tmp_path, img, **kw):
    base = dict(images=(img,), output_dir=tmp_path / "out", pipeline_type="512", seed=3,
                sparse_structure=FAST, shape=FAST, texture=FAST, export=EXPORT)
    return GenerateRequest(**{**base, **kw})


@pytest.mark.slow
def test_image_to_glb_with_pbr_and_alpha(tmp_path, tiny_checkpoint):
    img = images.rgba_transparent(tmp_path / "obj.png")
    seen = []
    res = _generator(tiny_checkpoint, radius=0.05).generate(_request(tmp_path, img), on_progress=seen.append)
    (asset,) = res.assets
    glb = read_gltf(asset.glb)
    mat = glb.materials[0]
    assert mat.base_color_texture is not None and mat.metallic_roughness_texture is not None
    assert mat.metallic_roughness_texture.shape == (64, 64, 3)
    # Random weights give a partly transparent alpha volume: the material says BLEND and carries it.
    assert asset.alpha_mode == mat.alpha_mode == "BLEND"
    assert mat.base_color_texture.shape == (64, 64, 4) and mat.base_color_texture[..., 3].min() < 250
    assert glb.uvs is not None and glb.normals is not None and 0 < glb.num_faces <= 800
    doc = json.loads(asset.direct.read_text())
    assert doc["alpha_mode"] == "BLEND" and set(doc["textures"]) == {"base_color", "metallic_roughness"}
    # Progress: every stage reported, fractions never decrease, the job ends at 1.
    assert [p.stage for p in seen if p.step == 0][:1] == ["preprocess"]
    assert {p.stage for p in seen} == {"preprocess", "sparse_structure", "shape", "texture", "decode",
                                       "export"}
    fr = [p.fraction for p in seen]
    assert fr == sorted(fr) and fr[-1] == pytest.approx(1.0)
    assert set(res.seconds_per_stage) >= {"sparse_structure", "shape", "texture", "decode", "export"}
    # Same seed, same request -> the same textures (explicit generator, no global RNG).
    torch.manual_seed(999)  # the global generator must not matter
    again_req = _request(tmp_path, img, output_dir=tmp_path / "again")
    again = _generator(tiny_checkpoint, radius=0.05).generate(again_req)
    glb2 = read_gltf(again.assets[0].glb)
    assert np.array_equal(glb2.materials[0].base_color_texture, mat.base_color_texture)


@pytest.mark.slow
def test_num_samples_and_cascade(tmp_path, tiny_checkpoint):
    img = images.rgba_transparent(tmp_path / "obj.png")
    req = _request(tmp_path, img, pipeline_type="1024_cascade", num_samples=2,
                   export=replace(EXPORT, write_glb=False))
    res = _generator(tiny_checkpoint, samples=2, radius=0.02).generate(req)
    assert [a.name for a in res.assets] == ["obj_0", "obj_1"]
    assert all(a.extra["resolution"] == 1024 and a.direct.is_file() for a in res.assets)


@pytest.mark.slow
def test_direct_1024_pipeline_samples_at_1024(tmp_path, tiny_checkpoint):
    img = images.rgba_transparent(tmp_path / "obj.png")
    req = _request(tmp_path, img, pipeline_type="1024", export=replace(EXPORT, write_glb=False))
    (asset,) = _generator(tiny_checkpoint, radius=0.02).generate(req).assets
    assert asset.extra["resolution"] == 1024 and asset.direct.is_file()


def test_cascade_token_cap_rule():
    x = torch.arange(0, 512, 2)
    fine = torch.stack([torch.zeros_like(x), x, torch.zeros_like(x), torch.full_like(x, 7)], 1)  # a line
    # Tokens at resolution R = R / 16 distinct cells along x: 96, 88, 80, 72, 64.
    coords, res = cascade_coords(fine, 1536, max_tokens=81)
    assert res == 1280 and len(coords) == 80  # 96 and 88 are not below the cap; 80 < 81 is
    coords, res = cascade_coords(fine, 1536, max_tokens=80)
    assert res == 1152 and len(coords) == 72  # strict "<"
    coords, res = cascade_coords(fine, 1024, max_tokens=10)
    assert res == 1024 and len(coords) == 64  # 1024 is always accepted
    q = cascade_coords(torch.tensor([[0, 7, 8, 511]]), 1024, 100)[0]
    assert q.tolist() == [[0, 0, 1, 63]]  # floor((c + 0.5) / 512 * 64)


def _textured_box_glb(path):
    m = box(size=(0.8, 0.5, 0.3), subdivisions=2)
    rng = np.random.default_rng(0)
    uvs = rng.random((m.num_vertices, 2)) * 0.5 + 0.25
    mat = PbrMaterial(base_color_texture=np.full((8, 8, 3), 200, np.uint8))
    mesh = TriangleMesh(m.vertices * 3.0 + np.array([5.0, 1.0, -2.0]), m.faces, uvs=uvs, materials=[mat])
    write_glb(path, mesh)
    return read_gltf(path)


@pytest.mark.slow
def test_retexture_keeps_topology_uvs_and_transform(tmp_path, tiny_checkpoint):
    src = _textured_box_glb(tmp_path / "box.glb")
    img = images.rgba_transparent(tmp_path / "ref.png")
    gen = Trellis2Generator(Runtime(model=str(tiny_checkpoint), device="cpu", offline=True))
    req = RetextureRequest(mesh=tmp_path / "box.glb", image=img, output_dir=tmp_path / "out", resolution=64,
                           texture=FAST, export=EXPORT)
    res = gen.retexture(req)
    out = read_gltf(res.assets[0].glb)
    assert out.num_vertices == src.num_vertices and np.array_equal(out.faces, src.faces)
    np.testing.assert_allclose(out.uvs, src.uvs, atol=1e-7)
    np.testing.assert_allclose(out.vertices, src.vertices, atol=1e-6)  # placement and scale kept
    mat = out.materials[0]
    assert mat.base_color_texture.shape[:2] == (64, 64) and mat.metallic_roughness_texture is not None
    assert res.assets[0].extra["kept_uvs"] is True
    # The baked colours vary (they come from the decoded voxels, not a constant fill).
    assert mat.base_color_texture[..., :3].std() > 1.0


def test_offline_without_model_stops_at_once(tmp_path):
    gen = Trellis2Generator(Runtime(model="someone/not-cached-anywhere", device="cpu", offline=True))
    with pytest.raises(ModelUnavailableError, match="--model"):
        gen.generate(_request(tmp_path, tmp_path / "missing.png"))


def test_cancel_and_oom_are_reported(tmp_path, tiny_checkpoint, monkeypatch):
    img = images.rgba_transparent(tmp_path / "obj.png")
    token = CancelToken()

    def on_progress(p):
        if p.stage == "sparse_structure" and p.step == 1:
            token.cancel()

    with pytest.raises(Cancelled):
        _generator(tiny_checkpoint).generate(_request(tmp_path, img), on_progress, token)

    import backend.pipeline.generator as g

    def boom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(g, "image_to_assets", boom)
    with pytest.raises(OutOfMemoryError, match="low-vram") as e:
        _generator(tiny_checkpoint).generate(_request(tmp_path, img))
    assert e.value.stage == "preprocess"


def test_server_constructor_form(tiny_checkpoint):
    gen = Trellis2Generator(tiny_checkpoint, device="auto", low_vram=True,
                            dependencies={"facebook/dinov3-vitl16-pretrain-lvd1689m": tiny_checkpoint})
    assert gen.runtime.offline and gen.runtime.low_vram and gen.runtime.model == str(tiny_checkpoint)
    assert gen.runtime.device in ("cpu", "cuda")
    assert gen.store.get("tex_slat_decoder") is gen.store.get("tex_slat_decoder")  # loaded once


@pytest.mark.slow
def test_decode_returns_the_decoded_samples_and_writes_nothing(tmp_path, tiny_checkpoint):
    img = images.rgba_transparent(tmp_path / "obj.png")
    request = _request(tmp_path, img, num_samples=2)
    first = _generator(tiny_checkpoint, samples=2, radius=0.05).decode(request)
    again = _generator(tiny_checkpoint, samples=2, radius=0.05).decode(request)
    assert len(first) == 2 and not (tmp_path / "out").exists()
    for a, b in zip(first, again):  # a fixed seed: the same surfaces and voxels
        assert a.faces.shape[0] > 0 and np.array_equal(a.vertices, b.vertices)
        assert torch.equal(a.attrs, b.attrs) and a.attrs.shape[1] == 6
    with pytest.raises(Exception, match="no input image"):
        _generator(tiny_checkpoint).decode(replace(request, images=()))
