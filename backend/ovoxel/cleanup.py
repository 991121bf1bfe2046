"""Hole filling for extracted O-Voxel meshes.

numpy + scipy on the CPU; returns a new :class:`TriangleMesh` with only vertices and faces
(extracted meshes carry no other attributes). Edges, orientation and the other topology
routines live in :mod:`backend.geometry.topology`.
"""

from __future__ import annotations

import numpy as np

from backend.geometry import TriangleMesh
from backend.geometry.topology import boundary_edges, connected_labels


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
    loop = connected_labels(be, nv)[be[:, 0]]  # [B] loop id per boundary edge
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

