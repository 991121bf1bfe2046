"""Triangle-mesh topology: welding, edge adjacency, face orientation, unreferenced vertices.

numpy + scipy on the CPU. A mesh is ``vertices [V, 3]`` and ``faces [F, 3]`` (integer vertex
indices); every function returns new arrays and leaves its inputs alone. This is the one home
of these routines: the O-Voxel clean-ups, the export's mesh clean-up and the QA report all
call them.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def group_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Equal rows of ``rows [N, K]``: ``(group of each row [N], first row index of each group [G])``.

    Groups are numbered in sorted row order (as ``np.unique(axis=0)`` numbers them); a
    column-wise lexsort is several times faster than ``np.unique(axis=0)``, which compares
    rows as opaque byte strings. Non-negative integer rows whose columns fit one int64 key
    (face vertex triples) are sorted as that key instead, a single 1-D sort.
    """
    key = _packed_key(rows)
    if key is not None:
        # Packing keeps the lexicographic row order; ties may come in any order, since the
        # groups and their smallest indices do not depend on it.
        order = np.argsort(key)
        ks = key[order]
        new = np.ones(len(rows), dtype=bool)
        new[1:] = ks[1:] != ks[:-1]
    else:
        order = np.lexsort(rows.T[::-1])
        srt = rows[order]
        new = np.ones(len(rows), dtype=bool)
        new[1:] = (srt[1:] != srt[:-1]).any(axis=1)
    group = np.empty(len(rows), dtype=np.int64)
    group[order] = np.cumsum(new) - 1
    first = np.minimum.reduceat(order, np.flatnonzero(new)) if len(rows) else order  # smallest index per run
    return group, first


def _packed_key(rows: np.ndarray) -> np.ndarray | None:
    """``rows [N, K]`` as one int64 per row in the same lexicographic order, or None when they
    are not integers, have negatives, or need more than 63 bits together."""
    if rows.ndim != 2 or not len(rows) or not np.issubdtype(rows.dtype, np.integer) or int(rows.min()) < 0:
        return None
    bits = int(rows.max()).bit_length() or 1
    if bits * rows.shape[1] > 63:
        return None
    r = rows.astype(np.int64, copy=False)
    key = r[:, 0].copy()
    for c in range(1, r.shape[1]):
        key <<= bits
        key |= r[:, c]
    return key


def weld_vertices(vertices: np.ndarray, faces: np.ndarray, decimals: int) -> tuple[np.ndarray, np.ndarray]:
    """Vertices merged where they coincide after rounding to ``decimals``; faces re-indexed.

    Each merged vertex keeps the position (and dtype) of its first original, not the rounded
    one. Faces that collapse keep their repeated indices: see :func:`drop_bad_faces`.
    """
    group, first = group_rows(np.round(np.asarray(vertices, np.float64), decimals))
    return vertices[first], group[np.asarray(faces, np.int64)]


def drop_bad_faces(faces: np.ndarray) -> np.ndarray:
    """Remove faces with a repeated vertex and duplicates (same vertex set); keeps the first, in order."""
    f = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    if not len(f):
        return f
    # Each face's sorted vertex triple from min / max / sum (np.sort(axis=1) is slow on rows of 3).
    a, b, c = f[:, 0], f[:, 1], f[:, 2]
    lo, hi = np.minimum(np.minimum(a, b), c), np.maximum(np.maximum(a, b), c)
    _, first = group_rows(np.stack([lo, a + b + c - lo - hi, hi], 1))
    keep = np.zeros(len(f), dtype=bool)  # a mask keeps input order without sorting ``first``
    keep[first] = True
    return f[keep]


def remove_unreferenced(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop the vertices no face uses: ``(vertices, faces, kept)``, ``kept [V']`` the old index of each.

    Index other per-vertex arrays (UVs, colours) with ``kept`` to keep them in step.
    """
    faces = np.asarray(faces, np.int64)
    kept = np.unique(faces)
    remap = np.full(len(vertices), -1, dtype=np.int64)
    remap[kept] = np.arange(len(kept))
    return vertices[kept], remap[faces], kept


def connected_labels(pairs: np.ndarray, n: int) -> np.ndarray:
    """Component label ``[n]`` of each of ``n`` nodes joined by the undirected ``pairs [P, 2]``."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    return connected_components(coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n)),
                                directed=False)[1]


def half_edges(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Directed edges ``[3F, 2]`` (face-major: (a,b), (b,c), (c,a)) and their undirected keys ``[3F]``.

    Half-edge ``i`` belongs to face ``i // 3``; two half-edges lie on the same edge exactly when
    their keys are equal.
    """
    e = np.asarray(faces, np.int64)[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    n = int(e.max()) + 1 if e.size else 1
    return e, np.minimum(e[:, 0], e[:, 1]) * n + np.maximum(e[:, 0], e[:, 1])


def edge_uses(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Undirected edges ``[E, 2]`` (low index first), how many faces use each ``[E]``, and each
    half-edge's edge ``[3F]`` (see :func:`half_edges` for their order)."""
    e, key = half_edges(faces)
    # np.unique(return_index=...) would sort stably; any order of equal keys gives the same
    # edges (each key encodes its low and high vertex), so one plain sort serves all three outputs.
    order = np.argsort(key)
    ks = key[order]
    new = np.ones(len(ks), dtype=bool)
    new[1:] = ks[1:] != ks[:-1]
    starts = np.flatnonzero(new)
    inverse = np.empty(len(ks), dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    counts = np.diff(np.append(starts, len(ks)))
    n = int(e.max()) + 1 if e.size else 1  # the key's base (see half_edges)
    edges = np.stack([ks[starts] // n, ks[starts] % n], axis=1)
    return edges, counts, inverse


def boundary_edges(faces: np.ndarray) -> np.ndarray:
    """``[B, 2]`` edges used by exactly one face, in the direction that face stores them.

    Degenerate edges (both ends the same vertex) are ignored.
    """
    e, key = half_edges(faces)
    keep = e[:, 0] != e[:, 1]
    e, key = e[keep], key[keep]
    _, first, counts = np.unique(key, return_index=True, return_counts=True)
    return e[first[counts == 1]]


def shared_edge_pairs(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of half-edges on the same edge: ``(ha, hb, uses)``; half-edge ``h`` belongs to face ``h // 3``.

    An edge used by ``k`` faces gives ``k - 1`` pairs, a chain in face order, and ``uses`` holds
    that ``k`` for each pair. Pairs come sorted by edge (low vertex, then high vertex).
    Flipping faces' windings moves half-edges within their faces but leaves the face pairs
    ``(ha // 3, hb // 3)`` and ``uses`` as they were, so callers that only need those (UV
    charts after :func:`orient_faces`) can reuse the pairs of the unflipped faces.
    """
    _, key = half_edges(faces)
    order = np.argsort(key, kind="stable")
    ks = key[order]
    same = ks[1:] == ks[:-1]
    counts = np.diff(np.r_[np.flatnonzero(np.r_[True, ~same]), len(ks)])
    uses = np.repeat(counts, counts)  # per sorted half-edge
    return order[:-1][same], order[1:][same], uses[:-1][same]


def manifold_face_pairs(faces: np.ndarray, pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The faces across each edge used by exactly two (different) faces: ``(fa, fb, disagree)``.

    ``disagree`` is True where both faces traverse the shared edge in the same direction, i.e.
    their windings are inconsistent. Non-manifold edges (three or more uses) are left out.
    ``pairs`` is ``shared_edge_pairs(faces)`` when the caller already has it.
    """
    ha, hb, uses = pairs if pairs is not None else shared_edge_pairs(faces)
    ha, hb = ha[uses == 2], hb[uses == 2]
    fa, fb = ha // 3, hb // 3
    ok = fa != fb
    start = np.asarray(faces, np.int64).reshape(-1)  # half-edge h starts at corner h
    return fa[ok], fb[ok], (start[ha] == start[hb])[ok]


def orient_faces(vertices: np.ndarray, faces: np.ndarray, outward: bool = True,
                 pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Faces flipped so that neighbours across every manifold edge agree on orientation.

    Works per connected component (through manifold edges); non-manifold edges impose no
    constraint and a non-orientable piece keeps its windings. With ``outward``, components
    with negative signed volume are flipped as a whole (for closed components this makes
    normals point outside). ``pairs`` is ``shared_edge_pairs(faces)`` when the caller has it
    (the export computes it once for this and for the UV charts).
    """
    f = np.asarray(faces, np.int64)
    nf = len(f)
    if nf == 0:
        return f.copy()
    fa, fb, disagree = manifold_face_pairs(f, pairs)
    # Doubled graph: node i is face i as stored, node i + nf the same face flipped. Agreeing
    # neighbours join like with like, disagreeing ones join each to the other's flip.
    state = connected_labels(np.stack([np.concatenate([fa, fa + nf]),
                                       np.concatenate([np.where(disagree, fb + nf, fb),
                                                       np.where(disagree, fb, fb + nf)])], 1), 2 * nf)
    # A face component is one or two (mirror) components of the doubled graph, and each face
    # has a node in each: the smaller of its two labels names its component.
    face_label = np.minimum(state[:nf], state[nf:])
    _, first_face, comp = np.unique(face_label, return_index=True, return_inverse=True)
    comp = comp.reshape(-1)
    root = first_face[comp]  # [F] the first face of each face's component keeps its winding
    flip = (state[:nf] != state[root]) & (state[nf:] == state[root])
    f = np.where(flip[:, None], f[:, ::-1], f)
    if outward:
        p = np.asarray(vertices, np.float64)[f]
        volume = np.einsum("ij,ij->i", p[:, 0], np.cross(p[:, 1], p[:, 2]))
        inward = np.bincount(comp, volume, minlength=len(first_face)) < 0
        f = np.where(inward[comp][:, None], f[:, ::-1], f)
    return np.ascontiguousarray(f)


def face_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area of each face ``[F]`` (float64)."""
    p = np.asarray(vertices, np.float64)[np.asarray(faces, np.int64)]  # [F, 3, 3]
    return 0.5 * np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals ``[V, 3]`` float32 (unit length; a vertex with no area gets +Z)."""
    tri = np.asarray(vertices, np.float64)[faces]  # [F, 3, 3]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # [F, 3], |fn| = 2 area
    corners, nv = np.asarray(faces).reshape(-1), len(vertices)
    n = np.stack([np.bincount(corners, weights=np.repeat(fn[:, c], 3), minlength=nv) for c in range(3)], -1)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    n = np.where(length > 1e-20, n / np.maximum(length, 1e-20), np.array([0.0, 0.0, 1.0]))
    return n.astype(np.float32)
