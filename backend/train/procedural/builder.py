"""Collects placed primitives and materials into one :class:`TriangleMesh`."""

from __future__ import annotations

import numpy as np

from backend.geometry import TriangleMesh

from .materials import DrawnMaterial, draw_material
from .primitives import Part, transformed

# The finished object's longest side; it is centred at the origin, so it lies inside the
# pipeline's unit cube [-0.5, 0.5]^3 with a margin.
OBJECT_EXTENT = 0.9
# Objects made of a few boxes would have only a few dozen triangles; they are split evenly
# (same shape) until they have at least this many, so every object gives the voxeliser and
# the renderer a comparable amount of surface detail.
MIN_FACES = 500


class ObjectBuilder:
    """An object under construction: materials first (:meth:`material`), then parts (:meth:`add`)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self._materials: list[DrawnMaterial] = []
        self._parts: list[tuple[Part, int]] = []

    def material(self, kind: str, hue: float | None = None) -> int:
        """Draw a new material of ``kind`` (see ``MATERIAL_KINDS``); returns its index."""
        index = len(self._materials)
        self._materials.append(draw_material(kind, self.rng, f"{kind}_{index}", hue=hue))
        return index

    def add(self, part: Part, material: int, rotation: np.ndarray | None = None, at=(0.0, 0.0, 0.0)) -> None:
        """Place ``part`` (rotated, then moved to ``at``) with material index ``material``."""
        self._parts.append((transformed(part, rotation, at), material))

    @property
    def part_count(self) -> int:
        return len(self._parts)

    def build(self) -> TriangleMesh:
        """The object: centred, longest side :data:`OBJECT_EXTENT`, float32, with smooth vertex normals.

        Materials no part uses are dropped and the rest renumbered in first-use order.
        """
        used = sorted({m for _, m in self._parts})
        remap = {old: new for new, old in enumerate(used)}
        counts = [p.vertices.shape[0] for p, _ in self._parts]
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
        vertices = np.concatenate([p.vertices for p, _ in self._parts])
        faces = np.concatenate([p.faces + off for (p, _), off in zip(self._parts, offsets)])
        uvs = np.concatenate([p.uvs * self._materials[m].uv_density for p, m in self._parts])
        face_materials = np.concatenate(
            [np.full(p.faces.shape[0], remap[m], dtype=np.int32) for p, m in self._parts])
        while faces.shape[0] < MIN_FACES:
            vertices, faces, uvs, face_materials = _split_faces(vertices, faces, uvs, face_materials)
        lo, hi = vertices.min(axis=0), vertices.max(axis=0)
        vertices = (vertices - 0.5 * (lo + hi)) * (OBJECT_EXTENT / float(np.max(hi - lo)))
        # Rounding to float32 hides last-bit differences of libm trigonometry between machines
        # (a flip needs a float64 value within one float64 ulp of a float32 rounding boundary).
        vertices = vertices.astype(np.float32)
        return TriangleMesh(
            vertices=vertices,
            faces=faces.astype(np.int32),
            uvs=uvs.astype(np.float32),
            normals=_vertex_normals(vertices, faces),
            materials=[self._materials[m].material for m in used],
            face_materials=face_materials,
        )


def _vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals (float32, unit length; +Z for vertices of zero-area faces only)."""
    v = vertices.astype(np.float64)
    face_normals = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    corners = faces.reshape(-1)
    acc = np.stack([np.bincount(corners, weights=np.repeat(face_normals[:, k], 3), minlength=v.shape[0])
                    for k in range(3)], axis=1)
    length = np.linalg.norm(acc, axis=1, keepdims=True)
    normals = np.where(length > 1e-20, acc / np.maximum(length, 1e-20), np.array([0.0, 0.0, 1.0]))
    return normals.astype(np.float32)


def _split_faces(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, face_materials: np.ndarray):
    """Split every triangle into four at its edge midpoints (the surface and UV mapping do not change)."""
    n = vertices.shape[0]
    f = faces.shape[0]
    a, b, c = faces[:, 0], faces[:, 1], faces[:, 2]
    mids = np.concatenate([(vertices[a] + vertices[b]) / 2, (vertices[b] + vertices[c]) / 2,
                           (vertices[c] + vertices[a]) / 2])
    mid_uvs = np.concatenate([(uvs[a] + uvs[b]) / 2, (uvs[b] + uvs[c]) / 2, (uvs[c] + uvs[a]) / 2])
    ab, bc, ca = n + np.arange(f), n + f + np.arange(f), n + 2 * f + np.arange(f)
    new_faces = np.concatenate([np.stack(t, axis=1) for t in
                                ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))])
    return (np.concatenate([vertices, mids]), new_faces, np.concatenate([uvs, mid_uvs]),
            np.tile(face_materials, 4))
