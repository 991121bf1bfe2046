"""The im2col sparse conv against the plain-torch reference: values, gradients, autocast.

Tolerances: fp64 inputs agree to 1e-12 (same sums, other order); under CPU bf16 autocast the GEMM
rounds its operands to bf16, so the check is against the reference run on the same bf16-rounded
operands, within 1e-2 relative to the output scale.
"""

from __future__ import annotations

import math

import torch

from backend.sparse.neighbors import build_neighbor_map
from kernels.sparse_conv.im2col import subm_conv3d_im2col
from kernels.sparse_conv.reference import subm_conv3d_reference
from tests.sparse.helpers import random_coords, shell_coords


def _problem(coords, ci, co, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(len(coords), ci, generator=gen, dtype=dtype)
    weight = torch.randn(co, 3, 3, 3, ci, generator=gen, dtype=dtype) / math.sqrt(27 * ci)
    bias = torch.randn(co, generator=gen, dtype=dtype)
    return feats, build_neighbor_map(coords), weight, bias


def test_values_and_gradients_match_the_reference():
    scattered = random_coords((10, 10, 10), 2, 0.3, torch.Generator().manual_seed(1))
    for coords, ci, co in ((shell_coords(12), 3, 7), (scattered, 8, 16)):
        feats, nbr, weight, bias = _problem(coords, ci, co)
        leaves = [t.clone().requires_grad_() for t in (feats, weight, bias)]
        ref_leaves = [t.clone().requires_grad_() for t in (feats, weight, bias)]
        out = subm_conv3d_im2col(leaves[0], nbr, leaves[1], leaves[2])
        ref = subm_conv3d_reference(ref_leaves[0], nbr, ref_leaves[1], ref_leaves[2], compute_dtype=None)
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
        grad_out = torch.randn_like(out)
        out.backward(grad_out)
        ref.backward(grad_out)
        for mine, theirs in zip(leaves, ref_leaves):
            assert theirs.grad.abs().max() > 0
            torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-12, atol=1e-12)


def test_missing_neighbours_contribute_nothing():
    coords = torch.tensor([[0, 0, 0, 0], [0, 5, 5, 5]], dtype=torch.int32)  # two isolated voxels
    feats, nbr, weight, bias = _problem(coords, 4, 3)
    out = subm_conv3d_im2col(feats, nbr, weight, bias)
    expected = feats @ weight[:, 1, 1, 1].t() + bias  # only the centre tap sees a voxel
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_bf16_autocast_runs_the_gemm_in_bf16():
    feats, nbr, weight, bias = _problem(shell_coords(10), 8, 8, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = subm_conv3d_im2col(feats, nbr, weight, bias)
    assert out.dtype == torch.bfloat16
    rounded = subm_conv3d_reference(feats.bfloat16().float(), nbr, weight.bfloat16().float(), bias)
    scale = rounded.abs().max()
    assert (out.float() - rounded).abs().max() <= 1e-2 * scale
