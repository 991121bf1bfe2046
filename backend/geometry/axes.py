"""Axis conversions between the pipeline's Z-up frame and glTF's Y-up frame: the one home of
the rotation matrices.

Mesh readers keep a file's own axes; :func:`file_up_axis` says which axis is up in a file
of a given format, so a caller can bring it into the Z-up pipeline frame with
:func:`y_up_to_z_up` (or :func:`to_z_up_matrix`) and back with :func:`z_up_to_y_up`.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from .mesh import TriangleMesh

UP_AXES = ("y", "z")
# glTF is Y-up by specification; OBJ is Y-up by common convention (Blender, Maya, most exporters).
# Other formats (PLY) are taken as Z-up, the pipeline's own frame.
Y_UP_SUFFIXES = (".glb", ".gltf", ".obj")

# (x, y, z) Z-up -> (x, z, -y) Y-up, a proper rotation (keeps winding).
Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
Y_UP_TO_Z_UP = Z_UP_TO_Y_UP.T  # (x, y, z) -> (x, -z, y)


def _rotate(mesh: TriangleMesh, rot: np.ndarray) -> TriangleMesh:
    normals = None if mesh.normals is None else mesh.normals @ rot.T
    return replace(mesh, vertices=mesh.vertices @ rot.T, normals=normals)


def z_up_to_y_up(mesh: TriangleMesh) -> TriangleMesh:
    """Rotate positions and normals from Z-up to glTF Y-up: (x, y, z) -> (x, z, -y)."""
    return _rotate(mesh, Z_UP_TO_Y_UP)


def y_up_to_z_up(mesh: TriangleMesh) -> TriangleMesh:
    """Inverse of :func:`z_up_to_y_up`: (x, y, z) -> (x, -z, y)."""
    return _rotate(mesh, Y_UP_TO_Z_UP)


def to_z_up_matrix(up_axis: str) -> np.ndarray:
    """The rotation ``[3, 3]`` that brings points whose up axis is ``up_axis`` (``"y"``/``"z"``) to Z-up."""
    if up_axis not in UP_AXES:
        raise ValueError(f"up axis must be one of {UP_AXES}, got {up_axis!r}")
    return Y_UP_TO_Z_UP.copy() if up_axis == "y" else np.eye(3)


def file_up_axis(path: str | os.PathLike) -> str:
    """``"y"`` for formats whose positions are Y-up (glTF, GLB, OBJ), else ``"z"`` (PLY)."""
    return "y" if Path(path).suffix.lower() in Y_UP_SUFFIXES else "z"
