"""The add-on's retexture input file (trellis2_blender.core.meshfile) as the backend reads it.

No ``bpy`` needed: the writer is plain numpy, the reader is the backend's own ``read_mesh``.
"""

from __future__ import annotations

import numpy as np
import pytest

from backend.meshio import read_mesh
from trellis2_blender.core import meshfile


def _quad_strip():
    # Blender frame (Z-up): two triangles standing up in the XZ plane, UVs with v = 0 at the bottom.
    positions = np.array([[0, 0, 0], [1, 0, 0], [1, 0, 2], [0, 0, 2], [2, 0, 2]], np.float32)
    faces = np.array([[0, 1, 2], [0, 2, 3], [1, 4, 2]], np.int32)
    uvs = np.array([[0, 0], [0.5, 0], [0.5, 1], [0, 1], [1, 1]], np.float32)
    normals = np.tile(np.float32([0, -1, 0]), (5, 1))
    return positions, faces, uvs, normals


def test_backend_reads_the_ply_y_up_with_uvs_and_normals(tmp_path):
    positions, faces, uvs, normals = _quad_strip()
    path = tmp_path / "input_mesh.ply"
    meshfile.write_ply(path, positions, faces, uvs, normals)
    mesh = read_mesh(path)
    # Y-up: Blender's up (z) is the file's y; Blender's -y (towards the front view) is the file's z.
    np.testing.assert_allclose(mesh.vertices, positions[:, [0, 2, 1]] * [1, 1, -1], atol=1e-6)
    np.testing.assert_array_equal(mesh.faces, faces)
    # The backend keeps glTF's convention internally: v measured from the top.
    np.testing.assert_allclose(mesh.uvs, np.stack([uvs[:, 0], 1 - uvs[:, 1]], 1), atol=1e-6)
    np.testing.assert_allclose(mesh.normals, np.tile([0, 0, 1], (5, 1)), atol=1e-6)
    assert mesh.vertices[:, 1].max() == pytest.approx(2.0)  # the tall side is up


def test_without_normals_and_bad_shapes(tmp_path):
    positions, faces, uvs, _ = _quad_strip()
    meshfile.write_ply(tmp_path / "a.ply", positions, faces, uvs)
    mesh = read_mesh(tmp_path / "a.ply")
    assert mesh.faces.shape == (3, 3) and mesh.uvs.shape == (5, 2)
    assert mesh.normals is None
    with pytest.raises(ValueError, match="uvs"):
        meshfile.write_ply(tmp_path / "b.ply", positions, faces, uvs[:4])
    with pytest.raises(ValueError, match="out of range"):
        meshfile.write_ply(tmp_path / "c.ply", positions, faces + 3, uvs)
