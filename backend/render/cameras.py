"""Pinhole cameras for the torch rasterizer, and the camera distributions of data preparation.

Conventions (the same as Blender's and OpenGL's):

- The world is Z-up (the pipeline's working frame).
- Camera space: the camera looks along -Z, +X points right, +Y points up.
- ``camera_to_world`` is a 4x4 matrix whose columns are the camera's right, up and
  backward axes and its position; ``world_to_camera`` is its inverse.
- ``projection`` is the OpenGL perspective matrix: clip = P @ [x_cam, 1]; ``clip.w = -z_cam``
  (the positive depth along the viewing axis) and NDC = clip.xyz / clip.w in [-1, 1]^3.
- Pixels: NDC x = -1 is the left image edge, NDC y = +1 the top edge; pixel (row i, column j)
  has its centre at ((j + 0.5) / W * 2 - 1, 1 - (i + 0.5) / H * 2) in NDC.
- ``intrinsics`` is the 3x3 pixel matrix K (with +y pointing down the image, as in OpenCV)
  for points given in an OpenCV-style camera frame (x right, y down, z forward).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Condition-render distribution: 1/r^2 uniform over r in this range; the FoV then frames a
# sphere of radius sqrt(3)/2 (the unit cube's circumsphere) exactly (70 deg ... 10 deg).
COND_RADIUS_RANGE = (1.51, 9.94)
UNIT_CUBE_CIRCUMRADIUS = math.sqrt(3.0) / 2.0
# Rendered VAE losses: 1/r^2 uniform over r in this range, a FoV that frames a sphere of radius
# 0.5 (the unit cube's inscribed sphere, so corners may leave the view), a near plane drawn in
# [r - 1, r] (it may cut into the object) and the far plane 2 behind it.
LOSS_VIEW_RADIUS_RANGE = (2.0, 100.0)
LOSS_VIEW_OBJECT_RADIUS = 0.5
LOSS_VIEW_DEPTH_SPAN = 2.0


@dataclass(frozen=True)
class Camera:
    """A perspective pinhole camera.

    Attributes:
        camera_to_world: [4, 4] float64 rigid transform (see the module conventions).
        fov_y: vertical field of view in radians.
        aspect: width / height of the image the camera renders.
        near, far: clip distances along the viewing axis.
    """

    camera_to_world: np.ndarray
    fov_y: float
    aspect: float = 1.0
    near: float = 0.01
    far: float = 100.0

    @property
    def fov_x(self) -> float:
        """Horizontal field of view in radians."""
        return 2.0 * math.atan(math.tan(self.fov_y / 2.0) * self.aspect)

    @property
    def position(self) -> np.ndarray:
        return np.asarray(self.camera_to_world, dtype=np.float64)[:3, 3]

    def world_to_camera(self) -> np.ndarray:
        """[4, 4] float64 inverse of ``camera_to_world`` (rigid, so R^T and -R^T t)."""
        c2w = np.asarray(self.camera_to_world, dtype=np.float64)
        rot, pos = c2w[:3, :3], c2w[:3, 3]
        w2c = np.eye(4)
        w2c[:3, :3] = rot.T
        w2c[:3, 3] = -rot.T @ pos
        return w2c

    def projection(self) -> np.ndarray:
        """[4, 4] float64 OpenGL perspective matrix (camera space -> clip space)."""
        f = 1.0 / math.tan(self.fov_y / 2.0)
        n, fa = self.near, self.far
        return np.array([
            [f / self.aspect, 0.0, 0.0, 0.0],
            [0.0, f, 0.0, 0.0],
            [0.0, 0.0, (fa + n) / (n - fa), 2.0 * fa * n / (n - fa)],
            [0.0, 0.0, -1.0, 0.0],
        ])

    def full_projection(self) -> np.ndarray:
        """[4, 4] float64 world -> clip matrix (``projection @ world_to_camera``)."""
        return self.projection() @ self.world_to_camera()

    def intrinsics(self, width: int, height: int) -> np.ndarray:
        """[3, 3] float64 pixel intrinsics K for a ``width x height`` image (OpenCV style)."""
        fy = height / (2.0 * math.tan(self.fov_y / 2.0))
        fx = width / (2.0 * math.tan(self.fov_x / 2.0))
        return np.array([[fx, 0.0, width / 2.0], [0.0, fy, height / 2.0], [0.0, 0.0, 1.0]])


def look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """[4, 4] float64 camera-to-world matrix of a camera at ``eye`` looking at ``target``.

    ``up`` is the world direction that should appear upward; when the view is parallel to
    it, another axis is used so the matrix stays a rotation.
    """
    eye = np.asarray(eye, dtype=np.float64)
    back = eye - np.asarray(target, dtype=np.float64)
    dist = np.linalg.norm(back)
    if not dist > 0:
        raise ValueError("look_at: eye and target coincide")
    back /= dist
    up = np.asarray(up, dtype=np.float64)
    right = np.cross(up, back)
    if np.linalg.norm(right) < 1e-9:  # looking straight along `up`
        right = np.cross(np.array([0.0, 1.0, 0.0]) if abs(back[1]) < 0.9 else np.array([1.0, 0.0, 0.0]), back)
    right /= np.linalg.norm(right)
    true_up = np.cross(back, right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, true_up, back, eye
    return c2w


def orbit_camera(yaw: float, pitch: float, radius: float, fov_y: float, aspect: float = 1.0,
                 target=(0.0, 0.0, 0.0)) -> Camera:
    """A camera on a sphere about ``target`` (Z-up): yaw about +Z from +X, pitch above the XY plane."""
    direction = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), math.sin(pitch)])
    eye = np.asarray(target, dtype=np.float64) + radius * direction
    return Camera(look_at(eye, target), fov_y, aspect, near=max(1e-3, 0.05 * radius), far=radius + 10.0)


def radical_inverse_base2(i: int) -> float:
    """Van der Corput sequence in base 2: the bits of ``i`` mirrored about the binary point."""
    result, f = 0.0, 0.5
    while i:
        result += f * (i & 1)
        i >>= 1
        f *= 0.5
    return result


def framing_fov(radius: float, object_radius: float = UNIT_CUBE_CIRCUMRADIUS) -> float:
    """FoV (radians) at which a sphere of ``object_radius`` at distance ``radius`` exactly fills the view."""
    return 2.0 * math.asin(object_radius / radius)


@dataclass(frozen=True)
class ViewSample:
    """One sampled condition view: the camera and the numbers that produced it."""

    camera: Camera
    yaw: float
    pitch: float
    radius: float


def sample_condition_views(num_views: int, rng: np.random.Generator,
                           radius_range: tuple[float, float] = COND_RADIUS_RANGE) -> list[ViewSample]:
    """Condition-render cameras: a Hammersley-like yaw/pitch set with a random offset.

    For view i of n, with offsets (o1, o2) ~ U[0, 1)^2 shared by all views:
    ``u = (i + o1) / n`` remapped so a quarter of the views look from below the horizon
    (u < 1/4 -> 2u, else 2u/3 + 1/3), ``pitch = arccos(1 - 2u) - pi/2``,
    ``yaw = 2 pi (radical_inverse_2(i) + o2)``. Each view draws its own distance with
    ``1/r^2`` uniform over ``radius_range`` and a FoV that frames the unit cube's
    circumsphere: ``fov = 2 arcsin((sqrt(3)/2) / r)``. All cameras look at the origin.
    """
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    o1, o2 = rng.random(2)
    inv_sq_lo, inv_sq_hi = 1.0 / radius_range[1] ** 2, 1.0 / radius_range[0] ** 2
    views = []
    for i in range(num_views):
        u = (i + o1) / num_views
        u = 2.0 * u if u < 0.25 else 2.0 * u / 3.0 + 1.0 / 3.0
        pitch = math.acos(1.0 - 2.0 * u) - math.pi / 2.0
        yaw = 2.0 * math.pi * (radical_inverse_base2(i) + o2)
        radius = 1.0 / math.sqrt(rng.uniform(inv_sq_lo, inv_sq_hi))
        cam = orbit_camera(yaw, pitch, radius, framing_fov(radius))
        views.append(ViewSample(cam, yaw, pitch, radius))
    return views


def sample_sphere_views(num_views: int, rng: np.random.Generator, radius: float = 2.0,
                        fov_y: float | None = None) -> list[ViewSample]:
    """Cameras at uniformly random directions on a sphere of ``radius``, looking at the origin.

    ``fov_y`` defaults to the FoV that frames the unit cube's circumsphere.
    """
    fov = framing_fov(radius) if fov_y is None else fov_y
    views = []
    for _ in range(num_views):
        z = rng.uniform(-1.0, 1.0)
        yaw = rng.uniform(0.0, 2.0 * math.pi)
        pitch = math.asin(z)
        views.append(ViewSample(orbit_camera(yaw, pitch, radius, fov), yaw, pitch, radius))
    return views


def loss_view_camera(direction, u_radius: float, u_near: float,
                     radius_range: tuple[float, float] = LOSS_VIEW_RADIUS_RANGE) -> Camera:
    """The camera of one rendered-loss view, from its random draws.

    Args:
        direction: [3] any non-zero vector; the camera sits along it, looking at the origin,
            with +Z up (a Gaussian draw makes the direction uniform on the sphere).
        u_radius: uniform in [0, 1); ``1/r^2`` is uniform over ``radius_range``.
        u_near: uniform in [0, 1); near = ``r - 1 + u_near``, far = near + 2.
        radius_range: camera distances.
    """
    direction = np.asarray(direction, dtype=np.float64)
    norm = np.linalg.norm(direction)
    if not norm > 0:
        raise ValueError("loss_view_camera: direction must be non-zero")
    inv_sq_lo, inv_sq_hi = 1.0 / radius_range[1] ** 2, 1.0 / radius_range[0] ** 2
    radius = 1.0 / math.sqrt(inv_sq_lo + u_radius * (inv_sq_hi - inv_sq_lo))
    near = radius - 1.0 + u_near
    return Camera(look_at(direction / norm * radius), framing_fov(radius, LOSS_VIEW_OBJECT_RADIUS),
                  near=near, far=near + LOSS_VIEW_DEPTH_SPAN)
