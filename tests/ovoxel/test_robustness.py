"""Bad input fails clearly and writes nothing; odd-but-valid input works; the file format round-trips."""

from __future__ import annotations

import numpy as np
import pytest

from backend.geometry import MeshError, TriangleMesh
from backend.geometry.topology import boundary_edges, orient_faces
from backend.ovoxel import (
    OVoxelError,
    load_ovoxel,
    mesh_to_ovoxel,
    normalize_to_unit_cube,
    ovoxel_to_mesh,
    save_ovoxel,
)
from backend.ovoxel.cleanup import fill_holes
from tests.fixtures.meshes import box, open_sheet, uv_sphere


def test_no_faces_nan_and_resolution_errors(tmp_path):
    with pytest.raises(MeshError):
        mesh_to_ovoxel(TriangleMesh(np.zeros((3, 3)), np.zeros((0, 3), dtype=np.int64)), 64)
    bad = uv_sphere(rings=4, segments=6)
    bad.vertices[0, 0] = np.nan
    with pytest.raises(MeshError):
        mesh_to_ovoxel(bad, 64)
    for res in (32, 4096, 100.5):
        with pytest.raises(OVoxelError):
            mesh_to_ovoxel(box(), res)
    assert issubclass(OVoxelError, ValueError)


def test_degenerate_and_duplicate_triangles():
    m = box()
    extra = np.array([[0, 0, 0], [0, 1, 1], [2, 2, 5]])  # collapsed / repeated-vertex triangles
    dup = TriangleMesh(m.vertices, np.concatenate([m.faces, m.faces[:4], extra]))
    a, b = mesh_to_ovoxel(m, 64, attributes=False), mesh_to_ovoxel(dup, 64, attributes=False)
    np.testing.assert_array_equal(a.coords, b.coords)
    # duplicates double their faces' weight against the regulariser: tiny shifts only
    np.testing.assert_allclose(a.dual_vertices, b.dual_vertices, atol=0.02)


def test_normalize_to_unit_cube():
    m = uv_sphere()
    m.vertices = m.vertices * 7 + np.array([3.0, -2.0, 10.0])
    n, t = normalize_to_unit_cube(m)
    lo, hi = n.bounds()
    assert np.abs(lo + hi).max() < 1e-9 and abs((hi - lo).max() - 0.99999) < 1e-9
    np.testing.assert_allclose(t.invert(n.vertices), m.vertices)


def test_npz_roundtrip_and_validation(tmp_path):
    ov = mesh_to_ovoxel(box(), 64)
    path = tmp_path / "a.npz"
    save_ovoxel(path, ov)
    back = load_ovoxel(path)
    np.testing.assert_array_equal(back.coords, ov.coords)
    np.testing.assert_array_equal(back.intersected, ov.intersected)
    np.testing.assert_allclose(back.attributes, ov.attributes, atol=0.5 / 255 + 1e-6)
    np.savez(tmp_path / "b.npz", coords=ov.coords)
    with pytest.raises(OVoxelError):
        load_ovoxel(tmp_path / "b.npz")
    ov.dual_vertices = ov.dual_vertices[:-1]
    with pytest.raises(OVoxelError):
        save_ovoxel(tmp_path / "c.npz", ov)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "b.npz"]


def test_orientation_and_hole_filling():
    out = ovoxel_to_mesh(mesh_to_ovoxel(uv_sphere(), 64, attributes=False), orient=True)
    p = out.vertices[out.faces]
    n = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    assert (np.einsum("ij,ij->i", n, p.mean(1)) > 0).mean() > 0.999  # all outward
    raw = ovoxel_to_mesh(mesh_to_ovoxel(uv_sphere(), 64, attributes=False))
    holed = TriangleMesh(raw.vertices, raw.faces[5:])  # punch a small hole
    assert len(boundary_edges(holed.faces)) > 0
    assert len(boundary_edges(fill_holes(holed, 0.2).faces)) == 0  # hole perimeter ~ 6 voxels = 0.1
    assert len(boundary_edges(fill_holes(holed, 1e-6).faces)) > 0
    sheet = ovoxel_to_mesh(mesh_to_ovoxel(open_sheet(), 64, attributes=False))
    assert len(boundary_edges(fill_holes(sheet, 0.03).faces)) > 0  # the sheet's own rim stays open
    assert orient_faces(sheet.vertices, sheet.faces).shape == sheet.faces.shape


def test_decode_keeps_unreferenced_on_request():
    ov = mesh_to_ovoxel(box(), 64, attributes=False)
    full = ovoxel_to_mesh(ov, drop_unreferenced=False)
    assert full.num_vertices == ov.num_voxels
    assert ovoxel_to_mesh(ov).num_vertices <= ov.num_voxels


def test_split_weights_choose_diagonal():
    ov = mesh_to_ovoxel(box(), 64, attributes=False)
    ov.split_weight = np.ones(ov.num_voxels, dtype=np.float32)
    a = ovoxel_to_mesh(ov, drop_unreferenced=False)
    ov.split_weight = np.linspace(1, 2, ov.num_voxels, dtype=np.float32) ** 3
    b = ovoxel_to_mesh(ov, drop_unreferenced=False)
    assert a.num_faces == b.num_faces and not np.array_equal(np.sort(a.faces, 1), np.sort(b.faces, 1))
