"""Per-vertex tangents in the MikkTSpace manner, the frame glTF and Blender decode normal maps in.

A tangent-space normal map is only correct in the frame the viewer rebuilds at render time.
glTF asks clients without a TANGENT attribute to compute MikkTSpace tangents, and Blender's
Normal Map node always does; both read the green channel as "up in the image" (OpenGL
convention). So the frame here follows MikkTSpace's construction:

- per face, the tangent is the surface direction of increasing ``u`` and the bitangent that
  of increasing ``t = 1 - v`` (glTF's ``v`` runs down the image, ``t`` up it);
- each face's tangent is projected into the plane of each corner's vertex normal, normalised,
  and summed weighted by the corner angle; the sum is normalised;
- the sign ``w`` is +1 where the UV map keeps the face's orientation, -1 where it mirrors it,
  and the bitangent is ``w * cross(normal, tangent)`` (glTF's TANGENT definition).

MikkTSpace also splits a vertex whose faces disagree in orientation; the unwrapped meshes here
have their seams split already and charts are not mirrored, so the majority sign is kept.
"""

from __future__ import annotations

import numpy as np


def face_uv_frames(vertices: np.ndarray, faces: np.ndarray,
                   uvs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per face: ``(dP/du [F, 3], dP/dt [F, 3], orientation-preserving [F] bool)``.

    ``uvs`` follow glTF (``v`` down the image); ``t = 1 - v``. Faces with a degenerate UV
    triangle get zero vectors.
    """
    p = vertices[faces].astype(np.float64)  # [F, 3, 3]
    st = uvs[faces].astype(np.float64)  # [F, 3, 2]
    st[..., 1] = 1.0 - st[..., 1]
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    d1, d2 = st[:, 1] - st[:, 0], st[:, 2] - st[:, 0]
    area2 = d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1]  # twice the signed UV area
    ok = np.abs(area2) > 1e-20
    inv = np.where(ok, 1.0 / np.where(ok, area2, 1.0), 0.0)[:, None]
    tangent = (e1 * d2[:, 1:2] - e2 * d1[:, 1:2]) * inv
    bitangent = (e2 * d1[:, 0:1] - e1 * d2[:, 0:1]) * inv
    return tangent, bitangent, area2 > 0


def vertex_tangents(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray,
                    normals: np.ndarray) -> np.ndarray:
    """glTF TANGENT attribute ``[V, 4]`` float32: unit xyz orthogonal to ``normals``, w = +-1."""
    v = np.asarray(vertices, np.float64)
    n = np.asarray(normals, np.float64)
    tangent, _, preserving = face_uv_frames(v, faces, uvs)
    tri = v[faces]  # [F, 3, 3]
    total = np.zeros_like(v)
    sign = np.zeros(len(v))
    for c in range(3):
        corner = faces[:, c]
        a = tri[:, (c + 1) % 3] - tri[:, c]
        b = tri[:, (c + 2) % 3] - tri[:, c]
        cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
        angle = np.arccos(np.clip(cos, -1.0, 1.0))  # [F]
        nc = n[corner]
        t = tangent - nc * (tangent * nc).sum(1, keepdims=True)  # into the corner's tangent plane
        length = np.linalg.norm(t, axis=1, keepdims=True)
        t = np.where(length > 1e-20, t / np.maximum(length, 1e-20), 0.0)
        np.add.at(total, corner, t * angle[:, None])
        np.add.at(sign, corner, np.where(preserving, angle, -angle) * (length[:, 0] > 1e-20))
    total -= n * (total * n).sum(1, keepdims=True)
    length = np.linalg.norm(total, axis=1, keepdims=True)
    out = np.where(length > 1e-20, total / np.maximum(length, 1e-20), _any_perpendicular(n))
    w = np.where(sign < 0, -1.0, 1.0)
    return np.concatenate([out, w[:, None]], 1).astype(np.float32)


def _any_perpendicular(n: np.ndarray) -> np.ndarray:
    """A unit vector orthogonal to each row of ``n`` (for vertices whose faces have no UV area)."""
    helper = np.where(np.abs(n[:, :1]) < 0.9, np.array([[1.0, 0.0, 0.0]]), np.array([[0.0, 1.0, 0.0]]))
    t = np.cross(n, helper)
    return t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-20)
