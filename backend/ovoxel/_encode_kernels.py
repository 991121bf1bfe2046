"""numba kernels of the mesh -> flexible dual grid conversion.

Everything here works in *grid units*: a vertex at ``g`` lies in voxel ``floor(g)``,
voxel ``i`` spans ``[i, i + 1]`` on each axis and the grid is ``[0, res]^3``.

Per-voxel accumulator rows (``acc [N, ACC_WIDTH] float64``):

    0..5   quadric matrix A (xx, xy, xz, yy, yz, zz)
    6..8   quadric vector b (minimise xᵀAx + 2bᵀx)
    9..11  sum of the edge-intersection points
    12     number of edge intersections
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._hash import find, grow, grow_rows, insert, new_table

ACC_WIDTH = 13


@njit(cache=True, inline="always")
def _key(x, y, z, res) -> np.int64:
    return (np.int64(x) * res + y) * res + z


@njit(cache=True, inline="always")
def _add_quadric(acc, i, n0, n1, n2, d, w):
    """Add ``w * p pᵀ`` for the plane ``p = (n, d)`` (n·x + d = 0) to row ``i``."""
    acc[i, 0] += w * n0 * n0
    acc[i, 1] += w * n0 * n1
    acc[i, 2] += w * n0 * n2
    acc[i, 3] += w * n1 * n1
    acc[i, 4] += w * n1 * n2
    acc[i, 5] += w * n2 * n2
    acc[i, 6] += w * n0 * d
    acc[i, 7] += w * n1 * d
    acc[i, 8] += w * n2 * d


@njit(cache=True, inline="always")
def _plane(gv, f, t):
    """Unit normal and offset of triangle ``t``; ``ok`` is False for a degenerate triangle."""
    a, b, c = f[t, 0], f[t, 1], f[t, 2]
    e1 = gv[b] - gv[a]
    e2 = gv[c] - gv[a]
    n0 = e1[1] * e2[2] - e1[2] * e2[1]
    n1 = e1[2] * e2[0] - e1[0] * e2[2]
    n2 = e1[0] * e2[1] - e1[1] * e2[0]
    ln = np.sqrt(n0 * n0 + n1 * n1 + n2 * n2)
    if not ln > 1e-300:
        return 0.0, 0.0, 0.0, 0.0, False
    n0, n1, n2 = n0 / ln, n1 / ln, n2 / ln
    d = -(n0 * gv[a, 0] + n1 * gv[a, 1] + n2 * gv[a, 2])
    return n0, n1, n2, d, True


@njit(cache=True, inline="always")
def _edge(ib, ic, jb_, jc_, qb, qc):
    """Edge function ``cross(pj - pi, q - pi)`` evaluated bit-identically for both directions.

    The endpoints are put in a canonical (lexicographic) order before the arithmetic, so
    two triangles sharing an edge get exactly opposite values and never both claim
    (or both miss) a lattice point on it.
    """
    if (ib, ic) > (jb_, jc_):
        return -((ib - jb_) * (qc - jc_) - (ic - jc_) * (qb - jb_))
    return (jb_ - ib) * (qc - ic) - (jc_ - ic) * (qb - ib)


@njit(cache=True, inline="always")
def _claims(e, ib, ic, jb_, jc_, sgn) -> bool:
    """Inside test for one edge; points exactly on it are decided by shifting the lattice
    point by (δ, δ²) in the projected plane (simulation of simplicity)."""
    if e != 0.0:
        return e * sgn > 0
    db = jb_ - ib
    dc = jc_ - ic
    tie = -dc if dc != 0.0 else db
    return tie * sgn > 0


@njit(cache=True)
def scan_crossings(gv, faces, res, record_pairs):
    """Create the voxel set from triangle/grid-edge crossings (the encoder's first step).

    Args:
        gv: [V, 3] float64 vertex positions in grid units.
        faces: [F, 3] int64.
        res: grid resolution.
        record_pairs: also return the unique (triangle, voxel) pairs (for attributes).

    Returns:
        keys, vals: the voxel hash table; coords [N, 3] int32; flags [N] uint8 (bit a = the
        +1,+1-corner edge along axis a is crossed); acc [N, ACC_WIDTH]; pairs [P, 2] int32.
    """
    num_faces = faces.shape[0]
    keys, vals = new_table(4 * num_faces + 1024)
    cap = max(1024, 2 * num_faces)
    coords = np.zeros((cap, 3), dtype=np.int32)
    flags = np.zeros(cap, dtype=np.uint8)
    acc = np.zeros((cap, ACC_WIDTH), dtype=np.float64)
    last_tri = np.full(cap, -1, dtype=np.int64)
    pairs = np.zeros((cap if record_pairs else 1, 2), dtype=np.int32)
    n = 0
    npairs = 0
    vox = np.zeros(3, dtype=np.int64)
    for t in range(num_faces):
        n0, n1, n2, d, ok = _plane(gv, faces, t)
        if not ok:
            continue
        for a in range(3):
            b = (a + 1) % 3
            c = (a + 2) % 3
            p0 = gv[faces[t, 0]]
            p1 = gv[faces[t, 1]]
            p2 = gv[faces[t, 2]]
            area2 = (p1[b] - p0[b]) * (p2[c] - p0[c]) - (p1[c] - p0[c]) * (p2[b] - p0[b])
            if area2 == 0.0:
                continue  # the triangle is parallel to axis a: no crossings
            sgn = 1.0 if area2 > 0 else -1.0
            jb0 = max(1, int(np.ceil(min(p0[b], p1[b], p2[b]))))
            jb1 = min(res - 1, int(np.floor(max(p0[b], p1[b], p2[b]))))
            jc0 = max(1, int(np.ceil(min(p0[c], p1[c], p2[c]))))
            jc1 = min(res - 1, int(np.floor(max(p0[c], p1[c], p2[c]))))
            for jb in range(jb0, jb1 + 1):
                for jc in range(jc0, jc1 + 1):
                    # watertight point-in-triangle test of the lattice point (jb, jc)
                    e0 = _edge(p1[b], p1[c], p2[b], p2[c], jb, jc)
                    if not _claims(e0, p1[b], p1[c], p2[b], p2[c], sgn):
                        continue
                    e1 = _edge(p2[b], p2[c], p0[b], p0[c], jb, jc)
                    if not _claims(e1, p2[b], p2[c], p0[b], p0[c], sgn):
                        continue
                    e2 = _edge(p0[b], p0[c], p1[b], p1[c], jb, jc)
                    if not _claims(e2, p0[b], p0[c], p1[b], p1[c], sgn):
                        continue
                    tot = e0 + e1 + e2
                    w1 = e1 / tot
                    w2 = e2 / tot
                    # interpolate from p0 so that a face lying in a lattice plane gives it exactly
                    px = p0[0] + w1 * (p1[0] - p0[0]) + w2 * (p2[0] - p0[0])
                    py = p0[1] + w1 * (p1[1] - p0[1]) + w2 * (p2[1] - p0[1])
                    pz = p0[2] + w1 * (p1[2] - p0[2]) + w2 * (p2[2] - p0[2])
                    pa = p0[a] + w1 * (p1[a] - p0[a]) + w2 * (p2[a] - p0[a])
                    ia = int(np.floor(pa))
                    if ia < 0 or ia >= res:
                        continue
                    for db in range(2):
                        for dc in range(2):
                            vox[a] = ia
                            vox[b] = jb - 1 + db
                            vox[c] = jc - 1 + dc
                            if n + 1 > keys.shape[0] // 2:
                                keys, vals = grow(keys, vals)
                            i = insert(keys, vals, _key(vox[0], vox[1], vox[2], res), np.int32(n))
                            if i == n:
                                if n == coords.shape[0]:
                                    coords = grow_rows(coords, 2 * n)
                                    acc = grow_rows(acc, 2 * n)
                                    flags2 = np.zeros(2 * n, dtype=np.uint8)
                                    flags2[:n] = flags
                                    flags = flags2
                                    last2 = np.full(2 * n, -1, dtype=np.int64)
                                    last2[:n] = last_tri
                                    last_tri = last2
                                coords[n, 0] = vox[0]
                                coords[n, 1] = vox[1]
                                coords[n, 2] = vox[2]
                                n += 1
                            if db == 0 and dc == 0:
                                flags[i] |= np.uint8(1 << a)
                            acc[i, 9] += px
                            acc[i, 10] += py
                            acc[i, 11] += pz
                            acc[i, 12] += 1.0
                            _add_quadric(acc, i, n0, n1, n2, d, 1.0)
                            if record_pairs and last_tri[i] != t:
                                last_tri[i] = t
                                if npairs == pairs.shape[0]:
                                    pairs = grow_rows(pairs, 2 * npairs)
                                pairs[npairs, 0] = t
                                pairs[npairs, 1] = i
                                npairs += 1
    return keys, vals, coords[:n].copy(), flags[:n].copy(), acc[:n].copy(), pairs[:npairs].copy()


@njit(cache=True, inline="always")
def _separated(a0, a1, a2, x0, y0, z0, x1, y1, z1, x2, y2, z2) -> bool:
    """True if axis ``a`` separates the triangle (relative to the box centre) from the unit box."""
    q0 = a0 * x0 + a1 * y0 + a2 * z0
    q1 = a0 * x1 + a1 * y1 + a2 * z1
    q2 = a0 * x2 + a1 * y2 + a2 * z2
    r = 0.5 * (abs(a0) + abs(a1) + abs(a2))
    return min(q0, q1, q2) > r or max(q0, q1, q2) < -r


@njit(cache=True, inline="always")
def _tri_box_overlap(p0, p1, p2, cx, cy, cz, n0, n1, n2, d) -> bool:
    """True if the triangle touches the unit box centred at (cx, cy, cz) (13-axis SAT, no allocation)."""
    dist = n0 * cx + n1 * cy + n2 * cz + d
    if abs(dist) > 0.5 * (abs(n0) + abs(n1) + abs(n2)):
        return False
    x0, y0, z0 = p0[0] - cx, p0[1] - cy, p0[2] - cz
    x1, y1, z1 = p1[0] - cx, p1[1] - cy, p1[2] - cz
    x2, y2, z2 = p2[0] - cx, p2[1] - cy, p2[2] - cz
    if min(x0, x1, x2) > 0.5 or max(x0, x1, x2) < -0.5:
        return False
    if min(y0, y1, y2) > 0.5 or max(y0, y1, y2) < -0.5:
        return False
    if min(z0, z1, z2) > 0.5 or max(z0, z1, z2) < -0.5:
        return False
    for k in range(3):
        if k == 0:
            ex, ey, ez = x1 - x0, y1 - y0, z1 - z0
        elif k == 1:
            ex, ey, ez = x2 - x1, y2 - y1, z2 - z1
        else:
            ex, ey, ez = x0 - x2, y0 - y2, z0 - z2
        if _separated(0.0, -ez, ey, x0, y0, z0, x1, y1, z1, x2, y2, z2):
            return False
        if _separated(ez, 0.0, -ex, x0, y0, z0, x1, y1, z1, x2, y2, z2):
            return False
        if _separated(-ey, ex, 0.0, x0, y0, z0, x1, y1, z1, x2, y2, z2):
            return False
    return True


@njit(cache=True)
def face_term(gv, faces, res, keys, vals, acc):
    """Add each triangle's plane quadric (weight 1) to every existing voxel it overlaps."""
    vox = np.zeros(3, dtype=np.int64)
    for t in range(faces.shape[0]):
        n0, n1, n2, d, ok = _plane(gv, faces, t)
        if not ok:
            continue
        p0 = gv[faces[t, 0]]
        p1 = gv[faces[t, 1]]
        p2 = gv[faces[t, 2]]
        nrm = (n0, n1, n2)
        k = 0
        if abs(n1) > abs(nrm[k]):
            k = 1
        if abs(n2) > abs(nrm[k]):
            k = 2
        u = (k + 1) % 3
        v = (k + 2) % 3
        lo_k = min(p0[k], p1[k], p2[k])
        hi_k = max(p0[k], p1[k], p2[k])
        iu0 = max(0, int(np.floor(min(p0[u], p1[u], p2[u]))))
        iu1 = min(res - 1, int(np.floor(max(p0[u], p1[u], p2[u]))))
        iv0 = max(0, int(np.floor(min(p0[v], p1[v], p2[v]))))
        iv1 = min(res - 1, int(np.floor(max(p0[v], p1[v], p2[v]))))
        for iu in range(iu0, iu1 + 1):
            for iv in range(iv0, iv1 + 1):
                # range of the plane's k-coordinate over this column's cell
                zmin = np.inf
                zmax = -np.inf
                for cu in range(2):
                    for cv in range(2):
                        z = -(d + nrm[u] * (iu + cu) + nrm[v] * (iv + cv)) / nrm[k]
                        zmin = min(zmin, z)
                        zmax = max(zmax, z)
                ik0 = max(0, int(np.floor(max(zmin, lo_k))))
                ik1 = min(res - 1, int(np.floor(min(zmax, hi_k))))
                for ik in range(ik0, ik1 + 1):
                    vox[k] = ik
                    vox[u] = iu
                    vox[v] = iv
                    i = find(keys, vals, _key(vox[0], vox[1], vox[2], res))
                    if i < 0:
                        continue
                    if _tri_box_overlap(p0, p1, p2, vox[0] + 0.5, vox[1] + 0.5, vox[2] + 0.5,
                                        n0, n1, n2, d):
                        _add_quadric(acc, i, n0, n1, n2, d, 1.0)


@njit(cache=True)
def boundary_term(gv, edges, res, keys, vals, acc, weight):
    """Add ``weight`` times each boundary edge's line quadric to the voxels it passes."""
    for e in range(edges.shape[0]):
        a = gv[edges[e, 0]]
        b = gv[edges[e, 1]]
        dvec = b - a
        ln = np.sqrt(np.sum(dvec * dvec))
        if not ln > 1e-300:
            continue
        u = dvec / ln
        # A = I - u uᵀ, b = -A a
        A = np.eye(3) - np.outer(u, u)
        bq = -(A @ a)
        voxel = np.empty(3, dtype=np.int64)
        step = np.zeros(3, dtype=np.int64)
        t_max = np.full(3, np.inf)
        t_delta = np.full(3, np.inf)
        end = np.empty(3, dtype=np.int64)
        for k in range(3):
            voxel[k] = min(res - 1, max(0, int(np.floor(a[k]))))
            end[k] = min(res - 1, max(0, int(np.floor(b[k]))))
            if dvec[k] > 0:
                step[k] = 1
                t_max[k] = (voxel[k] + 1 - a[k]) / dvec[k]
                t_delta[k] = 1.0 / dvec[k]
            elif dvec[k] < 0:
                step[k] = -1
                t_max[k] = (voxel[k] - a[k]) / dvec[k]
                t_delta[k] = -1.0 / dvec[k]
        limit = abs(end[0] - voxel[0]) + abs(end[1] - voxel[1]) + abs(end[2] - voxel[2]) + 1
        for _ in range(limit):
            i = find(keys, vals, _key(voxel[0], voxel[1], voxel[2], res))
            if i >= 0:
                acc[i, 0] += weight * A[0, 0]
                acc[i, 1] += weight * A[0, 1]
                acc[i, 2] += weight * A[0, 2]
                acc[i, 3] += weight * A[1, 1]
                acc[i, 4] += weight * A[1, 2]
                acc[i, 5] += weight * A[2, 2]
                acc[i, 6] += weight * bq[0]
                acc[i, 7] += weight * bq[1]
                acc[i, 8] += weight * bq[2]
            k = np.argmin(t_max)
            if t_max[k] > 1.0:
                break
            voxel[k] += step[k]
            t_max[k] += t_delta[k]
            if voxel[k] < 0 or voxel[k] >= res:
                break
