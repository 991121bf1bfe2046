"""Tangent-space normal map baked from the dense generated surface onto the decimated mesh.

Decimation keeps the silhouette but flattens fine relief; the map gives it back at render time.
For every covered texel of the decimated mesh's UV atlas:

1. its point on the decimated surface moves to the closest point of the dense surface (the
   same projection the colour bake uses, so it is done once for both);
2. the dense surface's smooth normal there is interpolated from its vertex normals;
3. that normal is written in the decimated mesh's tangent frame at the texel (interpolated
   vertex normal, MikkTSpace-style tangent, bitangent ``w * cross(n, t)``; see
   :mod:`.tangents`), encoded as glTF stores normal textures: ``rgb = xyz * 0.5 + 0.5``,
   linear, +Y up the image.

Uncovered texels are filled by the same dilation as the colour textures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.geometry import topology

from .bake import dilate
from .material import to_u8


@dataclass(frozen=True)
class DenseSurface:
    """The dense mesh, consistently wound, with its smooth vertex normals."""

    vertices: np.ndarray  # [V, 3] float64
    faces: np.ndarray  # [F, 3] int64
    normals: np.ndarray  # [V, 3] unit

    @classmethod
    def from_mesh(cls, vertices: np.ndarray, faces: np.ndarray) -> DenseSurface:
        """Orient ``faces`` first: the extracted surface's winding is not consistent, and vertex
        normals summed over faces wound both ways cancel out."""
        v = np.asarray(vertices, np.float64)
        f = topology.orient_faces(v, np.asarray(faces, np.int64))
        return cls(v, f, topology.vertex_normals(v, f).astype(np.float64))

    def normals_at(self, points: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """Unit normals ``[N, 3]`` at ``points [N, 3]`` lying on the given faces ``[N]``."""
        corners = self.faces[faces]  # [N, 3]
        w = barycentric(points, *(self.vertices[corners[:, c]] for c in range(3)))  # [N, 3]
        n = (self.normals[corners] * w[..., None]).sum(1)
        return _unit(n)


def barycentric(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Barycentric weights ``[N, 3]`` of points ``p`` (on or near) triangles ``(a, b, c)``, all ``[N, 3]``.

    Degenerate triangles give equal weights.
    """
    v0, v1, v2 = b - a, c - a, p - a
    d00, d01, d11 = (v0 * v0).sum(1), (v0 * v1).sum(1), (v1 * v1).sum(1)
    d20, d21 = (v2 * v0).sum(1), (v2 * v1).sum(1)
    denom = d00 * d11 - d01 * d01
    ok = np.abs(denom) > 1e-30
    safe = np.where(ok, denom, 1.0)
    wb = np.where(ok, (d11 * d20 - d01 * d21) / safe, 1.0 / 3.0)
    wc = np.where(ok, (d00 * d21 - d01 * d20) / safe, 1.0 / 3.0)
    return np.stack([1.0 - wb - wc, wb, wc], 1)


def texel_frames(faces: np.ndarray, normals: np.ndarray, tangents: np.ndarray, face_img: np.ndarray,
                 bary_img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tangent frame ``(t, b, n)``, each ``[M, 3]`` unit, of the covered texels (row-major order).

    ``normals [V, 3]`` and ``tangents [V, 4]`` are the low-poly mesh's vertex attributes; ``face_img``
    and ``bary_img`` the UV rasterizer's output.
    """
    mask = face_img >= 0
    f = faces[face_img[mask]]  # [M, 3]
    w = bary_img[mask].astype(np.float64)[..., None]  # [M, 3, 1]
    n = _unit((normals[f].astype(np.float64) * w).sum(1))
    tw = (tangents[f].astype(np.float64) * w).sum(1)  # [M, 4]
    t = _unit(tw[:, :3] - n * (tw[:, :3] * n).sum(1, keepdims=True))
    b = np.where(tw[:, 3:] < 0, -1.0, 1.0) * np.cross(n, t)
    return t, b, n


def bake_normal_map(faces: np.ndarray, normals: np.ndarray, tangents: np.ndarray, face_img: np.ndarray,
                    bary_img: np.ndarray, dense: DenseSurface, hit_points: np.ndarray, hit_faces: np.ndarray,
                    rings: int = 4, device: str = "cpu") -> np.ndarray:
    """The normal texture ``[H, W, 3]`` uint8 (linear; glTF's ``normalTexture`` encoding).

    Args:
        faces, normals, tangents: the low-poly mesh that was rasterized (``[F, 3]``, ``[V, 3]``,
            ``[V, 4]`` as from :func:`.tangents.vertex_tangents`).
        face_img, bary_img: the rasterizer's output (numpy).
        dense: the surface whose normals are baked.
        hit_points, hit_faces: each covered texel's closest point on ``dense`` and the dense face it
            lies on (``SurfaceProjector.closest`` of the texel points), row-major texel order.
        device: where the dilation runs (torch device string).
    """
    mask = face_img >= 0
    t, b, n = texel_frames(faces, normals, tangents, face_img, bary_img)
    d = dense.normals_at(hit_points, hit_faces)
    # Where orientation could not be made consistent (non-manifold parts), a dense normal can
    # point inward; a normal map cannot show a back face, so it is turned to the low-poly side.
    d = np.where((d * n).sum(1, keepdims=True) < 0, -d, d)
    local = np.stack([(d * t).sum(1), (d * b).sum(1), (d * n).sum(1)], 1)  # [M, 3]
    rgb = np.empty((*mask.shape, 3), np.float32)
    rgb[:] = (0.5, 0.5, 1.0)  # flat: what a texture with no covered texel at all keeps
    rgb[mask] = local * 0.5 + 0.5
    filled = dilate(rgb, mask, rings, device)
    return to_u8(_unit(filled.reshape(-1, 3) * 2.0 - 1.0).reshape(filled.shape) * 0.5 + 0.5)


def _unit(x: np.ndarray) -> np.ndarray:
    length = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.where(length > 1e-20, x / np.maximum(length, 1e-20), np.array([0.0, 0.0, 1.0]))
