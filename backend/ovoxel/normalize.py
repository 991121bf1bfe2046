"""Placing an arbitrary mesh in the O-Voxel unit cube ``[-0.5, 0.5]^3``, and taking it back.

:class:`SourceFrame` records what was done to a source mesh on the way in (its file's up
axis and the :class:`Normalization`), so that a decoded mesh can be returned to the
source's own position and size.
"""

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


@dataclass(frozen=True)
class SourceFrame:
    """How a source mesh was brought into the Z-up unit cube.

    The source's positions (in its file's axes) were rotated to Z-up if ``up_axis`` is
    ``"y"`` (:func:`backend.geometry.axes.y_up_to_z_up`), then mapped by ``normalization``.
    :meth:`restore` undoes the normalization, giving Z-up positions in the source's units.
    """

    normalization: Normalization
    up_axis: str  # "y" or "z": the up axis of the source file's positions

    def __post_init__(self) -> None:
        if self.up_axis not in ("y", "z"):
            raise ValueError(f"up_axis must be 'y' or 'z', got {self.up_axis!r}")

    def restore(self, mesh: TriangleMesh) -> TriangleMesh:
        """``mesh`` (Z-up, unit-cube units) moved back to the source's position and size, still Z-up."""
        # A shift and a uniform positive scale leave normals and winding unchanged.
        return replace(mesh, vertices=self.normalization.invert(mesh.vertices))


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
