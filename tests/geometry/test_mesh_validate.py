"""TriangleMesh.validate's finiteness checks: values of vertices no face uses may be anything,
those of used vertices must be finite (the check without np.unique keeps that rule)."""

from __future__ import annotations

import numpy as np
import pytest

from backend.geometry import MeshError, TriangleMesh


def _mesh(**arrays) -> TriangleMesh:
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [5, 5, 5]], np.float64)  # vertex 3 is unused
    f = np.array([[0, 1, 2]], np.int64)
    return TriangleMesh(arrays.pop("vertices", v), f, **arrays)


@pytest.mark.parametrize("label, width, message", [
    ("vertices", 3, "vertex coordinates"), ("uvs", 2, "uvs"), ("normals", 3, "normals"),
    ("tangents", 4, "tangents"), ("vertex_colors", 4, "vertex colors")])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_count_only_on_used_vertices(label, width, message, bad):
    base = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [5, 5, 5]], np.float64)
    arr = base if label == "vertices" else np.full((4, width), 0.5, np.float32)
    unused, used = arr.copy(), arr.copy()
    unused[3, -1] = bad
    used[1, 0] = bad
    _mesh(**{label: unused}).validate()
    with pytest.raises(MeshError, match=f"NaN or infinite {message}"):
        _mesh(**{label: used}).validate()
