"""The data toolkit end to end on tiny inputs: prepare, resume, sharding, encode, merge, errors."""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from backend.geometry import PbrMaterial, TriangleMesh
from backend.meshio import write_glb, z_up_to_y_up
from backend.train.data import (
    DataLayout,
    DataToolkitError,
    Encoder,
    PrepareOptions,
    encode_dataset,
    merge_records,
    prepare_dataset,
)
from backend.train.data.__main__ import main as cli_main
from tests.fixtures.meshes import checker_texture, textured_box

RES, VIEWS, SIZE = 64, 2, 64


def _textured_cylinder(segments: int = 24, radius: float = 0.3, height: float = 0.7) -> TriangleMesh:
    """A closed cylinder along Z with a wrapped checker texture on the side and plain caps."""
    ang = np.linspace(0, 2 * np.pi, segments + 1)
    ring = np.stack([radius * np.cos(ang), radius * np.sin(ang)], 1)
    bottom = np.concatenate([ring, np.full((segments + 1, 1), -height / 2)], 1)
    top = np.concatenate([ring, np.full((segments + 1, 1), height / 2)], 1)
    centres = np.array([[0, 0, -height / 2], [0, 0, height / 2]])
    verts = np.concatenate([bottom, top, centres])
    u = ang / (2 * np.pi)
    uvs = np.concatenate([np.stack([u, np.ones_like(u)], 1), np.stack([u, np.zeros_like(u)], 1),
                          [[0.5, 0.5], [0.5, 0.5]]])
    n, cb, ct = segments + 1, 2 * segments + 2, 2 * segments + 3
    faces = []
    for i in range(segments):
        faces += [(i, i + 1, n + i + 1), (i, n + i + 1, n + i), (cb, i + 1, i), (ct, n + i, n + i + 1)]
    mat = PbrMaterial(base_color_texture=checker_texture(32, 4, alpha_hole=False), metallic_factor=0.0,
                      roughness_factor=0.6)
    return TriangleMesh(verts, np.asarray(faces, dtype=np.int64), uvs=uvs, materials=[mat])


@pytest.fixture(scope="module")
def mesh_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("meshes")
    write_glb(folder / "box.glb", z_up_to_y_up(textured_box()))
    write_glb(folder / "cylinder.glb", z_up_to_y_up(_textured_cylinder()))
    (folder / "corrupt.glb").write_bytes(b"glTF\x02\x00\x00\x00garbage, not a real binary glTF")
    (folder / "split.json").write_text(json.dumps({"train": ["box", "corrupt"], "test": ["cylinder"]}))
    return folder


def _options(mesh_dir: Path, out: Path, **kw) -> PrepareOptions:
    base = dict(input_dir=mesh_dir, output_dir=out, resolution=RES, views=VIEWS, render_size=SIZE,
                supersample=1, workers=1, device="cpu")
    return PrepareOptions(**{**base, **kw})


@pytest.fixture(scope="module")
def prepared(mesh_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data")
    summary = prepare_dataset(_options(mesh_dir, out, workers=2))
    assert (summary.done, summary.skipped, summary.failed, summary.total) == (2, 0, 1, 3)
    return out


def test_prepare_writes_records_ovoxels_and_renders(prepared, mesh_dir):
    from backend.ovoxel.io import load_ovoxel

    layout = DataLayout(prepared)
    records = {r["id"]: r for r in map(json.loads, layout.metadata.read_text().splitlines())}
    assert list(records) == ["box", "corrupt", "cylinder"]
    assert records["box"]["split"] == "train" and records["cylinder"]["split"] == "test"
    for asset_id in ("box", "cylinder"):
        rec = records[asset_id]
        assert rec["status"] == "ok" and rec["error"] is None
        assert rec["resolution"] == RES and rec["views"] == VIEWS and rec["num_faces"] > 0
        assert rec["source"] == str(mesh_dir / f"{asset_id}.glb")
        assert len(rec["normalization"]["center"]) == 3 and rec["normalization"]["scale"] > 0
        ov = load_ovoxel(layout.ovoxel(RES, asset_id))
        assert ov.num_voxels == rec["num_voxels"] > 0 and ov.attributes is not None
        # Training sets are read every step: stored, not deflated.
        with zipfile.ZipFile(layout.ovoxel(RES, asset_id)) as zf:
            assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}
        # The sparse-structure occupancy the SS VAE reads: the 64^3 cells holding any voxel.
        with np.load(layout.ss_occupancy(asset_id)) as f:
            cells = f["cells"]
        expected = np.unique(ov.coords // (RES // 64), axis=0)
        assert cells.dtype == np.uint8 and np.array_equal(cells, expected)
        transforms = json.loads(layout.transforms(asset_id).read_text())
        assert [v["file"] for v in transforms["views"]] == ["000.png", "001.png"]
        for view in transforms["views"]:
            assert view["fov"] == pytest.approx(2 * math.asin(math.sqrt(3) / 2 / view["radius"]))
            c2w = np.array(view["camera_to_world"])
            assert c2w.shape == (4, 4) and np.linalg.norm(c2w[:3, 3]) == pytest.approx(view["radius"])
            img = np.asarray(Image.open(layout.renders(asset_id) / view["file"]))
            assert img.shape == (SIZE, SIZE, 4)
            assert img[0, 0, 3] == 0 and img[-1, -1, 3] == 0  # transparent background
            obj = img[..., 3] > 0
            assert obj.sum() > 20 and img[obj][:, :3].max() > 0
    # The cylinder is Z-up after reading the Y-up glTF: taller (Z) than wide.
    cyl = load_ovoxel(layout.ovoxel(RES, "cylinder"))
    extent = cyl.coords.max(0) - cyl.coords.min(0)
    assert extent[2] > extent[0] and extent[2] > extent[1]
    bad = records["corrupt"]
    assert bad["status"] == "failed" and "corrupt.glb" in bad["error"]
    stats = json.loads(layout.statistics.read_text())
    assert stats["counts"] == {"total": 3, "ok": 2, "failed": 1, "train": 1, "test": 1}
    assert stats["voxels"]["max"] == max(records["box"]["num_voxels"], records["cylinder"]["num_voxels"])
    assert "ovoxel" in stats["timing_seconds"] and "render" in stats["timing_seconds"]


def test_rerun_skips_finished_assets_and_retries_failed(prepared, mesh_dir):
    summary = prepare_dataset(_options(mesh_dir, prepared))
    assert (summary.done, summary.skipped, summary.failed) == (0, 2, 1)


def test_ranks_cover_disjoint_halves(mesh_dir, tmp_path):
    seen = []
    for rank in (0, 1):
        out = tmp_path / f"rank{rank}"
        prepare_dataset(_options(mesh_dir, out, rank=rank, world_size=2))
        ids = sorted(p.stem for p in DataLayout(out).records_dir.glob("*.json"))
        assert not DataLayout(out).metadata.exists()  # world size > 1: merge runs separately
        seen.append(ids)
    assert seen == [["box", "cylinder"], ["corrupt"]]  # sorted list [box, corrupt, cylinder], i % 2


def test_empty_folder_is_one_clear_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no meshes here")
    with pytest.raises(DataToolkitError, match="empty.*no mesh files"):
        prepare_dataset(_options(empty, tmp_path / "out"))
    assert cli_main(["prepare", "--input", str(empty), "--output", str(tmp_path / "out")]) == 2


class _StandInSparseStructureEncoder(torch.nn.Module):
    """[B, 1, 64, 64, 64] -> [B, 8, 16, 16, 16], for when the real class is not available."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 8, kernel_size=4, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _ss_encoder(ckpts: Path) -> Encoder:
    """A tiny random SparseStructureEncoder checkpoint, or a stand-in where the class is missing."""
    from backend.models.registry import known_model_names
    from backend.models.tiny_checkpoint import write_checkpoint
    from backend.train.data import load_encoder

    if "SparseStructureEncoder" not in known_model_names():
        return Encoder("ss_enc_standin", _StandInSparseStructureEncoder().eval())
    write_checkpoint(ckpts, "ss_enc_tiny", "SparseStructureEncoder", {
        "in_channels": 1, "latent_channels": 8, "num_res_blocks": 1, "num_res_blocks_middle": 1,
        "channels": [8, 8, 16], "use_fp16": True})
    return load_encoder(ckpts / "ss_enc_tiny", "cpu")


def test_encode_writes_latents_with_matching_coords_and_stats(prepared, tmp_path):
    from backend.models.tiny_checkpoint import TINY_MODELS, write_checkpoint
    from backend.train.data import load_encoder

    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for stem in ("shape_enc_next_dc_f16c32_fp16", "tex_enc_next_dc_f16c32_fp16"):
            write_checkpoint(ckpts, stem, *TINY_MODELS[stem])
        ss = _ss_encoder(ckpts)
    shape = load_encoder(ckpts / "shape_enc_next_dc_f16c32_fp16", "cpu")
    pbr = load_encoder(ckpts / "tex_enc_next_dc_f16c32_fp16", "cpu")
    summary = encode_dataset(prepared, shape, pbr, ss, device="cpu", batch=2)
    assert (summary.done, summary.skipped) == (2, 0)

    layout = DataLayout(prepared)
    for asset_id in ("box", "cylinder"):
        with np.load(layout.latent("shape", shape.name, asset_id)) as s, \
                np.load(layout.latent("pbr", pbr.name, asset_id)) as p:
            assert s["feats"].dtype == np.float32 and s["feats"].shape[1] == 32
            assert s["coords"].dtype == np.int16 and s["coords"].shape == (len(s["feats"]), 3)
            assert np.array_equal(s["coords"], p["coords"]) and p["feats"].shape == s["feats"].shape
            assert s["coords"].min() >= 0 and s["coords"].max() < RES // 16
            tokens = len(s["feats"])
        with np.load(layout.latent("ss", ss.name, asset_id)) as z:
            assert z["z"].shape == (8, 16, 16, 16) and z["z"].dtype == np.float32
        rec = json.loads(layout.record(asset_id).read_text())
        assert rec["shape_latent_tokens"][shape.name] == tokens
    stats = json.loads(layout.latent_stats.read_text())
    assert stats["encoders"]["shape"] == shape.name and stats["encoders"]["pbr"] == pbr.name
    with np.load(layout.latent("shape", shape.name, "box")) as s:  # train split = the box only
        assert np.allclose(stats["shape"]["mean"], s["feats"].mean(0), atol=1e-5)
        assert np.allclose(stats["shape"]["std"], s["feats"].std(0), atol=1e-5)
    assert len(stats["pbr"]["mean"]) == 32 and len(stats["pbr"]["std"]) == 32

    # The CLI loads checkpoints by stem; everything is already encoded, so it only re-merges.
    assert cli_main(["encode", "--data", str(prepared), "--device", "cpu",
                     "--shape-encoder", str(ckpts / "shape_enc_next_dc_f16c32_fp16"),
                     "--pbr-encoder", str(ckpts / "tex_enc_next_dc_f16c32_fp16")]) == 0
    assert merge_records(prepared)["counts"]["ok"] == 2


def test_extra_resolutions_write_more_grids_the_vae_datasets_can_read(mesh_dir, tmp_path):
    from backend.ovoxel.io import load_ovoxel
    from backend.train.datasets import DataError, DatasetArgs, FlexiDualGridDataset

    out = tmp_path / "data"
    summary = prepare_dataset(_options(mesh_dir, out, resolution=128, extra_resolutions=(64,), views=1))
    assert summary.done == 2
    layout = DataLayout(out)
    rec = layout.read_record("box")
    assert rec["resolution"] == 128
    assert rec["extra_voxels"]["64"] == load_ovoxel(layout.ovoxel(64, "box")).num_voxels
    assert rec["extra_voxels"]["64"] < rec["num_voxels"]
    # The 64^3 occupancy comes from the main grid.
    main = load_ovoxel(layout.ovoxel(128, "box"))
    with np.load(layout.ss_occupancy("box")) as f:
        assert np.array_equal(f["cells"], np.unique(main.coords // 2, axis=0))
    coarse = FlexiDualGridDataset(out, DatasetArgs(resolution=64))
    assert coarse.tokens(0) == rec["extra_voxels"]["64"]
    assert len(coarse.collate([0], 0)["vertices"]) == rec["extra_voxels"]["64"]
    with pytest.raises(DataError, match="--extra-resolutions 256"):
        FlexiDualGridDataset(out, DatasetArgs(resolution=256))
    # A re-run asking for a grid the records lack redoes those assets.
    again = prepare_dataset(_options(mesh_dir, out, resolution=128, extra_resolutions=(64, 256), views=1))
    assert again.done == 2 and layout.ovoxel(256, "box").is_file()


def test_encode_occupancy_grid_is_the_prepared_ss_occupancy(prepared):
    from backend.train.data.encode import _load_ovoxel, occupancy_grid

    layout = DataLayout(prepared)
    records = [json.loads(layout.record(a).read_text()) for a in ("box", "cylinder")]
    grid = occupancy_grid([_load_ovoxel(layout, r) for r in records], torch.device("cpu"))
    for b, asset_id in enumerate(("box", "cylinder")):
        with np.load(layout.ss_occupancy(asset_id)) as f:
            cells = f["cells"].astype(np.int64)
        expected = torch.zeros(64, 64, 64)
        expected[cells[:, 0], cells[:, 1], cells[:, 2]] = 1.0
        assert torch.equal(grid[b, 0], expected) and expected.sum() > 0
