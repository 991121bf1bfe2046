"""Geometry metrics for the round-trip tests: exact point-to-mesh distance, normals, boundaries."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from backend.geometry import TriangleMesh
from backend.geometry.topology import boundary_edges


def sample_surface(mesh: TriangleMesh, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` area-uniform points [n, 3] and the index of the triangle each lies on [n]."""
    p = mesh.vertices[mesh.faces]
    area = np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1)
    tri = rng.choice(len(area), size=n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    w = np.stack([1 - s, s * (1 - r2), s * r2], 1)
    return np.einsum("nk,nkc->nc", w, p[tri]), tri


def _segment_dist(q, a, b):
    ab = b - a
    den = np.maximum(np.einsum("...c,...c->...", ab, ab), 1e-30)
    t = np.clip(np.einsum("...c,...c->...", q - a, ab) / den, 0, 1)
    return np.linalg.norm(q - (a + t[..., None] * ab), axis=-1)


def point_triangle_distance(q: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Exact distance from points q [..., 3] to triangles tri [..., 3, 3]."""
    a, b, c = tri[..., 0, :], tri[..., 1, :], tri[..., 2, :]
    n = np.cross(b - a, c - a)
    nn = np.linalg.norm(n, axis=-1)
    nu = n / np.maximum(nn, 1e-30)[..., None]
    d = np.einsum("...c,...c->...", q - a, nu)
    p = q - d[..., None] * nu
    inside = np.ones(d.shape, dtype=bool)
    for u, v in ((a, b), (b, c), (c, a)):
        inside &= np.einsum("...c,...c->...", np.cross(v - u, p - u), n) >= 0
    edge = np.minimum(np.minimum(_segment_dist(q, a, b), _segment_dist(q, b, c)), _segment_dist(q, c, a))
    return np.where(inside & (nn > 0), np.abs(d), edge)


def point_mesh_distance(q: np.ndarray, mesh: TriangleMesh, k: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Distance from each point to the mesh and the closest triangle, among the ``k`` triangles
    whose centroids are nearest (exact when triangles are small relative to their spacing)."""
    tris = mesh.vertices[mesh.faces]
    tree = cKDTree(tris.mean(axis=1))
    k = min(k, len(tris))
    _, cand = tree.query(q, k=k)
    cand = cand.reshape(len(q), k)
    dist = point_triangle_distance(q[:, None, :], tris[cand])
    best = dist.argmin(axis=1)
    rows = np.arange(len(q))
    return dist[rows, best], cand[rows, best]


def face_normals(mesh: TriangleMesh) -> np.ndarray:
    p = mesh.vertices[mesh.faces]
    n = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-30)


def edge_points(mesh: TriangleMesh, edges: np.ndarray, spacing: float) -> np.ndarray:
    """Points along ``edges`` [E, 2] no farther apart than ``spacing`` (edge midpoints at least)."""
    out = [np.zeros((0, 3))]
    for i, j in edges:
        a, b = mesh.vertices[i], mesh.vertices[j]
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / spacing)))
        t = (np.arange(n) + 0.5) / n
        out.append(a + t[:, None] * (b - a))
    return np.concatenate(out)


def boundary_points(mesh: TriangleMesh, spacing: float = np.inf) -> np.ndarray:
    """Points along the boundary edges of the mesh (empty if closed); see :func:`edge_points`."""
    return edge_points(mesh, boundary_edges(mesh.faces), spacing)
