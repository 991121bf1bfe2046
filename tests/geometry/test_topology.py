"""Topology routines against brute force on small meshes: edges, orientation, compaction, welding."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from backend.geometry.topology import (
    boundary_edges,
    edge_uses,
    manifold_face_pairs,
    orient_faces,
    remove_unreferenced,
    shared_edge_pairs,
    vertex_normals,
    weld_vertices,
)
from tests.fixtures.meshes import box, nonmanifold_fan, open_sheet, uv_sphere


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def _brute_edge_count(faces):
    return Counter(tuple(sorted((int(a), int(b)))) for f in faces for a, b in ((f[0], f[1]), (f[1], f[2]),
                                                                                  (f[2], f[0])))


@pytest.mark.parametrize("mesh", [box(subdivisions=2), open_sheet(resolution=6), nonmanifold_fan()],
                         ids=["box", "sheet", "fan"])
def test_edge_uses_and_boundary_match_brute_force(mesh):
    count = _brute_edge_count(mesh.faces)
    edges, uses, corner_edge = edge_uses(mesh.faces)
    assert {tuple(e): int(n) for e, n in zip(edges.tolist(), uses)} == dict(count)
    corners = mesh.faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    assert (np.sort(corners, 1) == edges[corner_edge]).all()
    boundary = boundary_edges(mesh.faces)
    once = sorted(e for e, n in count.items() if n == 1)
    assert sorted(tuple(sorted(e)) for e in boundary.tolist()) == once
    stored = {tuple(e) for f in mesh.faces.tolist() for e in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0]))}
    assert all(tuple(e) in stored for e in boundary.tolist())  # in the direction the face stores them


def test_manifold_face_pairs_skip_non_manifold_edges_and_flag_disagreeing_windings():
    fan = nonmanifold_fan()
    fa, fb, disagree = manifold_face_pairs(fan.faces)
    count = _brute_edge_count(fan.faces)
    assert len(fa) == sum(1 for n in count.values() if n == 2)
    flipped = fan.faces.copy()
    flipped[0] = flipped[0][::-1]
    fa2, fb2, disagree2 = manifold_face_pairs(flipped)
    touches_first = (fa2 == 0) | (fb2 == 0)
    assert disagree2[touches_first].all() and touches_first.any()
    assert (disagree2[~touches_first] == disagree[~touches_first]).all()


def test_orient_fixes_random_flips_and_points_outward(rng):
    m = box(subdivisions=3)
    f = m.faces.copy()
    flip = rng.random(len(f)) < 0.5
    f[flip] = f[flip][:, ::-1]
    assert (orient_faces(m.vertices, f) == m.faces).all()


def test_orient_without_outward_only_makes_windings_agree(rng):
    m = uv_sphere(rings=8, segments=12)
    inside_out = m.faces[:, ::-1].copy()
    f = inside_out.copy()
    flip = rng.random(len(f)) < 0.3
    f[flip] = f[flip][:, ::-1]
    out = orient_faces(m.vertices, f, outward=False)
    _, _, disagree = manifold_face_pairs(out)
    assert not disagree.any()
    assert (orient_faces(m.vertices, f) == m.faces).all()  # outward: the sphere's own winding


def test_remove_unreferenced_keeps_the_used_vertices_in_order():
    v = np.arange(30, dtype=np.float64).reshape(10, 3)
    f = np.array([[7, 2, 5], [5, 2, 9]])
    cv, cf, kept = remove_unreferenced(v, f)
    assert kept.tolist() == [2, 5, 7, 9]
    assert (cv[cf] == v[f]).all() and len(cv) == 4


def test_weld_vertices_keeps_the_first_original_and_its_dtype():
    v = np.array([[0, 0, 0], [1, 0, 0], [1e-9, 0, 0], [0, 1, 0]], dtype=np.float32)
    wv, wf = weld_vertices(v, np.array([[0, 1, 3], [2, 3, 1]]), decimals=6)
    assert wv.dtype == np.float32 and len(wv) == 3
    assert (wv[wf] == v[[[0, 1, 3], [0, 3, 1]]]).all()


def test_vertex_normals_of_a_sphere_point_outward():
    m = uv_sphere(rings=16, segments=32)
    n = vertex_normals(m.vertices, m.faces)
    radial = m.vertices / np.linalg.norm(m.vertices, axis=1, keepdims=True)
    assert n.dtype == np.float32 and (np.einsum("ij,ij->i", n, radial) > 0.95).all()


def test_shared_edge_pairs_chain_the_faces_of_each_edge():
    fan = nonmanifold_fan()
    ha, hb, uses = shared_edge_pairs(fan.faces)
    count = _brute_edge_count(fan.faces)
    assert len(ha) == sum(n - 1 for n in count.values())
    corners = fan.faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    for a, b, n in zip(ha, hb, uses):
        edge = tuple(sorted(corners[a]))
        assert edge == tuple(sorted(corners[b])) and count[edge] == n and a // 3 < b // 3


def test_face_pairs_of_shared_edges_do_not_change_when_windings_flip(rng):
    from backend.pipeline.export.uv import fast_unwrap

    m = uv_sphere(rings=12, segments=24)
    extra = np.array([[0, 1, 30], [1, 0, 31], [5, 5, 6]])  # a non-manifold fin pair and a degenerate face
    faces = np.concatenate([m.faces, extra])
    flip = rng.random(len(faces)) < 0.5
    flipped = np.where(flip[:, None], faces[:, ::-1], faces)
    ha, hb, uses = shared_edge_pairs(faces)
    fa, fb, f_uses = shared_edge_pairs(flipped)
    assert not np.array_equal(ha, fa)  # half-edges moved within their faces...
    assert np.array_equal(ha // 3, fa // 3) and np.array_equal(hb // 3, fb // 3)  # ...faces did not
    assert np.array_equal(uses, f_uses)
    pairs = shared_edge_pairs(flipped)
    oriented = orient_faces(m.vertices, flipped, pairs=pairs)
    assert np.array_equal(oriented, orient_faces(m.vertices, flipped))
    # The export reuses the pairs of the faces before orienting for the UV charts.
    reused = fast_unwrap(m.vertices, oriented, texture_size=128, pairs=pairs)
    fresh = fast_unwrap(m.vertices, oriented, texture_size=128)
    for got, want in zip((reused.vmap, reused.faces, reused.uvs), (fresh.vmap, fresh.faces, fresh.uvs)):
        assert np.array_equal(got, want)
