"""Exact coordinate -> voxel index lookup and the trilinear attribute lookup.

Both work on torch tensors on any device (sort + searchsorted, no hash map); the
public :func:`sample_attributes` also accepts numpy arrays and answers in kind.
"""

from __future__ import annotations

import numpy as np
import torch


class CoordIndex:
    """Exact lookup of int voxel coordinates ``[N, 3]`` in a grid of side ``resolution``."""

    def __init__(self, coords: torch.Tensor, resolution: int) -> None:
        self.resolution = int(resolution)
        keys = self.keys(coords)  # [N] int64
        self.sorted_keys, self.order = torch.sort(keys)

    def keys(self, coords: torch.Tensor) -> torch.Tensor:
        """[..., 3] int coords -> [...] int64 keys; out-of-grid coords get -1."""
        c = coords.long()
        r = self.resolution
        k = (c[..., 0] * r + c[..., 1]) * r + c[..., 2]
        outside = ((c < 0) | (c >= r)).any(dim=-1)
        return torch.where(outside, torch.full_like(k, -1), k)

    def find(self, coords: torch.Tensor) -> torch.Tensor:
        """[..., 3] coords -> [...] int64 row index into the original coords, -1 where absent."""
        q = self.keys(coords)
        n = self.sorted_keys.numel()
        if n == 0:
            return torch.full_like(q, -1)
        pos = torch.searchsorted(self.sorted_keys, q).clamp_(max=n - 1)
        hit = (self.sorted_keys[pos] == q) & (q >= 0)
        return torch.where(hit, self.order[pos], torch.full_like(q, -1))


def _sample_torch(coords: torch.Tensor, attrs: torch.Tensor, resolution: int, points: torch.Tensor,
                  origin: torch.Tensor, voxel_size: torch.Tensor, index: CoordIndex | None) -> torch.Tensor:
    index = index or CoordIndex(coords, resolution)
    g = (points.to(attrs.dtype) - origin) / voxel_size  # [M, 3] continuous grid coords
    base = torch.floor(g - 0.5).long()  # [M, 3]
    out = torch.zeros(points.shape[0], attrs.shape[1], dtype=attrs.dtype, device=attrs.device)
    wsum = torch.zeros(points.shape[0], dtype=attrs.dtype, device=attrs.device)
    for corner in range(8):
        bits = torch.tensor([corner & 1, (corner >> 1) & 1, (corner >> 2) & 1], device=points.device)
        j = base + bits  # [M, 3]
        w = (1.0 - (g - j.to(g.dtype) - 0.5).abs()).clamp_(min=0).prod(dim=1)  # [M]
        idx = index.find(j)  # [M]
        found = idx >= 0
        w = torch.where(found, w, torch.zeros_like(w))
        out += w[:, None] * attrs[idx.clamp(min=0)]
        wsum += w
    return torch.where(wsum[:, None] > 0, out / wsum.clamp(min=1e-12)[:, None], torch.zeros_like(out))


def sample_attributes(coords, attributes, resolution: int, points, *, origin=-0.5, voxel_size=None,
                      index: CoordIndex | None = None):
    """Trilinear lookup of a sparse attribute volume at arbitrary points.

    Voxel ``c`` has its centre at ``origin + (c + 0.5) * voxel_size``. Each point blends
    the 8 surrounding voxel centres with trilinear weights; only active voxels count and
    the weights are renormalised by their sum (0 where no neighbour is active).

    Args:
        coords: [N, 3] int voxel coordinates (numpy or torch).
        attributes: [N, C] float attributes (same kind and device as ``coords``).
        resolution: grid size (voxel_size defaults to 1 / resolution).
        points: [M, 3] query positions in world units.
        origin: grid origin (scalar or [3]); the pipelines use -0.5.
        voxel_size: scalar or [3]; default ``1 / resolution``.
        index: a prebuilt :class:`CoordIndex` of ``coords`` (torch only) to skip the sort.

    Returns:
        [M, C] attributes, numpy float32 for numpy input, else a tensor on the input's device.
    """
    is_numpy = isinstance(attributes, np.ndarray)
    if is_numpy:
        coords_t = torch.from_numpy(np.ascontiguousarray(coords))
        attrs_t = torch.from_numpy(np.ascontiguousarray(attributes, dtype=np.float32))
        points_t = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))
    else:
        coords_t, attrs_t, points_t = coords, attributes, points
        if not attrs_t.is_floating_point():
            attrs_t = attrs_t.float()
    dev, dt = attrs_t.device, attrs_t.dtype
    vs = 1.0 / resolution if voxel_size is None else voxel_size
    origin_t = torch.as_tensor(origin, dtype=dt, device=dev)
    vs_t = torch.as_tensor(vs, dtype=dt, device=dev)
    out = _sample_torch(coords_t.to(dev), attrs_t, resolution, points_t.to(dev), origin_t, vs_t, index)
    return out.numpy() if is_numpy else out
