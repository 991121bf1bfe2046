"""The QA report counts known defects: a cube with a floater, an inner shell, a hole, a fan."""

from __future__ import annotations

from types import SimpleNamespace

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


def _plain_ray_crossings(origin, triangles):
    """One origin at a time, written out: the reference for the vectorised ray test."""
    direction = np.array([0.5773, 0.5774, 0.5775])
    count = 0
    for a, b, c in triangles:
        e1, e2 = b - a, c - a
        p = np.cross(direction, e2)
        det = float(e1 @ p)
        if abs(det) <= 1e-12:
            continue
        s = origin - a
        u = float(s @ p) / det
        q = np.cross(s, e1)
        v = float(q @ direction) / det
        t = float(e2 @ q) / det
        count += u >= 0 and v >= 0 and u + v <= 1 and t > 1e-9
    return count


def _pairwise_inner(v, f, shells):
    """Inner shells as a plain all-pairs test: box inside a closed shell's box, odd ray crossings."""
    groups = [f[shells.label == s] for s in range(shells.count)]
    low = [v[g].reshape(-1, 3).min(0) for g in groups]
    high = [v[g].reshape(-1, 3).max(0) for g in groups]
    return [any(o != s and shells.closed[o] and np.all(low[o] <= low[s]) and np.all(high[s] <= high[o])
                and _plain_ray_crossings(v[groups[s][0, 0]], v[groups[o]]) % 2 == 1
                for o in range(shells.count)) for s in range(shells.count)]


def test_vectorised_ray_crossings_match_one_origin_at_a_time():
    from backend.geometry.inspect import _ray_crossings_many

    rng = np.random.default_rng(2)
    triangles = rng.uniform(-1, 1, (60, 3, 3))
    origins = rng.uniform(-1.5, 1.5, (40, 3))
    expected = [_plain_ray_crossings(o, triangles) for o in origins]
    assert _ray_crossings_many(origins, triangles).tolist() == expected
    assert len(set(expected)) > 2  # the rays cross different numbers of triangles


def test_many_shells_match_a_pairwise_reference():
    """Nested, overlapping and separate boxes, some open: the inner shells of the pairwise test."""
    from backend.geometry.inspect import find_shells

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
    expected = _pairwise_inner(v, f, shells)
    assert shells.inner.tolist() == expected
    assert 0 < sum(expected) < shells.count  # the scene has inner shells and outer ones


def _tetrahedra(corners: np.ndarray, size: float) -> SimpleNamespace:
    """A closed tetrahedron of edge ``size`` at each of ``corners [N, 3]``."""
    tet_v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float) * size
    tet_f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    return SimpleNamespace(vertices=(corners[:, None, :] + tet_v).reshape(-1, 3),
                           faces=(tet_f + 4 * np.arange(len(corners))[:, None, None]).reshape(-1, 3))


def test_closed_crumbs_inside_and_outside_a_closed_shell():
    """An undertrained decoder's output: many closed crumbs, some inside a closed box (inner), some
    outside it (floaters), and one inside another crumb's box but not inside that crumb."""
    from backend.geometry.inspect import find_shells

    rng = np.random.default_rng(7)
    inside = _tetrahedra(rng.uniform(-0.4, 0.35, (60, 3)), 0.02)
    outside = _tetrahedra(rng.uniform(1.0, 3.0, (60, 3)), 0.02)
    crumb = _tetrahedra(np.array([[4.0, 4.0, 4.0]]), 0.02)
    beside = _tetrahedra(np.array([[4.012, 4.012, 4.001]]), 0.004)  # in the crumb's box, not in the crumb
    v, f = _join(box(size=(1.0, 1.0, 1.0)), inside, outside, crumb, beside)
    shells = find_shells(v, f)
    assert shells.count == 1 + 60 + 60 + 2
    assert shells.inner.tolist() == _pairwise_inner(v, f, shells)
    assert shells.inner.tolist() == [False] + [True] * 60 + [False] * 62  # exactly the crumbs in the box
    report = mesh_report(v, f)
    assert (report.inner_shells, report.floaters) == (60, 62)
