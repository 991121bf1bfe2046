"""Reference conv vs dense conv3d (proves the [Co, 3, 3, 3, Ci] layout) and the SparseConv3d module."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from backend.sparse.conv import ConvBackend, SparseConv3d, set_conv_backend
from backend.sparse.neighbors import build_neighbor_map, neighbor_map
from backend.sparse.tensor import SparseTensor
from kernels.sparse_conv.reference import subm_conv3d_reference

from .helpers import random_coords


def _dense_conv_at(coords, feats, weight, bias, shape):
    """Densify, run conv3d with weight permuted to [Co, Ci, kx, ky, kz], read back at the voxels."""
    b, x, y, z = coords.long().unbind(1)
    dense = torch.zeros(int(b.max()) + 1, feats.shape[1], *shape, dtype=torch.float64)
    dense[b, :, x, y, z] = feats.double()
    out = F.conv3d(dense, weight.double().permute(0, 4, 1, 2, 3), bias.double(), padding=1)
    return out[b, :, x, y, z]


@pytest.mark.parametrize(("ci", "co"), [(3, 7), (33, 5), (1, 1)])
def test_reference_equals_dense_conv3d(ci, co):
    gen = torch.Generator().manual_seed(ci * 100 + co)
    coords = random_coords((6, 5, 7), batch=2, p=0.4, gen=gen)
    feats = torch.randn(len(coords), ci, generator=gen)
    weight = torch.randn(co, 3, 3, 3, ci, generator=gen)
    bias = torch.randn(co, generator=gen)
    got = subm_conv3d_reference(feats, build_neighbor_map(coords), weight, bias)
    want = _dense_conv_at(coords, feats, weight, bias, (6, 5, 7))
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-4)  # fp32 sums of <= 27*33 terms


def test_single_tap_picks_the_x_neighbour():
    # Only W[:, dx+1=2, dy+1=1, dz+1=1, :] is set, so out[p] = f[p + (1, 0, 0)].
    coords = torch.tensor([[0, 1, 1, 1], [0, 2, 1, 1], [0, 1, 2, 1], [0, 1, 1, 2]], dtype=torch.int32)
    feats = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    weight = torch.zeros(1, 3, 3, 3, 1)
    weight[0, 2, 1, 1, 0] = 1.0
    out = subm_conv3d_reference(feats, build_neighbor_map(coords), weight)
    assert out.squeeze(1).tolist() == [2.0, 0.0, 0.0, 0.0]


def test_module_keys_backend_and_cache():
    conv = SparseConv3d(4, 6)
    assert {k: tuple(v.shape) for k, v in conv.state_dict().items()} == {
        "weight": (6, 3, 3, 3, 4), "bias": (6,)}
    gen = torch.Generator().manual_seed(0)
    coords = random_coords((4, 4, 4), batch=1, p=0.5, gen=gen)
    x = SparseTensor(coords, torch.randn(len(coords), 4, generator=gen))
    y = conv(x)
    assert y.coords is x.coords and y.cache is x.cache and y.feats.shape == (len(x), 6)
    want = subm_conv3d_reference(x.feats, neighbor_map(x), conv.weight.detach(), conv.bias.detach())
    torch.testing.assert_close(y.feats, want)
    assert ConvBackend.default_for(torch.device("cpu")) is ConvBackend.TORCH
    assert ConvBackend.default_for(torch.device("cuda")) is ConvBackend.TRITON


def test_module_triton_backend_matches_torch_backend():
    gen = torch.Generator().manual_seed(5)
    coords = random_coords((4, 3, 4), batch=2, p=0.5, gen=gen)
    x = SparseTensor(coords, torch.randn(len(coords), 5, generator=gen))
    conv = SparseConv3d(5, 3, backend="torch")
    with torch.no_grad():
        want = conv(x).feats
        set_conv_backend(conv, ConvBackend.TRITON)
        assert conv.backend is ConvBackend.TRITON
        got = conv(x).feats  # Triton interpreter on CPU
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
