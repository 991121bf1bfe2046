"""The QA report counts known defects: a cube with a floater, an inner shell, a hole, a fan."""

from __future__ import annotations

import numpy as np
import pytest

from backend.geometry.inspect import mesh_report, remove_shells, uv_report, welded
from tests.fixtures.meshes import box, nonmanifold_fan, shell_in_shell


def _join(*meshes):
    verts, faces, offset = [], [], 0
    for m in meshes:
        verts.append(m.vertices)
        faces.append(m.faces + offset)
        offset += len(m.vertices)
    return np.concatenate(verts), np.concatenate(faces)


def _split_every_face(vertices, faces):
    """Every triangle with its own three vertices, as a UV-seam-split export would store them."""
    return vertices[faces.reshape(-1)], np.arange(faces.size).reshape(-1, 3)


def test_clean_cube_is_watertight_and_one_shell():
    cube = box(size=(1.0, 1.0, 1.0), subdivisions=2)
    report = mesh_report(*_split_every_face(cube.vertices, cube.faces))  # welded back before counting
    assert report.watertight and report.shells == 1
    assert (report.boundary_edges, report.boundary_loops, report.non_manifold_edges) == (0, 0, 0)
    assert (report.inner_shells, report.floaters) == (0, 0)
    assert report.triangles == 48 and report.vertices == 26


def test_cube_with_a_floater():
    v, f = _join(box(size=(1.0, 1.0, 1.0)), box(size=(0.05, 0.05, 0.05), center=(1.0, 0.0, 0.0)))
    report = mesh_report(v, f)
    assert report.shells == 2 and report.floaters == 1 and report.inner_shells == 0
    assert report.watertight  # both pieces are closed
    kept = remove_shells(*welded(v, f), floaters=True, inner=False)
    assert len(kept) == 12
    assert mesh_report(v, kept).shells == 1


def test_inner_shell_is_found_and_removed():
    m = shell_in_shell()
    report = mesh_report(m.vertices, m.faces)
    assert report.shells == 2 and report.inner_shells == 1 and report.floaters == 0
    v, f = welded(m.vertices, m.faces)
    kept = remove_shells(v, f, floaters=False, inner=True)
    assert mesh_report(v, kept).shells == 1 and len(kept) < len(f)
    # A large separate object beside it is neither inner nor a floater.
    v2, f2 = _join(box(size=(1.0, 1.0, 1.0)), box(size=(0.9, 0.9, 0.9), center=(2.0, 0.0, 0.0)))
    assert (mesh_report(v2, f2).inner_shells, mesh_report(v2, f2).floaters) == (0, 0)


def test_cube_with_a_hole():
    cube = box(size=(1.0, 1.0, 1.0), subdivisions=1)
    report = mesh_report(cube.vertices, cube.faces[2:])  # one side's two triangles gone
    assert not report.watertight
    assert (report.boundary_edges, report.boundary_loops) == (4, 1)
    assert report.shells == 1


def test_non_manifold_edge():
    fan = nonmanifold_fan()
    report = mesh_report(fan.vertices, fan.faces)
    assert report.non_manifold_edges == 1 and not report.watertight


def test_uv_overlap_and_texel_density():
    # A 1 x 1 quad mapped onto the whole texture: no overlap, 512 texels per unit.
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], float)
    f = np.array([[0, 1, 2], [0, 2, 3]])
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)
    assert uv_report(v, f, uv, covered=1.0, texture_size=512) == {"uv_overlap": 0.0, "texel_density": 512.0}
    # Both triangles on the same half of the texture: half of their UV area is doubled up.
    uv_stacked = np.array([[0, 0], [1, 0], [1, 1], [1, 0]], float)
    report = uv_report(v, f, uv_stacked, covered=0.5, texture_size=512)
    assert report["uv_overlap"] == pytest.approx(0.5)
    assert report["texel_density"] == pytest.approx(512 * np.sqrt(0.5), abs=0.1)


def test_uv_report_needs_no_two_dimensional_cross_product(monkeypatch):
    # numpy >= 2 raises on np.cross of 2-vectors; the numpy this suite runs on may still accept them.
    import backend.geometry.inspect as inspect_module

    def cross_of_3_vectors(a, b, *args, **kwargs):
        if np.shape(a)[-1] != 3 or np.shape(b)[-1] != 3:
            raise ValueError("np.cross needs 3-dimensional vectors")
        return np.cross(a, b, *args, **kwargs)

    monkeypatch.setattr(inspect_module, "np", _NumpyWith(cross=cross_of_3_vectors))
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], float)
    f = np.array([[0, 1, 2], [0, 2, 3]])
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)
    assert uv_report(v, f, uv, covered=1.0, texture_size=512) == {"uv_overlap": 0.0, "texel_density": 512.0}


class _NumpyWith:
    """numpy with some functions replaced."""

    def __init__(self, **replaced):
        self._replaced = replaced

    def __getattr__(self, name):
        return self._replaced.get(name) or getattr(np, name)


def test_many_shells_match_a_pairwise_reference():
    """Nested, overlapping and separate boxes, some open: inner shells as a plain all-pairs test
    (box inside box and an odd count of ray crossings) finds them."""
    from backend.geometry.inspect import _ray_crossings, find_shells

    rng = np.random.default_rng(5)
    parts = []
    for _ in range(40):
        centre, size = rng.uniform(-1, 1, 3), rng.uniform(0.05, 0.8, 3)
        b = box(size=tuple(size))
        parts.append((b.vertices + centre, b.faces[:-1] if rng.random() < 0.2 else b.faces))  # some open
    verts, faces, offset = [], [], 0
    for v, f in parts:
        verts.append(v)
        faces.append(f + offset)
        offset += len(v)
    v, f = welded(np.concatenate(verts), np.concatenate(faces))
    shells = find_shells(v, f)
    groups = [f[shells.label == s] for s in range(shells.count)]
    low = [v[g].reshape(-1, 3).min(0) for g in groups]
    high = [v[g].reshape(-1, 3).max(0) for g in groups]
    expected = [any(o != s and shells.closed[o] and np.all(low[o] <= low[s]) and np.all(high[s] <= high[o])
                    and _ray_crossings(v[groups[s][0, 0]], v[groups[o]]) % 2 == 1
                    for o in range(shells.count)) for s in range(shells.count)]
    assert shells.inner.tolist() == expected
    assert 0 < sum(expected) < shells.count  # the scene has inner shells and outer ones
