"""Neighbour maps for the submanifold 3x3x3 convolution (sort + binary search).

Voxel ``(b, x, y, z)`` is packed into one int64 key with 16 bits per axis (each
coordinate shifted by +1 so that a neighbour query at ``-1`` never matches a voxel) and
15 bits of batch. Keys are sorted once; each of the 27 offsets is a ``searchsorted`` of
``key + delta``. Adding a per-field delta never carries across fields because shifted
coordinates live in ``[1, 65534]`` and deltas in ``{-1, 0, 1}``.
"""

from __future__ import annotations

import torch

from .tensor import SparseTensor

KERNEL_VOLUME = 27
MAX_COORD = (1 << 16) - 3  # largest coordinate value the packing allows
MAX_BATCH = (1 << 15) - 1
NEIGHBOR_CACHE_KEY = "subm_conv3d_neighbors_3x3x3"


def kernel_offsets(device: torch.device | str = "cpu") -> torch.Tensor:
    """``[27, 3]`` int64 offsets (dx, dy, dz), row ``v = 9 (dx+1) + 3 (dy+1) + (dz+1)``."""
    r = torch.arange(-1, 2, device=device)
    dx, dy, dz = torch.meshgrid(r, r, r, indexing="ij")
    return torch.stack([dx.reshape(-1), dy.reshape(-1), dz.reshape(-1)], dim=1)


def pack_keys(coords: torch.Tensor) -> torch.Tensor:
    """``[N, 4]`` (b, x, y, z) -> ``[N]`` int64 keys ordered like (b, x, y, z) lexicographically."""
    c = coords.long()
    if c.numel():
        if int(c[:, 1:].min()) < 0 or int(c[:, 1:].max()) > MAX_COORD:
            raise ValueError(f"voxel coordinates must lie in [0, {MAX_COORD}]")
        if int(c[:, 0].min()) < 0 or int(c[:, 0].max()) > MAX_BATCH:
            raise ValueError(f"batch indices must lie in [0, {MAX_BATCH}]")
    return (c[:, 0] << 48) | ((c[:, 1] + 1) << 32) | ((c[:, 2] + 1) << 16) | (c[:, 3] + 1)


def build_neighbor_map(coords: torch.Tensor) -> torch.Tensor:
    """Neighbour rows of every voxel for the 27 offsets of a 3x3x3 kernel.

    Args:
        coords: ``[N, 4]`` int (b, x, y, z); any row order, no duplicates.

    Returns:
        ``[N, 27]`` int32 on ``coords.device``: ``out[n, v]`` is the row of voxel
        ``coords[n] + offset[v]`` in the same batch, or ``-1`` if it is not active.
    """
    n = coords.shape[0]
    out = torch.full((n, KERNEL_VOLUME), -1, dtype=torch.int32, device=coords.device)
    if n == 0:
        return out
    keys = pack_keys(coords)  # [N]
    sorted_keys, order = torch.sort(keys)  # [N], [N]
    offs = kernel_offsets(coords.device)  # [27, 3]
    deltas = (offs[:, 0] << 32) + (offs[:, 1] << 16) + offs[:, 2]  # [27]
    for v in range(KERNEL_VOLUME):
        query = keys + deltas[v]  # [N]
        pos = torch.searchsorted(sorted_keys, query).clamp_(max=n - 1)  # [N]
        hit = sorted_keys[pos] == query  # [N]
        out[:, v] = torch.where(hit, order[pos], -1).to(torch.int32)
    return out


def neighbor_map(x: SparseTensor) -> torch.Tensor:
    """The cached ``[N, 27]`` neighbour map of ``x``'s coordinates (built on first use)."""
    return x.cached(NEIGHBOR_CACHE_KEY, lambda: build_neighbor_map(x.coords))
