"""The torch rasterizer: silhouettes, depth, z-buffer, barycentrics, gradients, textures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from backend.geometry import PbrMaterial, TriangleMesh
from backend.render import (
    Camera,
    Lighting,
    barycentrics_at,
    interpolate,
    look_at,
    project,
    rasterize,
    render_mesh,
    sample_condition_views,
    sample_sphere_views,
)
from tests.fixtures.meshes import box

# tan(fov / 2) = 0.5: a point at lateral offset 0.5 and depth 2.5 lands at NDC 0.4.
FOV_HALF_TAN = 0.5


def _camera(eye, fov_half_tan: float = FOV_HALF_TAN) -> Camera:
    return Camera(look_at(eye), 2 * math.atan(fov_half_tan), near=0.1, far=20.0)


def _clip(vertices, camera: Camera, dtype=torch.float64) -> torch.Tensor:
    return project(torch.as_tensor(np.asarray(vertices), dtype=dtype),
                   torch.as_tensor(camera.full_projection(), dtype=dtype))


def test_unit_cube_from_plus_x_has_the_expected_silhouette_depth_and_normals():
    cube = box(size=(1.0, 1.0, 1.0), subdivisions=2)
    cam = _camera((3.0, 0.0, 0.0))
    out = render_mesh(cube, cam, 100)
    # The front face x = 0.5 at depth 2.5 spans NDC +-0.4 -> pixels [30, 70) on both axes.
    expected = torch.zeros(100, 100, dtype=torch.bool)
    expected[30:70, 30:70] = True
    assert torch.equal(out.mask, expected)
    assert torch.allclose(out.depth[out.mask], torch.tensor(2.5), atol=1e-5)
    assert (out.depth[~out.mask] == 0).all()
    assert torch.allclose(out.normal[out.mask], torch.tensor([1.0, 0.0, 0.0]), atol=1e-5)
    assert (out.rgba[~out.mask] == 0).all() and (out.rgba[out.mask][:, 3] == 1).all()


def test_camera_conventions():
    cam = _camera((0.0, -3.0, 0.0))
    # Looking along +Y from -Y, Z up: world +X appears on the right, +Z at the top.
    clip = _clip([[0.5, 0.0, 0.0], [0.0, 0.0, 0.5]], cam)
    ndc = clip[:, :2] / clip[:, 3:]
    assert ndc[0, 0] > 0 and abs(ndc[0, 1]) < 1e-12
    assert ndc[1, 1] > 0 and abs(ndc[1, 0]) < 1e-12
    assert torch.allclose(clip[:, 3], torch.tensor([3.0, 3.0], dtype=torch.float64))
    k = cam.intrinsics(64, 64)
    assert k[0, 0] == pytest.approx(64 / (2 * FOV_HALF_TAN)) and k[0, 2] == 32


def test_z_buffer_keeps_the_nearer_triangle_in_either_order():
    near = [[0.0, -1.0, -1.0], [0.0, 1.0, -1.0], [0.0, 0.0, 1.0]]
    far = [[-1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, 0.0, 1.0]]
    cam = _camera((3.0, 0.0, 0.0), fov_half_tan=1.0)
    for verts, near_id in ((near + far, 0), (far + near, 1)):
        rast = rasterize(_clip(verts, cam), torch.tensor([[0, 1, 2], [3, 4, 5]]), 32, 32)
        assert rast.face_id[16, 16] == near_id
        assert rast.depth[16, 16].item() == pytest.approx(3.0)


def test_barycentrics_match_a_hand_computed_pixel_and_are_perspective_correct():
    # Screen-parallel triangle (constant depth 2): screen and perspective barycentrics agree.
    # Seen from +X with Z up, world +Y is the image's right: NDC = (y, z) / 2 for points on x = 0.
    cam = _camera((2.0, 0.0, 0.0), fov_half_tan=1.0)
    verts = [[0.0, -2.0, -2.0], [0.0, 2.0, -2.0], [0.0, -2.0, 2.0]]  # NDC (-1,-1), (1,-1), (-1,1)
    rast = rasterize(_clip(verts, cam), torch.tensor([[0, 1, 2]]), 8, 8)
    # Pixel (row 5, col 1): centre NDC x = 1.5/8*2-1 = -0.625, y = 1 - 5.5/8*2 = -0.375.
    # In NDC, p = A + b1 (B - A) + b2 (C - A) with B - A = (2, 0), C - A = (0, 2).
    b1, b2 = (-0.625 + 1) / 2, (-0.375 + 1) / 2
    assert torch.allclose(rast.bary[5, 1], torch.tensor([1 - b1 - b2, b1, b2], dtype=torch.float64))
    assert rast.depth[5, 1].item() == pytest.approx(2.0)

    # A strongly tilted triangle: the interpolated 3-D point must lie on the pixel's ray.
    tilted = torch.tensor([[0.5, -1.0, -1.0], [-3.0, 1.5, -1.0], [0.0, 0.2, 1.2]], dtype=torch.float64)
    cam2 = _camera((3.0, 0.0, 0.0), fov_half_tan=1.0)
    rast2 = rasterize(_clip(tilted, cam2), torch.tensor([[0, 1, 2]]), 24, 24)
    points = interpolate(tilted, torch.tensor([[0, 1, 2]]), rast2)[rast2.mask]
    clip = _clip(points, cam2)
    ndc = clip[:, :2] / clip[:, 3:]
    rows, cols = torch.nonzero(rast2.mask, as_tuple=True)
    centre = torch.stack([(cols + 0.5) / 24 * 2 - 1, 1 - (rows + 0.5) / 24 * 2], -1).double()
    assert len(points) > 20
    assert torch.allclose(ndc, centre, atol=1e-9)
    assert torch.allclose(clip[:, 3], rast2.depth[rast2.mask], atol=1e-9)


def test_depth_loss_gradient_reaches_the_vertices():
    cam = _camera((3.0, 0.0, 0.0), fov_half_tan=1.0)
    verts = torch.tensor([[0.3, -2.0, -2.0], [-0.5, 2.0, -2.0], [0.0, 0.0, 2.0]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2]])
    world_to_clip = torch.as_tensor(cam.full_projection())
    face_id = rasterize(project(verts, world_to_clip), faces, 6, 6).face_id
    assert (face_id >= 0).sum() > 5

    def depth_of(v):
        return barycentrics_at(project(v, world_to_clip), faces, face_id)[1]

    assert torch.autograd.gradcheck(depth_of, (verts.clone().requires_grad_(True),))
    v = verts.clone().requires_grad_(True)
    target = torch.full((6, 6), 2.0, dtype=torch.float64)
    loss = ((depth_of(v) - target).abs() * (face_id >= 0)).sum()
    loss.backward()
    assert torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0


def test_render_mesh_passes_gradients_to_vertices():
    cube = box(size=(1.0, 1.0, 1.0), subdivisions=1)
    verts = torch.tensor(cube.vertices, dtype=torch.float32, requires_grad=True)
    out = render_mesh(cube, _camera((2.0, 1.0, 0.7)), 32, vertices=verts)
    (out.depth.sum() + out.normal[..., 0].sum()).backward()
    assert torch.isfinite(verts.grad).all() and verts.grad.abs().sum() > 0


def _textured_quad() -> TriangleMesh:
    """A square on x = 0 facing +X with a 2x2 texture: red, green (top row); blue, white (bottom)."""
    tex = np.array([[[255, 0, 0, 255], [0, 255, 0, 255]], [[0, 0, 255, 255], [255, 255, 255, 255]]],
                   dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    verts = np.array([[0, -1, -1], [0, 1, -1], [0, 1, 1], [0, -1, 1]], dtype=np.float64)
    # Seen from +X, world +Y is the image's right, so u runs along +Y; v = 0 at the top (+Z).
    uvs = np.array([[0, 1], [1, 1], [1, 0], [0, 0]], dtype=np.float64)
    return TriangleMesh(verts, np.array([[0, 1, 2], [0, 2, 3]]), uvs=uvs,
                        materials=[PbrMaterial(base_color_texture=tex, metallic_factor=0.0)])


def test_textured_colour_appears_in_the_right_place():
    out = render_mesh(_textured_quad(), _camera((4.0, 0.0, 0.0)), 64,
                      Lighting(ambient=1.0, lights=()))
    img = out.rgba_uint8()
    # The quad spans NDC +-0.5 -> pixels [16, 48); sample the middle of each quadrant.
    quadrants = {(24, 24): 0, (24, 40): 1, (40, 24): 2}  # red, green, blue channel dominant
    for (row, col), channel in quadrants.items():
        px = img[row, col, :3].astype(int)
        assert px[channel] > 200 and np.delete(px, channel).max() < 80, (row, col, px)
    assert img[40, 40, :3].min() > 200  # white
    assert img[2, 2].tolist() == [0, 0, 0, 0]


def test_condition_cameras_follow_the_documented_distribution():
    views = sample_condition_views(16, np.random.default_rng(3))
    radii = np.array([v.radius for v in views])
    assert (radii >= 1.51).all() and (radii <= 9.94).all()
    for v in views:
        assert v.camera.fov_y == pytest.approx(2 * math.asin(math.sqrt(3) / 2 / v.radius))
        assert np.linalg.norm(v.camera.position) == pytest.approx(v.radius)
    below = sum(v.pitch < 0 for v in views)
    assert 3 <= below <= 5  # a quarter of the views look from below the horizon
    sphere = sample_sphere_views(4, np.random.default_rng(0), radius=2.0)
    assert all(np.linalg.norm(v.camera.position) == pytest.approx(2.0) for v in sphere)


@pytest.mark.gpu
def test_cuda_matches_cpu():
    cube = box(size=(0.8, 0.6, 0.4), subdivisions=3)
    cam = _camera((1.5, 1.2, 0.9))
    cpu = render_mesh(cube, cam, 96)
    gpu = render_mesh(cube, cam, 96, device="cuda")
    assert torch.equal(cpu.rast.face_id, gpu.rast.face_id.cpu())
    assert torch.allclose(cpu.rgba, gpu.rgba.cpu(), atol=1e-4)
