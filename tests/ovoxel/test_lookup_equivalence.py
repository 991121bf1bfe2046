"""The attribute lookup's fast path gives the same bits as the eight-corner formulation it replaced.

The reference below is the earlier implementation: int64 keys, one sorted search per corner,
the corner's weight as ``prod(dim=1)`` of its three axis weights, masked where the corner is
absent. The fast path (padded int32 keys, one search per (x, y) column for both z neighbours,
per-axis weights, CPU chunks) must match it exactly, not within a tolerance, including at the
grid's borders, far outside it, for NaN points, repeated and out-of-grid voxels.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.ovoxel import lookup
from backend.ovoxel.lookup import CoordIndex, sample_attributes


class _ReferenceIndex:
    def __init__(self, coords: torch.Tensor, resolution: int) -> None:
        self.resolution = int(resolution)
        self.sorted_keys, self.order = torch.sort(self.keys(coords), stable=True)

    def keys(self, coords):
        c = coords.long()
        r = self.resolution
        k = (c[..., 0] * r + c[..., 1]) * r + c[..., 2]
        outside = ((c < 0) | (c >= r)).any(dim=-1)
        return torch.where(outside, torch.full_like(k, -1), k)

    def find(self, coords):
        q = self.keys(coords)
        n = self.sorted_keys.numel()
        if n == 0:
            return torch.full_like(q, -1)
        pos = torch.searchsorted(self.sorted_keys, q).clamp_(max=n - 1)
        hit = (self.sorted_keys[pos] == q) & (q >= 0)
        return torch.where(hit, self.order[pos], torch.full_like(q, -1))


def _reference_sample(coords, attrs, resolution, points, origin=-0.5):
    index = _ReferenceIndex(coords, resolution)
    origin = torch.as_tensor(origin, dtype=attrs.dtype)
    voxel_size = torch.as_tensor(1.0 / resolution, dtype=attrs.dtype)
    g = (points.to(attrs.dtype) - origin) / voxel_size
    base = torch.floor(g - 0.5).long()
    out = torch.zeros(points.shape[0], attrs.shape[1], dtype=attrs.dtype)
    wsum = torch.zeros(points.shape[0], dtype=attrs.dtype)
    for corner in range(8):
        bits = torch.tensor([corner & 1, (corner >> 1) & 1, (corner >> 2) & 1])
        j = base + bits
        w = (1.0 - (g - j.to(g.dtype) - 0.5).abs()).clamp_(min=0).prod(dim=1)
        idx = index.find(j)
        found = idx >= 0
        w = torch.where(found, w, torch.zeros_like(w))
        out += w[:, None] * attrs[idx.clamp(min=0)]
        wsum += w
    return torch.where(wsum[:, None] > 0, out / wsum.clamp(min=1e-12)[:, None], torch.zeros_like(out))


def _block_volume(rng, resolution: int, count: int) -> torch.Tensor:
    """Unique voxels of ``count`` 3x3x3 blocks, some of them cut by the grid's faces and corners."""
    centres = rng.integers(0, resolution, (count, 3))
    centres[: count // 10, rng.integers(0, 3)] = rng.choice([0, resolution - 1], count // 10)
    offsets = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), -1).reshape(-1, 3)
    c = (centres[:, None] + offsets).reshape(-1, 3)
    c = c[((c >= 0) & (c < resolution)).all(1)]
    return torch.from_numpy(np.unique(c, axis=0)[rng.permutation(len(np.unique(c, axis=0)))])


def _probe_points(rng, resolution: int, coords: torch.Tensor, count: int) -> torch.Tensor:
    """Points near active voxels, at the borders, far outside, on voxel centres and NaN."""
    centres = (coords.numpy() + 0.5) / resolution - 0.5
    near = centres[rng.integers(0, len(centres), count)] + rng.normal(0, 1.0 / resolution, (count, 3))
    border = rng.uniform(-0.5 - 2 / resolution, 0.5 + 2 / resolution, (count // 4, 3))
    border[:, rng.integers(0, 3)] = rng.choice([-0.5, 0.5, -0.5 - 1 / resolution, 0.5 + 0.7 / resolution],
                                               count // 4)
    exact = centres[: count // 8]
    odd = np.array([[np.nan, 0.0, 0.0], [0.0, np.inf, 0.0], [1e30, -1e30, 0.0], [-0.5, -0.5, -0.5],
                    [0.5, 0.5, 0.5], [40.0, 0.1, 0.1]])
    return torch.from_numpy(np.concatenate([near, border, exact, odd]).astype(np.float32))


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and bool((a.view(torch.int32 if a.dtype == torch.float32
                                                                          else torch.int64) ==
                                                               b.view(torch.int32 if b.dtype == torch.float32
                                                                      else torch.int64)).all())


@pytest.mark.parametrize("resolution", [64, 1300])  # int32 keys; int64 keys ((r + 2)^3 >= 2^31)
def test_lookup_matches_the_eight_corner_reference_bit_for_bit(rng, resolution):
    coords = _block_volume(rng, resolution, 5_000)
    attrs = torch.from_numpy(rng.random((len(coords), 6)).astype(np.float32))
    n = lookup.CPU_CHUNK_POINTS + 5_000  # more than one chunk
    points = _probe_points(rng, resolution, coords, n)
    assert CoordIndex(coords, resolution).key_dtype == (torch.int32 if resolution == 64 else torch.int64)
    got = sample_attributes(coords, attrs, resolution, points)
    ref = _reference_sample(coords, attrs, resolution, points)
    assert _same_bits(got, ref)
    assert (got[:n].abs().sum(1) > 0).float().mean() > 0.5  # most probes do see voxels
    # float64 attributes, and the numpy entry point (float32 attributes)
    a64 = attrs.double()
    ref64 = _reference_sample(coords, a64, resolution, points)
    assert _same_bits(sample_attributes(coords, a64, resolution, points), ref64)
    got_np = sample_attributes(coords.numpy(), attrs.numpy(), resolution, points.numpy())
    assert np.array_equal(got_np.view(np.uint32), ref.numpy().view(np.uint32))


def test_lookup_matches_the_reference_with_repeated_and_out_of_grid_voxels(rng):
    r = 32
    coords = torch.from_numpy(rng.integers(-2, r + 2, (3000, 3)))  # repeats and out-of-grid rows
    attrs = torch.from_numpy(rng.random((len(coords), 6)).astype(np.float32))
    points = torch.from_numpy(rng.uniform(-0.6, 0.6, (20_000, 3)).astype(np.float32))
    ref = _reference_sample(coords, attrs, r, points)
    assert _same_bits(sample_attributes(coords, attrs, r, points), ref)
    queries = torch.from_numpy(rng.integers(-3, r + 3, (5000, 3)))
    assert torch.equal(CoordIndex(coords, r).find(queries), _ReferenceIndex(coords, r).find(queries))


def test_lookup_in_an_empty_index_and_of_no_points():
    coords = torch.zeros((0, 3), dtype=torch.int64)
    one = torch.tensor([[3, 4, 5]])
    assert sample_attributes(one, torch.ones(1, 6), 16, torch.zeros((0, 3))).shape == (0, 6)
    assert torch.equal(CoordIndex(coords, 16).find(one), torch.tensor([-1]))
