"""GLB writer/readers: read back with our reader and with trimesh; OBJ/PLY readers; atomic writes."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import trimesh

from backend.geometry import MeshError, PbrMaterial, TriangleMesh
from backend.meshio import read_mesh, write_glb, y_up_to_z_up, z_up_to_y_up
from tests.fixtures.meshes import textured_box, uv_sphere


def _full_mesh() -> TriangleMesh:
    m = textured_box()
    rng = np.random.default_rng(0)
    m.normals = rng.normal(size=(m.num_vertices, 3))
    m.vertex_colors = rng.random((m.num_vertices, 4))
    second = PbrMaterial(name="mask", base_color_factor=(0.1, 0.2, 0.3, 0.9), metallic_factor=0.25,
                         roughness_factor=0.75, alpha_mode="MASK", alpha_cutoff=0.3, double_sided=True)
    m.materials.append(second)
    m.face_materials = np.arange(m.num_faces) % 2
    return m


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_glb_roundtrip_own_reader(tmp_path, fmt):
    m = _full_mesh()
    path = tmp_path / f"m_{fmt}.glb"
    write_glb(path, m, texture_format=fmt)
    r = read_mesh(path)
    order = np.argsort(r.face_materials, kind="stable")
    src_order = np.argsort(m.face_materials, kind="stable")
    np.testing.assert_allclose(r.vertices[r.faces[order]], m.vertices[m.faces[src_order]], atol=1e-6)
    # primitives share accessors in the file; the reader gives each primitive its own vertices
    rf, mf = r.faces[order], m.faces[src_order]
    np.testing.assert_allclose(r.uvs[rf], m.uvs[mf], atol=1e-7)
    np.testing.assert_allclose(r.vertex_colors[rf], m.vertex_colors[mf], atol=1e-6)
    n = m.normals / np.linalg.norm(m.normals, axis=1, keepdims=True)
    np.testing.assert_allclose(r.normals[rf], n[mf], atol=1e-6)
    a, b = r.materials
    assert a.alpha_mode == "BLEND" and b.alpha_mode == "MASK" and b.double_sided
    assert b.alpha_cutoff == pytest.approx(0.3) and b.metallic_factor == pytest.approx(0.25)
    np.testing.assert_array_equal(a.base_color_texture, m.materials[0].base_color_texture)
    np.testing.assert_array_equal(a.metallic_roughness_texture, m.materials[0].metallic_roughness_texture)
    assert list(r.face_materials[order]) == list(m.face_materials[src_order])


def test_glb_structure_and_trimesh(tmp_path):
    path = tmp_path / "m.glb"
    write_glb(path, _full_mesh())
    data = path.read_bytes()
    magic, version, length = struct.unpack_from("<4sII", data)
    assert (magic, version, length) == (b"glTF", 2, len(data))
    jlen, jtype = struct.unpack_from("<II", data, 12)
    assert jtype == 0x4E4F534A and jlen % 4 == 0
    doc = json.loads(data[20:20 + jlen])
    assert doc["asset"]["version"] == "2.0"
    for v in doc["bufferViews"]:
        assert v["byteOffset"] % 4 == 0
    pos = doc["accessors"][doc["meshes"][0]["primitives"][0]["attributes"]["POSITION"]]
    assert "min" in pos and "max" in pos
    scene = trimesh.load(path, force="scene")
    assert sum(len(g.faces) for g in scene.geometry.values()) == 12
    tex = [g.visual.material.baseColorTexture for g in scene.geometry.values()
           if getattr(g.visual.material, "baseColorTexture", None) is not None]
    assert tex and tex[0].size == (64, 64)


def test_invalid_mesh_writes_nothing(tmp_path):
    bad = TriangleMesh(np.zeros((3, 3)), np.zeros((0, 3), dtype=np.int64))
    with pytest.raises(MeshError):
        write_glb(tmp_path / "x.glb", bad)
    with pytest.raises(ValueError):
        write_glb(tmp_path / "y.glb", uv_sphere(), texture_format="gif")
    assert list(tmp_path.iterdir()) == []


def test_obj_and_ply_readers(tmp_path):
    s = uv_sphere(rings=8, segments=12)
    t = trimesh.Trimesh(s.vertices, s.faces, process=False)
    for name in ("s.obj", "s.ply"):
        t.export(tmp_path / name)
        r = read_mesh(tmp_path / name)
        assert r.num_faces == s.num_faces
        np.testing.assert_allclose(np.sort(r.vertices, 0), np.sort(s.vertices, 0), atol=1e-6)
    (tmp_path / "q.obj").write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\n"
                                    "f 1/1 2/2 3/3 4/4\n")
    q = read_mesh(tmp_path / "q.obj")
    assert q.num_faces == 2 and q.uvs[:, 1].max() == 1.0
    with pytest.raises(MeshError):
        read_mesh(tmp_path / "missing.glb")
    (tmp_path / "e.obj").write_text("v 0 0 0\n")
    with pytest.raises(MeshError):
        read_mesh(tmp_path / "e.obj")


def test_axis_conversion_roundtrip():
    m = uv_sphere(center=(0.1, 0.0, 0.0))
    y = z_up_to_y_up(m)
    np.testing.assert_allclose(y.vertices[:, 1], m.vertices[:, 2])
    np.testing.assert_allclose(y_up_to_z_up(y).vertices, m.vertices, atol=1e-12)
