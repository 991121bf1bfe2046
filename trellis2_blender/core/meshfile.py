"""The mesh file a retexture job hands to the backend. No ``bpy``: numpy only.

A binary little-endian PLY with one UV per vertex: ``x y z`` and ``nx ny nz`` (float), ``s t``
(texture coordinates, ``t = 0`` at the image bottom, as Blender and PLY have it) and a list of
triangles. Positions and normals are written Y-up, ``(x, y, z) -> (x, z, -y)``: the backend
reads mesh files (glTF, OBJ, PLY) as Y-up, so the object arrives upright in its frame. Only
the textures of a retexture result come back into Blender, so nothing is converted back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

Z_UP_TO_Y_UP = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=np.float64)

_FACE = np.dtype([("count", "u1"), ("corners", "<i4", (3,))])


def write_ply(path: Path | str, positions, faces, uvs, normals=None) -> None:
    """Write ``positions [V, 3]`` and ``normals`` (Blender's Z-up frame), ``faces [F, 3]``, ``uvs [V, 2]``.

    Without ``normals`` the file has none (the backend then computes its own).
    """
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    uvs = np.asarray(uvs, dtype=np.float64).reshape(-1, 2)
    if len(uvs) != len(positions):
        raise ValueError(f"uvs must be [V, 2] with V = {len(positions)}, got {uvs.shape}")
    if len(faces) and (faces.min() < 0 or faces.max() >= len(positions)):
        raise ValueError("face indices out of range")
    columns = dict(zip("xyz", (positions @ Z_UP_TO_Y_UP.T).T))
    if normals is not None:
        normals = np.asarray(normals, dtype=np.float64).reshape(-1, 3)
        if normals.shape != positions.shape:
            raise ValueError(f"normals must be [V, 3] with V = {len(positions)}, got {normals.shape}")
        columns.update(zip(("nx", "ny", "nz"), (normals @ Z_UP_TO_Y_UP.T).T))
    columns.update(s=uvs[:, 0], t=uvs[:, 1])
    vertices = np.zeros(len(positions), dtype=[(name, "<f4") for name in columns])
    for name, column in columns.items():
        vertices[name] = column
    triangles = np.zeros(len(faces), dtype=_FACE)
    triangles["count"] = 3
    triangles["corners"] = faces
    header = "\n".join([
        "ply", "format binary_little_endian 1.0", "comment trellis2_blender retexture input (Y-up)",
        f"element vertex {len(vertices)}",
        *(f"property float {name}" for name in columns),
        f"element face {len(triangles)}", "property list uchar int vertex_indices", "end_header", ""])
    with open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(vertices.tobytes())
        fh.write(triangles.tobytes())
