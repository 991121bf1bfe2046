"""The faster topology routines give exactly what their earlier formulations gave.

The references below are the implementations they replaced: a column-wise lexsort for
:func:`group_rows`, ``np.sort(axis=1)`` + sorted first indices for :func:`drop_bad_faces`, and
a second connected-components pass over the face graph in :func:`orient_faces`. Outputs must be
equal array for array (same dtype, same values), on meshes with the cases that matter:
duplicate and reversed-duplicate faces, collapsed faces, non-manifold edges, a non-orientable
strip, nested and isolated components, random flips.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from backend.geometry import topology
from backend.geometry.topology import drop_bad_faces, group_rows, orient_faces, shared_edge_pairs
from tests.fixtures.meshes import nonmanifold_fan, open_sheet, shell_in_shell, uv_sphere


def _group_rows_reference(rows):
    order = np.lexsort(rows.T[::-1])
    srt = rows[order]
    new = np.ones(len(rows), dtype=bool)
    new[1:] = (srt[1:] != srt[:-1]).any(axis=1)
    group = np.empty(len(rows), dtype=np.int64)
    group[order] = np.cumsum(new) - 1
    first = np.minimum.reduceat(order, np.flatnonzero(new)) if len(rows) else order
    return group, first


def _drop_bad_faces_reference(faces):
    f = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    if not len(f):
        return f
    _, first = _group_rows_reference(np.sort(f, axis=1))
    return f[np.sort(first)]


def _labels(pairs, n):
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    return connected_components(coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n)),
                                directed=False)[1]


def _orient_faces_reference(vertices, faces, outward=True, pairs=None):
    f = np.asarray(faces, np.int64)
    nf = len(f)
    if nf == 0:
        return f.copy()
    fa, fb, disagree = topology.manifold_face_pairs(f, pairs)
    state = _labels(np.stack([np.concatenate([fa, fa + nf]),
                              np.concatenate([np.where(disagree, fb + nf, fb),
                                              np.where(disagree, fb, fb + nf)])], 1), 2 * nf)
    comp = _labels(np.stack([fa, fb], 1), nf)
    _, first_face = np.unique(comp, return_index=True)
    root = first_face[comp]
    flip = (state[:nf] != state[root]) & (state[nf:] == state[root])
    f = np.where(flip[:, None], f[:, ::-1], f)
    if outward:
        p = np.asarray(vertices, np.float64)[f]
        volume = np.einsum("ij,ij->i", p[:, 0], np.cross(p[:, 1], p[:, 2]))
        inward = np.bincount(comp, volume, minlength=len(first_face)) < 0
        f = np.where(inward[comp][:, None], f[:, ::-1], f)
    return np.ascontiguousarray(f)


def _mobius(n=24):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    v = []
    for s in (-0.1, 0.1):
        v.append(np.stack([(1 + s * np.cos(t / 2)) * np.cos(t), (1 + s * np.cos(t / 2)) * np.sin(t),
                           s * np.sin(t / 2)], -1))
    v = np.concatenate(v)
    i = np.arange(n)
    j = (i + 1) % n
    # The strip's last quad joins the two borders crosswise: that makes it non-orientable.
    a, b, c, d = i, j, j + n, i + n
    c[-1], b[-1] = 0, n
    return v, np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])


def _messy_mesh(seed):
    """Pieces of every kind, with repeated, reversed, collapsed and randomly flipped faces."""
    rng = np.random.default_rng(seed)
    parts = [uv_sphere(rings=12, segments=24), shell_in_shell(), open_sheet(resolution=10), nonmanifold_fan()]
    vs, fs, off = [], [], 0
    for m in parts:
        vs.append(m.vertices)
        fs.append(m.faces + off)
        off += len(m.vertices)
    mv, mf = _mobius()
    vs.append(mv)
    fs.append(mf + off)
    off += len(mv)
    vs.append(rng.normal(size=(3, 3)))  # an isolated triangle
    fs.append(np.array([[off, off + 1, off + 2]]))
    v, f = np.concatenate(vs), np.concatenate(fs).astype(np.int64)
    pick = rng.choice(len(f), 40)
    f = np.concatenate([f, f[pick], f[pick][:, ::-1], f[pick][:, [1, 2, 0]]])  # duplicates, reversed, rotated
    bad = rng.choice(len(f), 15)
    f[bad, 1] = f[bad, 0]  # collapsed faces
    f = f[rng.permutation(len(f))]
    flip = rng.random(len(f)) < 0.3
    f[flip] = f[flip][:, ::-1]
    return v, f


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_drop_bad_faces_and_orient_match_the_references(seed):
    v, f = _messy_mesh(seed)
    ref = _drop_bad_faces_reference(f)
    out = drop_bad_faces(f)
    assert out.dtype == ref.dtype and np.array_equal(out, ref)
    assert len(out) < len(f) - 60  # the duplicates and collapsed faces did go
    for faces in (out, f):  # clean, and with duplicates / non-manifold edges left in
        pairs = shared_edge_pairs(faces)
        for outward in (True, False):
            ref_o = _orient_faces_reference(v, faces, outward, pairs)
            got = orient_faces(v, faces, outward, pairs=pairs)
            assert got.dtype == ref_o.dtype and np.array_equal(got, ref_o)
        assert not np.array_equal(orient_faces(v, faces), faces)  # orientation did change something


@pytest.mark.parametrize("rows", [
    np.random.default_rng(0).integers(0, 50, (5000, 3)),  # packed into one key
    np.random.default_rng(1).integers(0, 50, (5000, 3)).astype(np.int32),
    np.random.default_rng(2).integers(0, 5, (3000, 2)).astype(np.uint8),
    np.random.default_rng(3).integers(0, 1 << 30, (4000, 3)) // (1 << 24),  # large values, still packed
    np.random.default_rng(4).integers(0, 1 << 40, (2000, 3)) % 7 * (1 << 38),  # too wide: lexsort
    np.random.default_rng(5).integers(-3, 3, (2000, 3)),  # negatives: lexsort
    np.round(np.random.default_rng(6).random((3000, 3)), 1),  # floats: lexsort
    np.zeros((0, 3), np.int64),
    np.zeros((1, 3), np.int64),
])
def test_group_rows_matches_the_lexsort_reference(rows):
    group, first = group_rows(rows)
    ref_group, ref_first = _group_rows_reference(rows)
    assert group.dtype == ref_group.dtype and np.array_equal(group, ref_group)
    assert first.dtype == ref_first.dtype and np.array_equal(first, ref_first)


def test_drop_bad_faces_on_a_large_random_soup_matches_the_reference():
    rng = np.random.default_rng(7)
    f = rng.integers(0, 300, (200_000, 3))  # many duplicates in every vertex order
    out = drop_bad_faces(f)
    assert np.array_equal(out, _drop_bad_faces_reference(f))
    assert np.array_equal(drop_bad_faces(f.astype(np.int32)), _drop_bad_faces_reference(f.astype(np.int32)))


def _edge_uses_reference(faces):
    """``edge_uses`` as it was: np.unique with first indices, inverse and counts."""
    e, key = topology.half_edges(faces)
    _, first, inverse, counts = np.unique(key, return_index=True, return_inverse=True, return_counts=True)
    return np.sort(e[first], axis=1).reshape(-1, 2), counts, inverse.reshape(-1)


@pytest.mark.parametrize("seed", [0, 1])
def test_edge_uses_matches_the_unique_reference(seed):
    v, f = _messy_mesh(seed)  # collapsed, duplicate and non-manifold edges included
    for faces in (f, f.astype(np.int32), f[:0], f[:1]):
        got, ref = topology.edge_uses(faces), _edge_uses_reference(faces)
        for g, r in zip(got, ref):
            assert g.shape == r.shape and np.array_equal(g, r)
        assert got[0].dtype.kind == "i" and got[1].dtype.kind == "i"


def test_shell_labels_match_the_unique_numbering():
    """``find_shells`` numbers shells by a mask and a running count instead of np.unique."""
    from backend.geometry.inspect import find_shells, welded

    v, f = welded(*_messy_mesh(3))
    shells = find_shells(v, f)
    nf = len(f)
    pairs = np.stack([np.repeat(np.arange(nf), 3), nf + f.reshape(-1)], 1)
    root = topology.connected_labels(pairs, nf + len(v))[:nf]
    assert np.array_equal(shells.label, np.unique(root, return_inverse=True)[1].reshape(-1))
    assert shells.count > 3
