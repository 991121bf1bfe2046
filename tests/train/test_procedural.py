"""Procedural training objects: determinism, kinds, mesh sanity, GLB round trip and the data set writer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backend.meshio import build_glb, read_mesh, y_up_to_z_up, z_up_to_y_up
from backend.train.procedural import (
    CATEGORIES,
    KIND_NAMES,
    generate_object,
    held_out_indices,
    kind_of,
    write_dataset,
)
from backend.train.procedural.builder import MIN_FACES, OBJECT_EXTENT
from backend.train.procedural.primitives import box, cylinder, extrude, sphere, torus

SEED = 11
SAMPLE = 200
MAX_FACES = 20_000


@pytest.fixture(scope="module")
def sample():
    return [generate_object(i, SEED) for i in range(SAMPLE)]


def _signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    v = vertices[faces].astype(np.float64)
    return float(np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum() / 6.0)


def test_same_seed_and_index_give_identical_arrays_and_glb_bytes():
    a, b = generate_object(37, SEED), generate_object(37, SEED)
    for name in ("vertices", "faces", "uvs", "normals", "face_materials"):
        x, y = getattr(a.mesh, name), getattr(b.mesh, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name
    for ma, mb in zip(a.mesh.materials, b.mesh.materials, strict=True):
        assert np.array_equal(ma.base_color_texture, mb.base_color_texture)
    assert build_glb(z_up_to_y_up(a.mesh)) == build_glb(z_up_to_y_up(b.mesh))


def test_different_indices_and_seeds_differ():
    base = generate_object(5, SEED).mesh
    for other in (generate_object(6, SEED).mesh, generate_object(5, SEED + 1).mesh):
        same = other.vertices.shape == base.vertices.shape and np.array_equal(other.vertices, base.vertices)
        assert not same


def test_every_kind_appears_and_each_block_is_balanced(sample):
    kinds = [(o.category, o.name) for o in sample]
    assert set(kinds) == set(KIND_NAMES)
    assert {o.category for o in sample} == set(CATEGORIES)
    first_block = kinds[: len(KIND_NAMES)]
    assert sorted(first_block) == sorted(KIND_NAMES)
    assert all(kind_of(o.index, SEED) == (o.category, o.name) for o in sample)


def test_meshes_are_valid_finite_centred_closed_and_in_budget(sample):
    for o in sample:
        m = o.mesh.validate()
        assert m.vertices.dtype == np.float32 and np.isfinite(m.vertices).all()
        assert np.isfinite(m.uvs).all() and np.isfinite(m.normals).all()
        lo, hi = m.bounds()
        assert np.all(lo >= -0.5) and np.all(hi <= 0.5), o.name
        assert np.isclose(float(np.max(hi - lo)), OBJECT_EXTENT, atol=1e-5)
        assert MIN_FACES <= m.num_faces <= MAX_FACES, (o.name, m.num_faces)
        assert o.part_count >= 1 and m.materials, o.name
        assert all(mat.base_color_texture is not None for mat in m.materials)
        # Outward-facing closed parts enclose a positive volume.
        assert _signed_volume(m.vertices, m.faces) > 0, o.name
    assert np.mean([len(o.mesh.materials) >= 2 for o in sample]) >= 0.75


def test_objects_stand_upright(sample):
    # Tall kinds must be taller (z) than they are wide: this catches a Y-up / Z-up mix-up.
    for o in sample:
        if o.name in ("bottle", "lamp", "screwdriver", "rocket", "tower", "wrench", "hammer"):
            lo, hi = o.mesh.bounds()
            size = hi - lo
            assert size[2] >= max(size[0], size[1]), (o.index, o.name, size)


def test_sample_has_translucent_metallic_and_textured_materials(sample):
    mats = [m for o in sample for m in o.mesh.materials]
    blend = [m for m in mats if m.alpha_mode == "BLEND"]
    assert len(blend) >= 10 and all(m.base_color_factor[3] < 1.0 for m in blend)

    def effective_metallic(m):
        tex = m.metallic_roughness_texture
        return m.metallic_factor * (1.0 if tex is None else float(tex[..., 2].mean()) / 255.0)

    assert sum(effective_metallic(m) > 0.5 for m in mats) >= 20
    assert sum(m.roughness_factor < 0.3 and m.metallic_roughness_texture is None for m in mats) >= 20
    assert sum(m.metallic_roughness_texture is not None for m in mats) >= 10
    assert len({m.base_color_texture.shape[0] for m in mats}) >= 2


def test_primitives_enclose_their_volume_outward():
    for part, volume in ((box(1.0, 2.0, 3.0), 6.0), (cylinder(1.0, 2.0, 256), 2 * np.pi),
                         (sphere(1.0, 256, 128), 4 / 3 * np.pi), (torus(2.0, 0.5, 256, 128), np.pi ** 2),
                         (extrude([[0, 0], [2, 0], [2, 2], [1, 1], [0, 2]], 1.0), 3.0)):
        assert _signed_volume(part.vertices, part.faces) == pytest.approx(volume, rel=2e-3)


@pytest.mark.parametrize("part", [box(1.0, 2.0, 3.0), cylinder(1.0, 2.0, 12, bevel=0.2), sphere(1.0, 12, 6),
                                  torus(2.0, 0.5, 12, 6),
                                  extrude([[0, 0], [2, 0], [2, 2], [1, 1], [0, 2]], 1.0)])
def test_primitives_are_closed(part):
    # Closed: every directed edge has a partner with the same end points in the opposite direction.
    key = [tuple(p) for p in np.round(part.vertices, 9)]
    edges = {(key[a], key[b]) for f in part.faces for a, b in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0]))}
    assert all((b, a) in edges for a, b in edges)


def test_held_out_split_is_fixed_balanced_and_disjoint():
    test = held_out_indices(180, SEED, 36)
    assert test == held_out_indices(180, SEED, 36)
    assert len(test) == len(set(test)) == 36 and all(0 <= i < 180 for i in test)
    counts = {k: 0 for k in KIND_NAMES}
    for i in test:
        counts[kind_of(i, SEED)] += 1
    assert set(counts.values()) == {2}
    assert held_out_indices(180, SEED + 1, 36) != test


def test_glb_round_trip_gives_the_z_up_mesh_and_materials(tmp_path):
    summary = write_dataset(tmp_path, 3, SEED, 1)
    assert summary.written == 3
    for i in range(3):
        original = generate_object(i, SEED).mesh
        back = y_up_to_z_up(read_mesh(tmp_path / f"proc_{i:06d}.glb"))
        # The writer emits one primitive per material, so compare as sorted triangle soups.
        soup_a = np.sort(original.vertices[original.faces].reshape(-1, 9), axis=0)
        soup_b = np.sort(back.vertices[back.faces].reshape(-1, 9), axis=0)
        np.testing.assert_allclose(soup_b, soup_a, atol=1e-6)
        assert back.num_faces == original.num_faces
        np.testing.assert_allclose(np.stack(back.bounds()), np.stack(original.bounds()), atol=1e-6)
        assert len(back.materials) == len(original.materials)
        for ma, mb in zip(original.materials, back.materials, strict=True):
            assert mb.alpha_mode == ma.alpha_mode
            assert mb.base_color_factor == pytest.approx(ma.base_color_factor)
            assert np.array_equal(mb.base_color_texture, ma.base_color_texture)
            assert (mb.metallic_roughness_texture is None) == (ma.metallic_roughness_texture is None)


def test_cli_writes_files_split_and_records_then_skips(tmp_path: Path):
    out = tmp_path / "set"
    cmd = [sys.executable, "-m", "backend.train.procedural", "--output", str(out), "--count", "6",
           "--seed", str(SEED), "--test-count", "2"]
    root = Path(__file__).resolve().parents[2]
    first = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=True)
    assert "6 written, 0 skipped" in first.stdout
    glbs = sorted(p.name for p in out.glob("*.glb"))
    assert glbs == [f"proc_{i:06d}.glb" for i in range(6)]
    split = json.loads((out / "split.json").read_text())
    assert split["seed"] == SEED and len(split["test"]) == 2 and len(split["train"]) == 4
    assert not set(split["test"]) & set(split["train"])
    records = [json.loads(line) for line in (out / "objects.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [f"proc_{i:06d}" for i in range(6)]
    assert all(r["faces"] >= MIN_FACES and r["materials"] and r["category"] in CATEGORIES for r in records)
    stamp = (out / "proc_000003.glb").stat().st_mtime_ns
    (out / "proc_000004.glb").unlink()
    second = subprocess.run(cmd + ["--workers", "2"], cwd=root, capture_output=True, text=True, check=True)
    assert "1 written, 5 skipped" in second.stdout
    assert (out / "proc_000003.glb").stat().st_mtime_ns == stamp
    assert json.loads((out / "split.json").read_text()) == split
    assert not list(out.glob(".*.tmp"))
