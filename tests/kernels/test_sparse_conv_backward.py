"""Backward of the Triton submanifold conv (under the interpreter on CPU) against autograd of the
plain-torch reference.

Tolerances: fp32 (exact fp32 products) ``1e-4`` of the largest gradient entry; fp16 inputs
``2e-2`` (fp16 rounding of the features' gradient, ~3 significant digits), against a reference
that computes in fp32 from the same fp16 inputs.
"""

from __future__ import annotations

import pytest
import torch

from backend.sparse.neighbors import build_neighbor_map
from kernels.sparse_conv.autograd import subm_conv3d_differentiable, subm_conv3d_weight_grad
from kernels.sparse_conv.reference import subm_conv3d_reference
from tests.sparse.helpers import random_coords, shell_coords

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _close(got: torch.Tensor, want: torch.Tensor, rel: float, name: str) -> None:
    scale = want.abs().max().item()
    assert scale > 0, f"{name}: zero reference gradient"
    err = (got.float() - want.float()).abs().max().item()
    assert err <= rel * scale, f"{name}: max error {err:.3g} > {rel} x {scale:.3g}"


@pytest.mark.parametrize("dtype,rel", [(torch.float32, 1e-4), (torch.float16, 2e-2)])
@pytest.mark.parametrize("ci,co", [(5, 7), (16, 3)])
def test_triton_backward_matches_reference_autograd(dtype, rel, ci, co):
    gen = torch.Generator().manual_seed(ci * 100 + co)
    coords = random_coords((6, 5, 6), batch=2, p=0.3, gen=gen)
    nbr = build_neighbor_map(coords).to(DEVICE)
    n = len(coords)
    feats = torch.randn(n, ci, generator=gen).to(DEVICE, dtype)
    weight = (torch.randn(co, 3, 3, 3, ci, generator=gen) * 0.2).to(DEVICE, dtype)
    bias = torch.randn(co, generator=gen).to(DEVICE, dtype)
    grad_out = torch.randn(n, co, generator=gen).to(DEVICE, dtype)

    leaves = [t.clone().requires_grad_() for t in (feats, weight, bias)]
    out = subm_conv3d_differentiable(leaves[0], nbr, leaves[1], leaves[2])
    out.backward(grad_out)
    ref_leaves = [t.clone().float().requires_grad_() for t in (feats, weight, bias)]
    ref = subm_conv3d_reference(ref_leaves[0], nbr, ref_leaves[1], ref_leaves[2])
    ref.backward(grad_out.float())
    _close(out, ref, rel, "out")
    for name, got, want in zip(("feats", "weight", "bias"), leaves, ref_leaves):
        assert got.grad.dtype == dtype and got.grad.shape == got.shape
        _close(got.grad, want.grad, rel, name)


def test_feature_gradient_uses_the_flipped_offsets():
    """A one-hot weight at offset v moves each voxel's feature to the neighbour at -offset[v]."""
    coords = shell_coords(5)
    nbr = build_neighbor_map(coords).to(DEVICE)
    feats = torch.randn(len(coords), 1, device=DEVICE, requires_grad=True)
    weight = torch.zeros(1, 27, 1, device=DEVICE)
    v = 9 * 2 + 3 * 1 + 0  # offset (+1, 0, -1)
    weight[0, v, 0] = 1.0
    grad_out = torch.randn(len(coords), 1, device=DEVICE)
    subm_conv3d_differentiable(feats, nbr, weight).backward(grad_out)
    # out[n] = f[nbr[n, v]]  =>  grad_f[m] = sum over n with nbr[n, v] = m of grad_out[n]
    want = torch.zeros_like(feats)
    rows = (nbr[:, v] >= 0).nonzero().squeeze(1)
    want.index_add_(0, nbr[rows, v].long(), grad_out[rows])
    assert want.abs().sum() > 0
    torch.testing.assert_close(feats.grad, want)


def test_weight_gradient_chunking_does_not_change_the_result():
    gen = torch.Generator().manual_seed(3)
    coords = random_coords((5, 5, 5), batch=1, p=0.5, gen=gen)
    nbr = build_neighbor_map(coords)
    feats, grad_out = torch.randn(len(coords), 4, generator=gen), torch.randn(len(coords), 6, generator=gen)
    whole = subm_conv3d_weight_grad(feats, nbr, grad_out)
    chunked = subm_conv3d_weight_grad(feats, nbr, grad_out, chunk_rows=7)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)
