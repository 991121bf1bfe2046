"""The axis matrices: proper rotations, inverse of each other, and the mesh helpers agree with them."""

from __future__ import annotations

import numpy as np
import pytest

from backend.geometry.axes import Y_UP_TO_Z_UP, Z_UP_TO_Y_UP, to_z_up_matrix, y_up_to_z_up, z_up_to_y_up
from tests.fixtures.meshes import box


def test_matrices_are_inverse_proper_rotations():
    assert np.linalg.det(Z_UP_TO_Y_UP) == pytest.approx(1.0)
    np.testing.assert_array_equal(Z_UP_TO_Y_UP @ Y_UP_TO_Z_UP, np.eye(3))
    np.testing.assert_array_equal(Z_UP_TO_Y_UP @ [0.0, 0.0, 1.0], [0.0, 1.0, 0.0])  # Z-up's up is glTF's up


def test_to_z_up_matrix_matches_the_mesh_rotation():
    m = box(center=(0.1, 0.2, 0.3))
    np.testing.assert_allclose(m.vertices @ to_z_up_matrix("y").T, y_up_to_z_up(m).vertices)
    np.testing.assert_array_equal(to_z_up_matrix("z"), np.eye(3))
    np.testing.assert_allclose(y_up_to_z_up(z_up_to_y_up(m)).vertices, m.vertices, atol=1e-12)
    with pytest.raises(ValueError, match="up axis"):
        to_z_up_matrix("x")
