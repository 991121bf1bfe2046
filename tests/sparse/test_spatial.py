"""S2C / C2S: child-index convention, parent order, round trips, mask-driven expansion."""

from __future__ import annotations

import pytest
import torch

from backend.sparse import spatial as sp
from backend.sparse.tensor import SparseTensor

from .helpers import random_coords


def _t(rows):
    return torch.tensor(rows, dtype=torch.int32)


def test_child_index_x_is_least_significant_bit():
    coords = _t([[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 3, 2, 5], [0, 5, 7, 9]])
    assert sp.child_index(coords).tolist() == [1, 2, 4, 5, 7]
    assert sp.child_offsets(torch.tensor([0, 1, 2, 4, 6])).tolist() == [
        [0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 1]]


def test_s2c_hand_case():
    # Two children of parent (0,1,1,2) and one of parent (0,0,0,0), given in a scrambled order.
    coords = _t([[0, 3, 2, 5], [0, 0, 0, 0], [0, 2, 3, 4]])
    feats = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    out = sp.spatial_to_channel(SparseTensor(coords, feats))
    assert out.coords.tolist() == [[0, 0, 0, 0], [0, 1, 1, 2]]  # sorted (b, x, y, z)
    expect = torch.zeros(2, 8, 2)
    expect[0, 0] = torch.tensor([3.0, 4.0])  # (0,0,0) -> s 0
    expect[1, 5] = torch.tensor([1.0, 2.0])  # (3,2,5) -> s 1 + 4
    expect[1, 2] = torch.tensor([5.0, 6.0])  # (2,3,4) -> s 2
    assert torch.equal(out.feats, expect.reshape(2, 16))


def test_parents_sorted_lexicographically_and_batches_kept_apart():
    coords = _t([[1, 0, 0, 0], [0, 9, 0, 0], [0, 0, 9, 1], [1, 1, 1, 1]])
    m = sp.build_s2c_map(coords)
    assert m.parent_coords.tolist() == [[0, 0, 4, 0], [0, 4, 0, 0], [1, 0, 0, 0]]
    assert m.parent_index.tolist() == [2, 1, 0, 2]
    assert m.child_index.tolist() == [0, 1, 6, 7]


def test_c2s_with_mask_is_parent_major_ascending_slot():
    parents = _t([[0, 0, 0, 0], [0, 1, 0, 0]])
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[0, 3] = mask[0, 0] = mask[1, 6] = True
    feats = torch.arange(2 * 8 * 1, dtype=torch.float32).reshape(2, 8)  # C' = 1: value = 8 p + s
    fine, mapping = sp.channel_to_spatial(SparseTensor(parents, feats), mask=mask)
    assert fine.coords.tolist() == [[0, 0, 0, 0], [0, 1, 1, 0], [0, 2, 1, 1]]
    assert fine.feats.squeeze(1).tolist() == [0.0, 3.0, 14.0]
    assert mapping.parent_index.tolist() == [0, 0, 1]


def test_s2c_then_c2s_with_map_round_trips_exactly():
    gen = torch.Generator().manual_seed(3)
    coords = random_coords((7, 6, 5), batch=2, p=0.3, gen=gen)
    coords = coords[torch.randperm(len(coords), generator=gen)]
    x = SparseTensor(coords, torch.randn(len(coords), 3, generator=gen))
    coarse = sp.spatial_to_channel(x)
    assert coarse.feats.shape == (len(sp.s2c_map(x).parent_coords), 24)
    back, _ = sp.channel_to_spatial(coarse, mapping=sp.s2c_map(x))
    assert torch.equal(back.coords, coords) and torch.equal(back.feats, x.feats)


def test_c2s_with_mask_recovers_the_voxels_in_parent_major_order():
    gen = torch.Generator().manual_seed(4)
    coords = random_coords((6, 6, 6), batch=2, p=0.3, gen=gen)
    x = SparseTensor(coords, torch.randn(len(coords), 2, generator=gen))
    m = sp.s2c_map(x)
    mask = torch.zeros(len(m.parent_coords), 8, dtype=torch.bool)
    mask[m.parent_index, m.child_index] = True
    back, _ = sp.channel_to_spatial(sp.spatial_to_channel(x), mask=mask)
    order = torch.argsort(m.parent_index * 8 + m.child_index)
    assert torch.equal(back.coords, coords[order]) and torch.equal(back.feats, x.feats[order])


def test_c2s_argument_errors():
    x = SparseTensor(_t([[0, 0, 0, 0]]), torch.zeros(1, 8))
    with pytest.raises(ValueError):
        sp.channel_to_spatial(x)
    with pytest.raises(ValueError):
        sp.channel_to_spatial(x, mask=torch.ones(2, 8, dtype=torch.bool))
    other = sp.build_s2c_map(_t([[0, 4, 4, 4]]))
    with pytest.raises(ValueError):
        sp.channel_to_spatial(x, mapping=other)
