"""Differentiable mask/depth/normal maps: gradients against finite differences, antialiased
coverage, per-pixel near-plane clipping, the loss cameras, and the training variant of the
dual-grid extraction they render."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from backend.ovoxel import flexible_dual_contour, flexible_dual_contour_fan
from backend.render import Camera, look_at, loss_view_camera, render_geometry_maps
from tests.fixtures.ovoxels import sphere_ovoxel

TETRA_VERTICES = [[-0.3, -0.2, -0.1], [0.35, -0.25, 0.05], [0.0, 0.3, 0.2], [0.1, 0.05, 0.45]]
TETRA_FACES = [[0, 1, 2], [0, 1, 3], [1, 2, 3], [0, 2, 3]]
SIZE = 16


def _camera(eye=(2.0, 0.7, 1.1), near=1.0, far=4.0) -> Camera:
    return Camera(look_at(eye), 2 * math.asin(0.5 / 2.4), near=near, far=far)


def _weighted_map(kind: str, vertices: torch.Tensor, faces: torch.Tensor, weights: torch.Tensor,
                  antialias: bool = True) -> torch.Tensor:
    maps = render_geometry_maps(vertices, faces, _camera(), SIZE, antialias=antialias)
    return (getattr(maps, kind) * weights.reshape(getattr(maps, kind).shape)).sum()


def _central_differences(fn, x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    grad = torch.zeros_like(x)
    with torch.no_grad():
        for idx in np.ndindex(*x.shape):
            hi, lo = x.clone(), x.clone()
            hi[idx] += eps
            lo[idx] -= eps
            grad[idx] = (fn(hi) - fn(lo)) / (2 * eps)
    return grad


@pytest.mark.parametrize("kind", ["mask", "depth", "normal"])
def test_map_gradients_match_finite_differences_in_float64(kind):
    torch.manual_seed(0)
    faces = torch.tensor(TETRA_FACES)
    verts = torch.tensor(TETRA_VERTICES, dtype=torch.float64, requires_grad=True)
    weights = torch.rand(SIZE * SIZE * (3 if kind == "normal" else 1), dtype=torch.float64)
    _weighted_map(kind, verts, faces, weights).backward()
    reference = _central_differences(lambda v: _weighted_map(kind, v, faces, weights), verts.detach())
    assert reference.abs().max() > 1.0  # the map really depends on the vertices
    torch.testing.assert_close(verts.grad, reference, rtol=1e-5, atol=1e-5)


def test_without_antialiasing_the_mask_has_no_gradient():
    faces = torch.tensor(TETRA_FACES)
    verts = torch.tensor(TETRA_VERTICES, dtype=torch.float64, requires_grad=True)
    maps = render_geometry_maps(verts, faces, _camera(), SIZE, antialias=False)
    (grad,) = torch.autograd.grad(maps.mask.sum(), verts, allow_unused=True)
    assert grad is None or torch.all(grad == 0)
    maps = render_geometry_maps(verts, faces, _camera(), SIZE)
    (grad,) = torch.autograd.grad(maps.mask.sum(), verts)
    assert grad.abs().max() > 1.0


def test_antialiased_coverage_tracks_a_sub_pixel_edge():
    # A square facing the camera, its right edge swept across one pixel column in steps of 0.2
    # pixel: each of the 4 pixel rows whose centres it covers gains 0.2 of coverage per step,
    # while the binary mask stays the same.
    camera = Camera(look_at((0.0, 0.0, 2.0), up=(0.0, 1.0, 0.0)), 2 * math.atan(0.5), near=0.5, far=4.0)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    pixel = 2.0 / SIZE  # world size of one pixel at depth 2 with tan(fov / 2) = 0.5
    totals, binary = [], []
    for shift in np.linspace(0.1, 0.9, 5):
        right = 0.3 + shift * pixel
        corners = [[-0.31, -0.31, 0.0], [right, -0.31, 0.0], [right, 0.31, 0.0], [-0.31, 0.31, 0.0]]
        verts = torch.tensor(corners, dtype=torch.float64)
        totals.append(float(render_geometry_maps(verts, faces, camera, SIZE).mask.sum()))
        binary.append(float(render_geometry_maps(verts, faces, camera, SIZE, antialias=False).mask.sum()))
    # y in [-0.31, 0.31] spans pixel rows 5.52 .. 10.48: the centres of rows 6-9 are covered.
    np.testing.assert_allclose(np.diff(totals), 4 * 0.2, atol=1e-9)
    assert len(set(binary)) == 1  # no pixel centre is passed: the binary mask does not change


def test_near_plane_clips_per_pixel_and_background_is_neutral():
    ov = sphere_ovoxel(0.3)
    verts, faces = flexible_dual_contour(torch.from_numpy(ov.coords), torch.from_numpy(ov.dual_vertices),
                                         torch.from_numpy(ov.intersected), ov.resolution)
    camera = _camera(eye=(2.0, 0.0, 0.0), near=1.9, far=3.9)  # the near plane cuts the front cap off
    maps = render_geometry_maps(verts.double(), faces, camera, 32, antialias=False)
    covered = maps.mask > 0.5
    assert covered.any()
    assert maps.depth[covered].min() >= 1.9
    assert maps.depth[covered].max() <= 2.3  # the far hemisphere's inside, seen through the cut
    assert torch.all(maps.depth[~covered] == 0)
    assert torch.all(maps.normal[~covered] == 0.5)
    full = render_geometry_maps(verts.double(), faces, _camera(eye=(2.0, 0.0, 0.0), near=0.5), 32,
                                antialias=False)
    assert full.depth[full.mask > 0.5].min() < 1.8  # without the cut the front cap is visible


def test_normals_face_the_camera_whatever_the_winding():
    faces = torch.tensor(TETRA_FACES)
    flipped = faces[:, [0, 2, 1]]
    verts = torch.tensor(TETRA_VERTICES, dtype=torch.float64)
    a = render_geometry_maps(verts, faces, _camera(), SIZE, antialias=False)
    b = render_geometry_maps(verts, flipped, _camera(), SIZE, antialias=False)
    torch.testing.assert_close(a.normal, b.normal)
    covered = a.mask > 0.5
    assert torch.all(a.normal[covered][:, 2] > 0.5)  # camera-space +z points at the viewer


def test_empty_mesh_gives_background_maps():
    maps = render_geometry_maps(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.long), _camera(), 8)
    assert torch.all(maps.mask == 0) and torch.all(maps.depth == 0) and torch.all(maps.normal == 0.5)


def test_loss_view_camera_follows_the_reference_distribution():
    near_cam = loss_view_camera([0.0, 0.0, 3.0], 0.999999, 0.0)
    far_cam = loss_view_camera([1.0, 1.0, 0.0], 0.0, 0.5)
    np.testing.assert_allclose(near_cam.position, [0, 0, 2.0], atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(far_cam.position), 100.0)
    assert near_cam.fov_y == pytest.approx(2 * math.asin(0.5 / 2.0), rel=1e-4)
    assert (near_cam.near, near_cam.far) == pytest.approx((1.0, 3.0), rel=1e-4)
    assert (far_cam.near, far_cam.far) == pytest.approx((99.5, 101.5))
    with pytest.raises(ValueError, match="direction must be non-zero"):
        loss_view_camera([0.0, 0.0, 0.0], 0.5, 0.5)


def test_fan_extraction_is_the_weighted_mid_vertex_rule_and_differentiable():
    ov = sphere_ovoxel(0.1)
    coords, flags = torch.from_numpy(ov.coords), torch.from_numpy(ov.intersected)
    offsets = torch.from_numpy(ov.dual_vertices).double().requires_grad_(True)
    weight = torch.rand(len(coords), dtype=torch.float64).add(0.5).requires_grad_(True)
    verts, faces = flexible_dual_contour_fan(coords, offsets, flags, weight, ov.resolution)
    plain, plain_faces = flexible_dual_contour(coords, offsets.detach(), flags, ov.resolution,
                                               drop_unreferenced=False)
    n, quads = len(coords), len(plain_faces) // 2
    assert verts.shape == (n + quads, 3) and faces.shape == (4 * quads, 3)
    torch.testing.assert_close(verts[:n].float(), plain)  # the dual vertices themselves
    # Each mid-vertex: the diagonal midpoints blended by w0 w2 and w1 w3 of its quad.
    fan = faces.view(quads, 4, 3)
    corners = fan[:, :, 0]  # [Q, 4] the quad's voxels in cyclic order
    assert torch.all(fan[:, :, 2] == torch.arange(n, n + quads)[:, None])
    w = weight.detach()[corners]
    c = verts.detach()[corners]
    w02, w13 = (w[:, 0] * w[:, 2])[:, None], (w[:, 1] * w[:, 3])[:, None]
    expected = (w02 * (c[:, 0] + c[:, 2]) / 2 + w13 * (c[:, 1] + c[:, 3]) / 2) / (w02 + w13)
    torch.testing.assert_close(verts.detach()[n:], expected)
    g_off, g_w = torch.autograd.grad(verts[n:].sum(), (offsets, weight))
    assert g_off.abs().sum() > 0 and g_w.abs().sum() > 0


def test_boundary_edges_of_any_face_index_antialias_without_indexing_outside_the_mesh():
    # Two separate triangles; face 0 uses the highest vertex indices, so the old "neighbour's
    # corner = sum of face 0 minus the edge's two corners" pointed past the vertex list for
    # face 1's boundary edges (an index error on the CPU, a device-side assert on CUDA).
    verts = torch.tensor([[-0.3, -0.3, 0.0], [0.3, -0.3, 0.0], [0.0, 0.3, 0.0],
                          [5.0, 5.0, 5.0], [5.1, 5.0, 5.0], [5.0, 5.1, 5.0]], dtype=torch.float64,
                         requires_grad=True)
    faces = torch.tensor([[3, 4, 5], [0, 1, 2]])
    maps = render_geometry_maps(verts, faces, Camera(look_at((0.0, 0.0, 2.4)), 0.6, near=1.0, far=4.0), SIZE)
    assert 0 < float(maps.mask.sum()) < SIZE * SIZE
    (grad,) = torch.autograd.grad(maps.mask.sum(), verts)
    assert grad[:3].abs().sum() > 0 and torch.all(grad[3:] == 0)
