"""Exact coordinate -> voxel index lookup and the trilinear attribute lookup.

Both work on torch tensors on any device (sort + searchsorted, no hash map); the
public :func:`sample_attributes` also accepts numpy arrays and answers in kind.
"""

from __future__ import annotations

import numpy as np
import torch

CPU_CHUNK_POINTS = 1 << 16  # points per pass on the CPU: the temporaries stay in cache


class CoordIndex:
    """Exact lookup of int voxel coordinates ``[N, 3]`` in a grid of side ``resolution``.

    Each in-grid voxel gets the key ``((x + 1) * R + y + 1) * R + z + 1`` with ``R = r + 2``:
    the grid padded by one cell on every side, so the neighbours of border voxels have keys
    of their own that no voxel holds. Keys are kept sorted, one entry per distinct
    coordinate (its first row where coordinates repeat), in int32 when the
    padded grid allows it (a narrower binary search). The voxel above ``(x, y, z)`` in z,
    when active, is then the very next entry: :meth:`find_z_pairs` answers both with one
    search.
    """

    def __init__(self, coords: torch.Tensor, resolution: int) -> None:
        self.resolution = int(resolution)
        self.key_dtype = torch.int32 if (self.resolution + 2) ** 3 < 2**31 else torch.int64
        keys = self.keys(coords)  # [N]
        rows = torch.arange(len(keys), device=keys.device)
        in_grid = keys >= 0
        if not bool(in_grid.all()):  # out-of-grid voxels can never be found
            keys, rows = keys[in_grid], rows[in_grid]
        self.sorted_keys, order = torch.sort(keys, stable=True)
        self.order = rows[order]  # [N'] row in ``coords`` of each sorted key
        if self.sorted_keys.numel() > 1:
            first = torch.ones_like(self.sorted_keys, dtype=torch.bool)
            torch.ne(self.sorted_keys[1:], self.sorted_keys[:-1], out=first[1:])
            if not bool(first.all()):  # searchsorted finds the first of equal keys: keep only that one
                self.sorted_keys, self.order = self.sorted_keys[first], self.order[first]

    def keys(self, coords: torch.Tensor) -> torch.Tensor:
        """[..., 3] int coords -> [...] keys (``key_dtype``, see the class); out-of-grid coords get -1."""
        c = coords.long()
        r, padded = self.resolution, self.resolution + 2
        k = ((c[..., 0] + 1) * padded + c[..., 1] + 1) * padded + c[..., 2] + 1
        outside = ((c < 0) | (c >= r)).any(dim=-1)
        return torch.where(outside, torch.full_like(k, -1), k).to(self.key_dtype)

    def find(self, coords: torch.Tensor) -> torch.Tensor:
        """[..., 3] coords -> [...] int64 row index into the original coords, -1 where absent."""
        return self.find_z_pairs(self.keys(coords), with_up=False)[0]

    def find_z_pairs(self, keys: torch.Tensor,
                     with_up: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Rows of the voxels with keys ``keys`` and ``keys + 1`` (the z neighbour), -1 where absent.

        ``keys`` are keys of the padded grid (see the class) or -1, which finds nothing.
        Without ``with_up`` only the first is looked up (the second is None).
        """
        n = self.sorted_keys.numel()
        if n == 0:
            none = torch.full(keys.shape, -1, dtype=torch.int64, device=keys.device)
            return none, none.clone() if with_up else None
        pos = torch.searchsorted(self.sorted_keys, keys).clamp_(max=n - 1)
        hit = self.sorted_keys[pos] == keys
        rows = torch.where(hit, self.order[pos], -1)
        if not with_up:
            return rows, None
        # Keys are distinct: keys + 1 sits right after keys when keys is present, else at pos.
        pos_up = pos.add_(hit).clamp_(max=n - 1)
        hit_up = self.sorted_keys[pos_up] == keys + 1
        return rows, torch.where(hit_up, self.order[pos_up], -1)


def _sample_torch(coords: torch.Tensor, attrs: torch.Tensor, resolution: int, points: torch.Tensor,
                  origin: torch.Tensor, voxel_size: torch.Tensor, index: CoordIndex | None) -> torch.Tensor:
    """Trilinear blend of the 8 voxel centres around each point (see :func:`sample_attributes`).

    Per axis, the two candidate coordinates and their weights are computed once (not once
    per corner); the four (x, y) columns each take one sorted search for both z
    neighbours. Corners are still added in the order x, then y, then z bit, with the same
    float operations, so the result has the same bits as eight independent corner lookups
    (tests keep that formulation as the reference). On the CPU points go in chunks of
    ``CPU_CHUNK_POINTS`` (~1.25x faster than a million at once).
    """
    index = index or CoordIndex(coords, resolution)
    chunk = CPU_CHUNK_POINTS if points.device.type == "cpu" else max(len(points), 1)
    parts = [_sample_chunk(attrs, index, points[s:s + chunk], origin, voxel_size)
             for s in range(0, len(points), chunk)]
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return torch.zeros(0, attrs.shape[1], dtype=attrs.dtype, device=attrs.device)
    return torch.cat(parts)


def _sample_chunk(attrs: torch.Tensor, index: CoordIndex, points: torch.Tensor, origin: torch.Tensor,
                  voxel_size: torch.Tensor) -> torch.Tensor:
    """:func:`_sample_torch` for one chunk of points."""
    r, padded = index.resolution, index.resolution + 2
    g = (points.to(attrs.dtype) - origin) / voxel_size  # [M, 3] continuous grid coords
    base = torch.floor(g - 0.5).long()  # [M, 3]
    weight = []  # per axis: the weights of coordinates base and base + 1, [M] each
    for axis in range(3):
        ga, ja = g[:, axis], base[:, axis]
        weight.append([(1.0 - (ga - ja.to(g.dtype) - 0.5).abs()).clamp_(min=0),
                       (1.0 - (ga - (ja + 1).to(g.dtype) - 0.5).abs()).clamp_(min=0)])
    # A block with every corner outside the grid on some axis finds nothing (key -1); others
    # have padded keys, where corners just outside the grid find nothing by themselves.
    far = ((base < -1) | (base >= r)).any(dim=1)
    p = (base + 1).clamp_(0, r + 1).to(index.key_dtype)  # far blocks clamped: no overflow
    rows = {}
    for bx in (0, 1):
        for by in (0, 1):
            key = ((p[:, 0] + bx) * padded + p[:, 1] + by) * padded + p[:, 2]
            key.masked_fill_(far, -1)
            rows[bx, by, 0], rows[bx, by, 1] = index.find_z_pairs(key)
    m = points.shape[0]
    out = torch.zeros(m, attrs.shape[1], dtype=attrs.dtype, device=attrs.device)
    wsum = torch.zeros(m, dtype=attrs.dtype, device=attrs.device)
    for corner in range(8):
        bx, by, bz = corner & 1, (corner >> 1) & 1, (corner >> 2) & 1
        idx = rows[bx, by, bz]
        # The axis weights multiplied in the order prod(dim=1) takes them.
        w = weight[0][bx] * weight[1][by] * weight[2][bz]
        w.masked_fill_(idx < 0, 0.0)
        out += attrs[idx.clamp_(min=0)].mul_(w[:, None])
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
