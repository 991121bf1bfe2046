"""Placing an arbitrary mesh in the O-Voxel unit cube (spec §9.2, last paragraph)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from backend.geometry import MeshError, TriangleMesh

# The reference scales by 0.99999 / extent so that no vertex lands exactly on the cube's faces.
UNIT_CUBE_FILL = 0.99999


@dataclass(frozen=True)
class Normalization:
    """``normalized = (original - center) * scale``; :meth:`invert` maps points back."""

    center: np.ndarray  # [3]
    scale: float

    def apply(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, dtype=np.float64) - self.center) * self.scale

    def invert(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points, dtype=np.float64) / self.scale + self.center


def normalize_to_unit_cube(
    mesh: TriangleMesh, fill: float = UNIT_CUBE_FILL
) -> tuple[TriangleMesh, Normalization]:
    """Centre the mesh's bounding box at the origin and scale its longest side to ``fill``.

    The result lies in [-0.5, 0.5]^3 (for ``fill <= 1``). Only vertices used by faces
    define the box. Returns the new mesh (other attributes shared, not copied) and
    the transform.

    Raises:
        MeshError: no faces, non-finite coordinates, or all vertices coincide.
    """
    mesh.validate()
    lo, hi = mesh.bounds()
    extent = float(np.max(hi - lo))
    if not extent > 0:
        raise MeshError("the mesh has zero extent (all vertices coincide)")
    norm = Normalization(center=(lo + hi) / 2, scale=fill / extent)
    return replace(mesh, vertices=norm.apply(mesh.vertices)), norm
