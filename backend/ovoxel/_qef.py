"""numba kernel: per-voxel QEF solve constrained to the voxel box.

Each voxel's energy is ``E(x) = xᵀAx + 2bᵀx`` (+ a constant) from the accumulated
quadrics. The solve runs in voxel-local coordinates ``y = x - corner`` (``y ∈ [0, 1]³``)
for conditioning. If the free minimum lies outside the box, the minima restricted
to the 6 faces (2-D solves), 12 edges (1-D) and 8 corners are compared and the
inside candidate with the least energy wins.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_INSIDE_EPS = 1e-9


@njit(cache=True, inline="always")
def _energy(A, b, y):
    return y @ (A @ y) + 2.0 * (b @ y)


@njit(cache=True, inline="always")
def _inside(y) -> bool:
    return (y.min() >= -_INSIDE_EPS) and (y.max() <= 1.0 + _INSIDE_EPS)


@njit(cache=True, inline="always")
def _keep_if_lower(A, b, y, best, best_e):
    """Copy candidate ``y`` into ``best`` when its energy is below ``best_e``; the new least energy."""
    e = _energy(A, b, y)
    if e < best_e:
        best[:] = y
        return e
    return best_e


@njit(cache=True)
def _constrained(A, b):
    """Least-energy point of the unit box on its faces, edges and corners."""
    best = np.zeros(3)
    best_e = np.inf
    y = np.zeros(3)
    # faces: one coordinate fixed, solve the 2x2 system of the other two
    for f in range(3):
        u = (f + 1) % 3
        v = (f + 2) % 3
        for val in range(2):
            ru = -(b[u] + A[u, f] * val)
            rv = -(b[v] + A[v, f] * val)
            det = A[u, u] * A[v, v] - A[u, v] * A[u, v]
            if abs(det) <= 1e-14 * (A[u, u] * A[v, v] + 1e-300):
                continue
            y[f] = val
            y[u] = (ru * A[v, v] - rv * A[u, v]) / det
            y[v] = (rv * A[u, u] - ru * A[u, v]) / det
            if _inside(y):
                best_e = _keep_if_lower(A, b, y, best, best_e)
    # edges: one free coordinate
    for f in range(3):
        u = (f + 1) % 3
        v = (f + 2) % 3
        if A[f, f] <= 1e-300:
            continue
        for vu in range(2):
            for vv in range(2):
                y[u] = vu
                y[v] = vv
                y[f] = -(b[f] + A[f, u] * vu + A[f, v] * vv) / A[f, f]
                if _inside(y):
                    best_e = _keep_if_lower(A, b, y, best, best_e)
    # corners
    for c in range(8):
        y[0] = c & 1
        y[1] = (c >> 1) & 1
        y[2] = (c >> 2) & 1
        best_e = _keep_if_lower(A, b, y, best, best_e)
    return best


@njit(cache=True)
def solve_dual_vertices(coords, acc, regularization_weight):
    """Dual vertex of every voxel in voxel-local coordinates.

    Args:
        coords: [N, 3] int32 voxel coordinates.
        acc: [N, 13] float64 accumulators (see ``_encode_kernels``).
        regularization_weight: weight of the pull towards the mean intersection point.

    Returns:
        [N, 3] float64 offsets in [0, 1]^3 (dual vertex = coords + offset, grid units).
    """
    n = coords.shape[0]
    out = np.empty((n, 3))
    A = np.empty((3, 3))
    b = np.empty(3)
    y = np.empty(3)
    for i in range(n):
        cnt = acc[i, 12]
        wr = regularization_weight * cnt
        A[0, 0] = acc[i, 0] + wr
        A[0, 1] = acc[i, 1]
        A[0, 2] = acc[i, 2]
        A[1, 1] = acc[i, 3] + wr
        A[1, 2] = acc[i, 4]
        A[2, 2] = acc[i, 5] + wr
        A[1, 0] = A[0, 1]
        A[2, 0] = A[0, 2]
        A[2, 1] = A[1, 2]
        corner = np.array((float(coords[i, 0]), float(coords[i, 1]), float(coords[i, 2])))
        # b (global) + regularisation (-w * sum of points), then shifted to local coordinates
        for k in range(3):
            b[k] = acc[i, 6 + k] - regularization_weight * acc[i, 9 + k]
        b_loc = A @ corner + b
        # free minimum by Cramer's rule
        c00 = A[1, 1] * A[2, 2] - A[1, 2] * A[2, 1]
        c01 = A[1, 2] * A[2, 0] - A[1, 0] * A[2, 2]
        c02 = A[1, 0] * A[2, 1] - A[1, 1] * A[2, 0]
        det = A[0, 0] * c00 + A[0, 1] * c01 + A[0, 2] * c02
        scale = A[0, 0] * A[1, 1] * A[2, 2]
        solved = abs(det) > 1e-12 * abs(scale) and scale != 0.0
        if solved:
            r = -b_loc
            inv = 1.0 / det
            y[0] = (r[0] * c00 + r[1] * (A[0, 2] * A[2, 1] - A[0, 1] * A[2, 2])
                    + r[2] * (A[0, 1] * A[1, 2] - A[0, 2] * A[1, 1])) * inv
            y[1] = (r[0] * c01 + r[1] * (A[0, 0] * A[2, 2] - A[0, 2] * A[2, 0])
                    + r[2] * (A[0, 2] * A[1, 0] - A[0, 0] * A[1, 2])) * inv
            y[2] = (r[0] * c02 + r[1] * (A[0, 1] * A[2, 0] - A[0, 0] * A[2, 1])
                    + r[2] * (A[0, 0] * A[1, 1] - A[0, 1] * A[1, 0])) * inv
        if solved and _inside(y):
            out[i] = y
        else:
            out[i] = _constrained(A, b_loc)
    return np.minimum(np.maximum(out, 0.0), 1.0)
