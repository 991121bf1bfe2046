"""Mesh clean-up before baking: weld, drop degenerate faces, decimate, orient, normals.

Stands in for CuMesh's steps in ``o_voxel.postprocess.to_glb`` (clean-up and decimation in
its branch without remeshing): the extracted O-Voxel mesh is not consistently oriented, so
after decimation the faces are re-oriented per connected component (a BFS
parity over the face adjacency, solved by pointer jumping) and each component
is flipped outward by the sign of its volume.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

from ..api import CancelToken

log = logging.getLogger(__name__)


def _group_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Equal rows of ``rows [N, K]``: ``(group of each row [N], first row index of each group [G])``.

    Groups are numbered in sorted row order. A column-wise lexsort, several times faster
    than ``np.unique(axis=0)`` (which compares rows as opaque byte strings).
    """
    order = np.lexsort(rows.T[::-1])
    srt = rows[order]
    new = np.ones(len(rows), dtype=bool)
    new[1:] = (srt[1:] != srt[:-1]).any(axis=1)
    group_sorted = np.cumsum(new) - 1
    group = np.empty(len(rows), dtype=np.int64)
    group[order] = group_sorted
    first = np.minimum.reduceat(order, np.flatnonzero(new)) if len(rows) else order  # smallest index per run
    return group, first


def weld(vertices: np.ndarray, faces: np.ndarray, decimals: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Merge vertices that coincide (after rounding) and drop faces that collapse or repeat."""
    group, first = _group_rows(np.round(vertices.astype(np.float64), decimals))
    # Each merged vertex keeps its first original position (not the rounded one).
    return vertices[first], drop_bad_faces(group[faces])


def drop_bad_faces(faces: np.ndarray) -> np.ndarray:
    """Remove faces with a repeated vertex and duplicates (same vertex set); keeps the first, in order."""
    f = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    if not len(f):
        return f
    _, first = _group_rows(np.sort(f, axis=1))
    return f[np.sort(first)]


def compact(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop unreferenced vertices. Returns ``(vertices, faces, kept_old_indices)``."""
    used = np.unique(faces)
    remap = np.full(len(vertices), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return vertices[used], remap[faces], used


DECIMATE_TIMEOUT_S = 900.0  # millions of faces take well under a minute
DECIMATE_MEMORY_BYTES = 16 << 30


def decimate(vertices: np.ndarray, faces: np.ndarray, target_faces: int,
             cancel: CancelToken | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Quadric decimation to about ``target_faces`` (no-op when already below).

    fast_simplification runs in a child process that ``cancel`` or a time limit stops (see
    :func:`backend.pipeline.isolation.run_isolated`).
    """
    if len(faces) <= target_faces:
        return vertices, faces
    from ..isolation import run_isolated

    ratio = 1.0 - target_faces / len(faces)
    v, f = run_isolated(_simplify, vertices.astype(np.float32), faces.astype(np.int32), ratio,
                        what="decimation (fast_simplification)", timeout_s=DECIMATE_TIMEOUT_S, cancel=cancel,
                        memory_bytes=DECIMATE_MEMORY_BYTES)
    log.debug("decimated %d -> %d faces", len(faces), len(f))
    return v.astype(np.float64), drop_bad_faces(f.astype(np.int64))


def _simplify(vertices: np.ndarray, faces: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """The fast_simplification call itself (run in a child process)."""
    import fast_simplification

    return fast_simplification.simplify(vertices, faces, target_reduction=ratio)


def _face_adjacency(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of faces sharing an edge used by exactly two faces, and whether their windings agree."""
    F = len(faces)
    e = np.stack([faces, np.roll(faces, -1, axis=1)], -1).reshape(-1, 2)  # [3F, 2] directed edges
    fid = np.repeat(np.arange(F), 3)
    lo, hi = e.min(1), e.max(1)
    forward = e[:, 0] < e[:, 1]
    order = np.lexsort((hi, lo))
    lo, hi, fid, forward = lo[order], hi[order], fid[order], forward[order]
    same = (lo[1:] == lo[:-1]) & (hi[1:] == hi[:-1])
    start = np.flatnonzero(same)
    # Only manifold edges: exactly two uses (no third use before or after).
    n = len(lo)
    prev_same = np.zeros(n, bool)
    prev_same[1:] = same
    ok = ~prev_same[start] & ((start + 2 >= n) | ~np.append(same, False)[np.minimum(start + 1, n - 1)])
    a, b = start[ok], start[ok] + 1
    # Consistent winding traverses a shared edge in opposite directions.
    flip = forward[a] == forward[b]
    return fid[a], fid[b], flip


def orient(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Consistently wind each edge-connected component and point it outward (positive volume)."""
    F = len(faces)
    if F == 0:
        return faces
    fa, fb, flip = _face_adjacency(faces)
    n_comp, labels = csgraph.connected_components(
        sparse.coo_matrix((np.ones(len(fa)), (fa, fb)), shape=(F, F)), directed=False)
    # One BFS from a virtual root (node F) linked to the first face of every component.
    _, first = np.unique(labels, return_index=True)  # each component's first face
    rows = np.concatenate([fa, np.full(n_comp, F)])
    cols = np.concatenate([fb, first])
    graph = sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(F + 1, F + 1)).tocsr()
    _, pred = csgraph.breadth_first_order(graph, F, directed=False, return_predecessors=True)
    parent = pred[:F].astype(np.int64)
    parent[parent == F] = np.flatnonzero(parent == F)  # component roots are their own parents
    parent[parent < 0] = np.flatnonzero(parent < 0)
    # Relative flip between each face and its parent, looked up from the adjacency pairs.
    key = np.minimum(fa, fb) * F + np.maximum(fa, fb)
    order = np.argsort(key)
    key, flip = key[order], flip[order]
    faces_idx = np.arange(F)
    child = faces_idx[parent != faces_idx]
    ck = np.minimum(child, parent[child]) * F + np.maximum(child, parent[child])
    rel = np.zeros(F, dtype=np.int8)
    rel[child] = flip[np.searchsorted(key, ck)]
    # Pointer jumping: parity to the root = XOR of `rel` along the tree path.
    par, acc = parent, rel
    while not np.array_equal(par[par], par):
        acc, par = acc ^ acc[par], par[par]
    out = faces.copy()
    out[acc == 1] = out[acc == 1][:, ::-1]
    # Outward: flip components whose signed volume is negative.
    tri = vertices[out].astype(np.float64)  # [F, 3, 3]
    vol = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])) / 6.0
    comp_vol = np.bincount(labels, weights=vol, minlength=n_comp)
    inward = comp_vol[labels] < 0
    out[inward] = out[inward][:, ::-1]
    return out


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals ``[V, 3]`` float32 (unit length; zero-area -> +Z)."""
    tri = vertices[faces]  # [F, 3, 3]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # [F, 3], |fn| = 2 area
    corners, V = faces.reshape(-1), len(vertices)
    n = np.stack([np.bincount(corners, weights=np.repeat(fn[:, c], 3), minlength=V) for c in range(3)], -1)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    n = np.where(length > 1e-20, n / np.maximum(length, 1e-20), np.array([0.0, 0.0, 1.0]))
    return n.astype(np.float32)
