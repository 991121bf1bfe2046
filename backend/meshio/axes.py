"""Explicit axis conversions between the pipeline's Z-up frame and glTF's Y-up frame."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from backend.geometry import TriangleMesh

# (x, y, z) Z-up -> (x, z, -y) Y-up, a proper rotation (keeps winding).
Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


def _rotate(mesh: TriangleMesh, rot: np.ndarray) -> TriangleMesh:
    normals = None if mesh.normals is None else mesh.normals @ rot.T
    return replace(mesh, vertices=mesh.vertices @ rot.T, normals=normals)


def z_up_to_y_up(mesh: TriangleMesh) -> TriangleMesh:
    """Rotate positions and normals from Z-up to glTF Y-up: (x, y, z) -> (x, z, -y)."""
    return _rotate(mesh, Z_UP_TO_Y_UP)


def y_up_to_z_up(mesh: TriangleMesh) -> TriangleMesh:
    """Inverse of :func:`z_up_to_y_up`: (x, y, z) -> (x, -z, y)."""
    return _rotate(mesh, Z_UP_TO_Y_UP.T)
