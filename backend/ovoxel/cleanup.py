"""Mesh clean-ups for extracted O-Voxel meshes: boundary edges, hole filling, orientation.

numpy + scipy on the CPU; each function returns a new :class:`TriangleMesh` with only
vertices and faces (extracted meshes carry no other attributes).
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from backend.geometry import TriangleMesh


def _edges(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Directed edges ([3F, 2], face-major: (a,b), (b,c), (c,a)) and their undirected keys [3F]."""
    e = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2).astype(np.int64)
    n = int(faces.max()) + 1 if faces.size else 1
    key = np.minimum(e[:, 0], e[:, 1]) * n + np.maximum(e[:, 0], e[:, 1])
    return e, key


def boundary_edges(faces: np.ndarray) -> np.ndarray:
    """[B, 2] int64 edges used by exactly one face, in the direction that face stores them.

    Degenerate edges (both ends the same vertex) are ignored.
    """
    e, key = _edges(faces)
    keep = e[:, 0] != e[:, 1]
    e, key = e[keep], key[keep]
    _, first, counts = np.unique(key, return_index=True, return_counts=True)
    return e[first[counts == 1]]


def fill_holes(mesh: TriangleMesh, max_perimeter: float = 0.03) -> TriangleMesh:
    """Close every boundary loop whose perimeter is below ``max_perimeter``.

    Loops are the connected components of the boundary-edge graph. Each closed loop gets
    one new vertex at the mean of its edge midpoints and one triangle per boundary edge
    (wound against the stored edge direction, so it continues the neighbour's orientation).
    """
    v, f = mesh.vertices, mesh.faces
    be = boundary_edges(f)
    if len(be) == 0:
        return TriangleMesh(v.copy(), f.copy())
    nv = v.shape[0]
    graph = coo_matrix((np.ones(len(be)), (be[:, 0], be[:, 1])), shape=(nv, nv))
    _, label = connected_components(graph, directed=False)
    loop = label[be[:, 0]]  # [B] loop id per boundary edge
    uniq, loop = np.unique(loop, return_inverse=True)
    length = np.linalg.norm(v[be[:, 1]] - v[be[:, 0]], axis=1)
    perimeter = np.bincount(loop, length, minlength=len(uniq))
    count = np.bincount(loop, minlength=len(uniq))
    mid = (v[be[:, 0]] + v[be[:, 1]]) / 2
    centre = np.stack([np.bincount(loop, mid[:, k], minlength=len(uniq)) for k in range(3)], 1)
    centre /= count[:, None]
    fill = (perimeter < max_perimeter) & (count >= 3)
    new_id = np.full(len(uniq), -1, dtype=np.int64)
    new_id[fill] = nv + np.arange(int(fill.sum()))
    sel = fill[loop]
    tris = np.stack([be[sel, 1], be[sel, 0], new_id[loop[sel]]], axis=1)
    return TriangleMesh(np.concatenate([v, centre[fill]]), np.concatenate([f, tris]).astype(np.int64))


def remove_unreferenced(mesh: TriangleMesh) -> TriangleMesh:
    """Drop vertices that no face uses (other per-vertex arrays are dropped too)."""
    used = np.zeros(mesh.num_vertices, dtype=bool)
    used[mesh.faces.reshape(-1)] = True
    remap = np.cumsum(used) - 1
    return TriangleMesh(mesh.vertices[used], remap[mesh.faces])


def orient_faces(mesh: TriangleMesh, outward: bool = True) -> TriangleMesh:
    """Flip faces so that neighbours across every manifold edge agree on orientation.

    Works per connected component (through manifold edges); non-manifold edges impose
    no constraint and non-orientable pieces keep an arbitrary consistent part. With
    ``outward``, components with negative signed volume are flipped as a whole (for
    closed components this makes normals point outside).
    """
    v, f = mesh.vertices, mesh.faces.astype(np.int64)
    nf = f.shape[0]
    e, key = _edges(f)
    face_of = np.repeat(np.arange(nf), 3)
    order = np.argsort(key, kind="stable")
    ks = key[order]
    starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
    counts = np.diff(np.r_[starts, len(ks)])
    two = starts[counts == 2]
    ea, eb = order[two], order[two + 1]  # the two half-edges of each manifold edge
    fa, fb = face_of[ea], face_of[eb]
    same_dir = e[ea, 0] == e[eb, 0]  # same direction => the faces disagree (parity 1)
    ok = fa != fb
    fa, fb, same_dir = fa[ok], fb[ok], same_dir[ok]
    # doubled graph: node f (unflipped) and f + nf (flipped)
    s0 = np.where(same_dir, fb + nf, fb)
    s1 = np.where(same_dir, fb, fb + nf)
    rows = np.concatenate([fa, fa + nf])
    cols = np.concatenate([s0, s1])
    g2 = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(2 * nf, 2 * nf))
    _, lab2 = connected_components(g2, directed=False)
    g1 = coo_matrix((np.ones(len(fa)), (fa, fb)), shape=(nf, nf))
    _, comp = connected_components(g1, directed=False)
    _, root_of_comp = np.unique(comp, return_index=True)
    root = root_of_comp[comp]  # [F] first face of each component
    flip = (lab2[:nf] != lab2[root]) & (lab2[nf:] == lab2[root])
    f = np.where(flip[:, None], f[:, ::-1], f)
    if outward:
        p = v[f]
        vol = np.einsum("ij,ij->i", p[:, 0], np.cross(p[:, 1], p[:, 2]))
        comp_vol = np.bincount(comp, vol, minlength=len(root_of_comp))
        f = np.where((comp_vol[comp] < 0)[:, None], f[:, ::-1], f)
    return TriangleMesh(v.copy(), np.ascontiguousarray(f))
