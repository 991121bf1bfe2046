"""Mesh -> O-Voxel -> mesh round trips on the fixture shapes at 256 and 512.

Bounds, in voxel units (h = 1 / resolution), and why:
- Every dual vertex minimises the quadric of the planes through its voxel, so on flat
  parts and sharp edges it lies on the surface; on the curved fixtures (radius >= 50 h)
  the chord error of a 1-voxel triangle is ~ h²/(8R) < 0.01 h. Measured: mean < 0.003 h,
  max < 0.2 h. Asserted: mean < 0.05 h, 99th percentile < 0.25 h, max < 1 h (both ways).
- Normal consistency (|cos| of each output face with its closest source face): measured
  > 0.9998 mean; asserted mean > 0.99 and 5th percentile > 0.95.
- Boundaries: a crossed grid edge always creates all 4 voxels around it, so the output
  surface reaches the source boundary to within the boundary-term-pulled dual vertices
  (measured <= 0.15 h). Closed inputs give closed outputs. Where a surface runs tangent
  to a grid line it can cross one grid edge twice (the flag keeps parity only once),
  leaving 1-voxel holes or slits; hole filling at 0.03 closes the closed loops, slits that
  end on a non-manifold edge stay. Asserted: every source boundary point has an output
  boundary point within 1 h; fewer than 2 % of output boundary points (after hole
  filling) lie farther than 2 h from a source boundary or non-manifold edge.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from backend.geometry import TriangleMesh
from backend.geometry.topology import boundary_edges
from backend.ovoxel import mesh_to_ovoxel, ovoxel_to_mesh
from backend.ovoxel.cleanup import fill_holes
from tests.fixtures.meshes import ALL_SHAPES

from .metrics import boundary_points, edge_points, face_normals, point_mesh_distance, sample_surface

_CACHE: dict = {}


def roundtrip(name: str, res: int) -> tuple[TriangleMesh, TriangleMesh]:
    if (name, res) not in _CACHE:
        src = ALL_SHAPES[name]()
        _CACHE[(name, res)] = src, ovoxel_to_mesh(mesh_to_ovoxel(src, res, attributes=False))
    return _CACHE[(name, res)]


def nonmanifold_points(mesh: TriangleMesh, spacing: float) -> np.ndarray:
    e = np.sort(mesh.faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    u, c = np.unique(e, axis=0, return_counts=True)
    return edge_points(mesh, u[c > 2], spacing)


CASES = [(n, r) for r in (256, 512) for n in ALL_SHAPES]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "res"), CASES)
def test_chamfer(name, res, rng):
    src, out = roundtrip(name, res)
    q, _ = sample_surface(out, 5000, rng)
    d_out, _ = point_mesh_distance(q, src)
    s, _ = sample_surface(src, 5000, rng)
    d_src, _ = point_mesh_distance(s, out, k=8)
    for d in (d_out * res, d_src * res):
        assert d.mean() < 0.05
        assert np.quantile(d, 0.99) < 0.25
        assert d.max() < 1.0


@pytest.mark.slow
@pytest.mark.parametrize(("name", "res"), CASES)
def test_normal_consistency(name, res):
    src, out = roundtrip(name, res)
    centres = out.vertices[out.faces].mean(axis=1)
    _, closest = point_mesh_distance(centres, src)
    cos = np.abs((face_normals(out) * face_normals(src)[closest]).sum(axis=1))
    assert cos.mean() > 0.99
    assert np.quantile(cos, 0.05) > 0.95


@pytest.mark.slow
@pytest.mark.parametrize(("name", "res"), CASES)
def test_boundaries(name, res):
    src, out = roundtrip(name, res)
    src_b = boundary_points(src, spacing=0.25 / res)  # dense enough to add < 0.13 h
    if len(src_b) == 0:
        assert len(boundary_edges(out.faces)) == 0, "a closed input must give a closed output"
        return
    out_b = boundary_points(out)
    d, _ = cKDTree(out_b).query(src_b)
    assert d.max() * res < 1.0, "the source boundary must survive"
    filled = fill_holes(out, 0.03)
    ref = np.concatenate([src_b, nonmanifold_points(src, 0.25 / res)])
    d, _ = cKDTree(ref).query(boundary_points(filled))
    stray = d * res > 2.0
    # open slits at grid-tangent spots (measured: 8 of 1238 points at 256, 32 of 2478 at 512)
    assert stray.mean() < 0.02, "stray boundary away from the source boundary"


def test_sort_voxels_orders_shuffled_voxels_and_keeps_sorted_ones():
    from backend.ovoxel.encode import sort_voxels

    ov = mesh_to_ovoxel(ALL_SHAPES["sharp_edged"](), 64)
    keys = lambda o: (o.coords[:, 0].astype(np.int64) * 64 + o.coords[:, 1]) * 64 + o.coords[:, 2]  # noqa: E731
    assert np.all(np.diff(keys(ov)) > 0)
    assert sort_voxels(ov) is ov  # already ordered: returned as is
    perm = np.random.default_rng(0).permutation(ov.num_voxels)
    shuffled = type(ov)(ov.resolution, ov.coords[perm], ov.dual_vertices[perm], ov.intersected[perm],
                        None, ov.attributes[perm], ov.aabb)
    back = sort_voxels(shuffled)
    assert np.array_equal(back.coords, ov.coords) and np.array_equal(back.attributes, ov.attributes)
    assert np.array_equal(back.dual_vertices, ov.dual_vertices)
