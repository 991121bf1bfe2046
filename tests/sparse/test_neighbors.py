"""Neighbour map: brute force agreement, sentinel, batches, caching."""

from __future__ import annotations

import pytest
import torch

from backend.sparse import neighbors as nb
from backend.sparse.tensor import SparseTensor

from .helpers import random_coords


def _brute_force(coords: torch.Tensor) -> torch.Tensor:
    index = {tuple(c): i for i, c in enumerate(coords.tolist())}
    out = torch.full((len(coords), 27), -1, dtype=torch.int32)
    for i, (b, x, y, z) in enumerate(coords.tolist()):
        for v, (dx, dy, dz) in enumerate(nb.kernel_offsets().tolist()):
            out[i, v] = index.get((b, x + dx, y + dy, z + dz), -1)
    return out


def test_offsets_order_is_x_major():
    offs = nb.kernel_offsets()
    assert offs.shape == (27, 3)
    assert offs[0].tolist() == [-1, -1, -1]
    assert offs[1].tolist() == [-1, -1, 0]  # z fastest
    assert offs[3].tolist() == [-1, 0, -1]
    assert offs[9].tolist() == [0, -1, -1]  # x slowest
    assert offs[13].tolist() == [0, 0, 0]


def test_matches_brute_force_shuffled_multi_batch():
    gen = torch.Generator().manual_seed(1)
    coords = random_coords((5, 4, 6), batch=3, p=0.35, gen=gen)
    coords = coords[torch.randperm(len(coords), generator=gen)]  # any row order works
    got = nb.build_neighbor_map(coords)
    assert got.dtype == torch.int32 and got.shape == (len(coords), 27)
    assert torch.equal(got, _brute_force(coords))
    assert torch.equal(got[:, 13], torch.arange(len(coords), dtype=torch.int32))


def test_batches_do_not_see_each_other():
    coords = torch.tensor([[0, 2, 2, 2], [1, 2, 2, 3]], dtype=torch.int32)
    got = nb.build_neighbor_map(coords)
    assert (got[:, [i for i in range(27) if i != 13]] == -1).all()


def test_boundary_coordinates_and_empty():
    coords = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 1], [0, nb.MAX_COORD, 0, 0]], dtype=torch.int32)
    got = nb.build_neighbor_map(coords)
    assert got[0, 14] == 1 and got[1, 12] == 0  # (0,0,+1) and (0,0,-1)
    assert (got[2, [i for i in range(27) if i != 13]] == -1).all()
    assert nb.build_neighbor_map(torch.zeros(0, 4, dtype=torch.int32)).shape == (0, 27)


def test_rejects_out_of_range():
    with pytest.raises(ValueError):
        nb.build_neighbor_map(torch.tensor([[0, -1, 0, 0]], dtype=torch.int32))
    with pytest.raises(ValueError):
        nb.build_neighbor_map(torch.tensor([[0, nb.MAX_COORD + 1, 0, 0]], dtype=torch.int32))


def test_cached_once_per_coordinate_set(monkeypatch):
    calls = []
    real = nb.build_neighbor_map
    monkeypatch.setattr(nb, "build_neighbor_map", lambda c: calls.append(1) or real(c))
    x = SparseTensor(torch.tensor([[0, 1, 1, 1], [0, 1, 1, 2]], dtype=torch.int32), torch.zeros(2, 3))
    first = nb.neighbor_map(x)
    second = nb.neighbor_map(x.replace(torch.ones(2, 5)))
    assert first is second and len(calls) == 1
