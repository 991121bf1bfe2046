"""The in-memory O-Voxel: a flexible dual grid plus an optional PBR attribute volume."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_RESOLUTION = 64
MAX_RESOLUTION = 2048

# Channel layout of ``OVoxel.attributes``: name -> channel slice.
ATTR_LAYOUT: dict[str, slice] = {
    "base_color": slice(0, 3),
    "metallic": slice(3, 4),
    "roughness": slice(4, 5),
    "alpha": slice(5, 6),
}
ATTR_CHANNELS = 6

DEFAULT_AABB = np.array([[-0.5, -0.5, -0.5], [0.5, 0.5, 0.5]])


class OVoxelError(ValueError):
    """An O-Voxel (in memory or in a file) that is malformed; the message says how."""


def check_resolution(resolution: int) -> int:
    """``resolution`` as an int, or :class:`OVoxelError` if it is outside [64, 2048]."""
    if isinstance(resolution, bool) or int(resolution) != resolution:
        raise OVoxelError(f"resolution must be an integer, got {resolution!r}")
    if not MIN_RESOLUTION <= int(resolution) <= MAX_RESOLUTION:
        raise OVoxelError(f"resolution must lie in [{MIN_RESOLUTION}, {MAX_RESOLUTION}], got {resolution}")
    return int(resolution)


@dataclass
class OVoxel:
    """Sparse voxels of one shape on a ``resolution``³ grid spanning ``aabb``.

    Voxel ``c`` spans ``aabb_min + [c, c + 1] * voxel_size``; its mesh vertex is
    ``aabb_min + (c + dual_vertices[c]) * voxel_size``.
    """

    resolution: int
    coords: np.ndarray  # [N, 3] int32, each in [0, resolution)
    dual_vertices: np.ndarray  # [N, 3] float32, voxel-local offsets in [0, 1]
    intersected: np.ndarray  # [N, 3] bool, +1,+1-corner edge along x/y/z is crossed by the surface
    split_weight: np.ndarray | None = None  # [N] float32 > 0, quad split weights (decoder output)
    attributes: np.ndarray | None = None  # [N, 6] float32 in [0, 1], layout ATTR_LAYOUT
    aabb: np.ndarray = None  # [2, 3] float64 (min, max); default [-0.5, 0.5]^3

    def __post_init__(self) -> None:
        if self.aabb is None:
            self.aabb = DEFAULT_AABB.copy()
        self.aabb = np.asarray(self.aabb, dtype=np.float64)

    @property
    def num_voxels(self) -> int:
        return int(self.coords.shape[0])

    @property
    def voxel_size(self) -> np.ndarray:
        """[3] float64 edge lengths of one voxel in world units."""
        return (self.aabb[1] - self.aabb[0]) / self.resolution

    def validate(self) -> OVoxel:
        """Raise :class:`OVoxelError` if shapes, dtypes or ranges are inconsistent."""
        check_resolution(self.resolution)
        n = self.coords.shape[0] if self.coords.ndim == 2 else -1
        expect = {
            "coords": (self.coords, (n, 3)),
            "dual_vertices": (self.dual_vertices, (n, 3)),
            "intersected": (self.intersected, (n, 3)),
        }
        if self.split_weight is not None:
            expect["split_weight"] = (self.split_weight, (n,))
        if self.attributes is not None:
            expect["attributes"] = (self.attributes, (n, ATTR_CHANNELS))
        for name, (arr, shape) in expect.items():
            if arr.shape != shape:
                raise OVoxelError(f"{name} must have shape {shape}, got {arr.shape}")
        if self.aabb.shape != (2, 3) or not np.all(self.aabb[1] > self.aabb[0]):
            raise OVoxelError(f"aabb must be [[min], [max]] with max > min, got {self.aabb.tolist()}")
        if n and (self.coords.min() < 0 or self.coords.max() >= self.resolution):
            raise OVoxelError(f"coords must lie in [0, {self.resolution})")
        if not np.isfinite(self.dual_vertices).all():
            raise OVoxelError("dual_vertices contain NaN or infinite values")
        if self.attributes is not None and not np.isfinite(self.attributes).all():
            raise OVoxelError("attributes contain NaN or infinite values")
        return self

    def world_vertices(self) -> np.ndarray:
        """[N, 3] float64 dual vertices in world units."""
        return self.aabb[0] + (self.coords + self.dual_vertices.astype(np.float64)) * self.voxel_size
