"""``python -m backend ovoxel encode|decode``: the round trip keeps the input's frame and scale (within
0.75 voxel mean Chamfer both ways at 256) and leaves open surfaces open, bad output paths fail with one
clear error and write nothing, and the file schema stays compatible."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from scipy.spatial import cKDTree

from backend.__main__ import main
from backend.geometry import TriangleMesh
from backend.geometry.topology import boundary_edges
from backend.meshio import read_mesh, write_glb
from backend.ovoxel import OVoxelError, load_ovoxel, mesh_to_ovoxel, save_ovoxel
from tests.fixtures.meshes import box, open_sheet, uv_sphere
from tests.ovoxel.metrics import boundary_points, point_mesh_distance, sample_surface

RESOLUTION = 256


def cylinder(radius: float, height: float, center, segments: int = 48, rings: int = 8) -> TriangleMesh:
    """A closed cylinder along the file's Y axis (glTF up), capped with centre fans."""
    phi = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    ys = np.linspace(-height / 2, height / 2, rings + 1)
    ring = np.stack([np.cos(phi) * radius, np.zeros(segments), np.sin(phi) * radius], 1)
    verts = [ring + [0, y, 0] for y in ys]
    verts = np.concatenate(verts + [[[0, ys[0], 0]], [[0, ys[-1], 0]]])
    faces = []
    for r in range(rings):
        for s in range(segments):
            a, b = r * segments + s, r * segments + (s + 1) % segments
            c, d = b + segments, a + segments
            faces += [(a, c, b), (a, d, c)]
    bottom, top = len(verts) - 2, len(verts) - 1
    last = rings * segments
    for s in range(segments):
        faces.append((bottom, s, (s + 1) % segments))
        faces.append((top, last + (s + 1) % segments, last + s))
    return TriangleMesh(verts + np.asarray(center, dtype=np.float64), np.asarray(faces, dtype=np.int64))


def merge(*meshes: TriangleMesh) -> TriangleMesh:
    verts, faces, n = [], [], 0
    for m in meshes:
        verts.append(m.vertices)
        faces.append(m.faces + n)
        n += len(m.vertices)
    return TriangleMesh(np.concatenate(verts), np.concatenate(faces))


def write_obj(path, mesh: TriangleMesh) -> None:
    # float(): numpy 2 writes the repr of an np.float64 as "np.float64(...)".
    lines = [f"v {float(x)!r} {float(y)!r} {float(z)!r}" for x, y, z in mesh.vertices]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in mesh.faces]
    path.write_text("\n".join(lines) + "\n")


def glb_scene(path) -> TriangleMesh:
    """Off-centre, non-unit-scale box + cylinder in glTF's Y-up frame; tall along Y, so an axis mix-up
    shows. The cylinder's axis is Y (up in the file)."""
    b = box(size=(1.2, 3.0, 0.8), subdivisions=4, center=(5.0, 12.0, -3.0))
    c = cylinder(radius=0.5, height=2.2, center=(6.5, 11.5, -2.5))
    mesh = merge(b, c)
    write_glb(path, mesh)
    return mesh


def obj_scene(path) -> TriangleMesh:
    s = uv_sphere(radius=1.0, rings=24, segments=48)
    mesh = TriangleMesh(s.vertices * [0.02, 0.05, 0.03] + [-0.3, 0.9, 0.1], s.faces)  # small, tall in Y
    write_obj(path, mesh)
    return mesh


def open_scene(path) -> TriangleMesh:
    """A wavy open sheet lying flat in the file's Y-up frame (waves along Y), off-centre and 3 units
    across: one boundary loop that must survive."""
    s = open_sheet(size=1.0, resolution=32, amplitude=0.1)
    x, y, z = s.vertices.T
    mesh = TriangleMesh(np.stack([x, y, z], 1)[:, [0, 2, 1]] * 3.0 + [2.0, -4.0, 7.5], s.faces)
    write_glb(path, mesh)
    return mesh


@pytest.mark.parametrize("make, suffix", [(glb_scene, ".glb"), (obj_scene, ".obj"), (open_scene, ".glb")])
def test_encode_decode_keeps_the_input_frame_and_scale(tmp_path, make, suffix):
    src = tmp_path / f"in{suffix}"
    expected = make(src)
    assert main(["ovoxel", "encode", str(src), str(tmp_path / "x.npz"), "--resolution", str(RESOLUTION),
                 "--no-attributes"]) == 0
    assert main(["ovoxel", "decode", str(tmp_path / "x.npz"), str(tmp_path / "out.glb")]) == 0
    got = read_mesh(tmp_path / "out.glb")  # raw file coordinates, like the input's

    lo, hi = expected.bounds()
    voxel = float(np.max(hi - lo)) / RESOLUTION
    glo, ghi = got.bounds()
    assert np.abs(glo - lo).max() < 1.5 * voxel, (glo, lo)
    assert np.abs(ghi - hi).max() < 1.5 * voxel, (ghi, hi)
    rng = np.random.default_rng(0)
    p_in, _ = sample_surface(expected, 20000, rng)
    p_out, _ = sample_surface(got, 20000, rng)
    to_out = point_mesh_distance(p_in, got)[0].mean()
    to_in = point_mesh_distance(p_out, expected, k=64)[0].mean()
    assert to_out < 0.75 * voxel and to_in < 0.75 * voxel, (to_out / voxel, to_in / voxel)
    src_edge = boundary_points(expected, spacing=0.25 * voxel)
    if len(src_edge) == 0:
        assert len(boundary_edges(got.faces)) == 0, "a closed input must come back closed"
    else:  # an open input comes back open, its boundary where the input's is
        distance, _ = cKDTree(boundary_points(got)).query(src_edge)
        assert distance.max() < 1.5 * voxel, distance.max() / voxel


def test_frame_is_stored_and_validated(tmp_path):
    src = tmp_path / "in.glb"
    glb_scene(src)
    npz = tmp_path / "x.npz"
    assert main(["ovoxel", "encode", str(src), str(npz), "--resolution", "64", "--no-attributes"]) == 0
    from backend.ovoxel.io import read_ovoxel_file

    ov, frame = read_ovoxel_file(npz)
    assert frame is not None and frame.up_axis == "y" and frame.normalization.scale > 0
    # the voxels are the same as load_ovoxel's; older files (no frame keys) still load, without a frame
    np.testing.assert_array_equal(load_ovoxel(npz).coords, ov.coords)
    legacy = tmp_path / "legacy.npz"
    save_ovoxel(legacy, mesh_to_ovoxel(box(), 64, attributes=False))
    assert read_ovoxel_file(legacy)[1] is None
    with np.load(npz) as z:
        data = dict(z)
    for key, bad in [("source_scale", np.array(-1.0)), ("source_up", np.array("w")),
                     ("source_center", np.array([1.0, np.nan, 0.0])), ("source_center", np.zeros(2))]:
        np.savez(tmp_path / "bad.npz", **{**data, key: bad})
        with pytest.raises(OVoxelError, match=key):
            load_ovoxel(tmp_path / "bad.npz")
    partial = {k: v for k, v in data.items() if k != "source_scale"}
    np.savez(tmp_path / "bad.npz", **partial)
    with pytest.raises(OVoxelError, match="source_scale"):
        load_ovoxel(tmp_path / "bad.npz")


def test_legacy_file_decodes_in_the_unit_cube(tmp_path):
    save_ovoxel(tmp_path / "legacy.npz", mesh_to_ovoxel(box(), 64, attributes=False))
    assert main(["ovoxel", "decode", str(tmp_path / "legacy.npz"), str(tmp_path / "out.glb")]) == 0
    lo, hi = read_mesh(tmp_path / "out.glb").bounds()
    # box (0.6, 0.5, 0.4) Z-up written as glTF Y-up: (x, z, -y)
    np.testing.assert_allclose(hi - lo, [0.6, 0.4, 0.5], atol=2 / 64)


def test_encode_into_missing_folder_is_one_clear_error(tmp_path, caplog):
    src = tmp_path / "in.obj"
    obj_scene(src)
    out = tmp_path / "no" / "such" / "x.npz"
    with caplog.at_level(logging.ERROR):
        rc = main(["ovoxel", "encode", str(src), str(out), "--resolution", "64"])
    assert rc == 2
    assert str(out.parent) in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.obj"]


def test_decode_refuses_other_extensions_and_missing_folders(tmp_path, caplog):
    npz = tmp_path / "x.npz"
    save_ovoxel(npz, mesh_to_ovoxel(box(), 64, attributes=False))
    for name in ("y.obj", "y.ply", "y"):
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            assert main(["ovoxel", "decode", str(npz), str(tmp_path / name)]) == 2
        assert ".glb" in caplog.text and name in caplog.text
    caplog.clear()
    out = tmp_path / "missing" / "y.glb"
    with caplog.at_level(logging.ERROR):
        assert main(["ovoxel", "decode", str(npz), str(out)]) == 2
    assert str(out.parent) in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npz"]
