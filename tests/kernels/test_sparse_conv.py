"""Triton submanifold conv vs the torch reference.

Tolerances:
* fp32 (exact fp32 products, fp32 accumulation in another order): ``rtol 1e-5``,
  ``atol 1e-5 * sqrt(27 Ci)`` (the output scale of unit-normal inputs).
* fp16 / bf16: the two-reference rule. ``ref`` is the fp32 computation on the same
  (low-precision) inputs, ``pt`` the same torch computation in the low precision. The
  kernel must satisfy ``max|out - ref| <= 2 * max|pt - ref| + 2 ulp(max|ref|)``; the ulp
  term covers the final rounding of the output to the low precision.

CPU runs use the Triton interpreter (small inputs); ``gpu`` tests use realistic sizes.
"""

from __future__ import annotations

import math

import pytest
import torch

from backend.sparse.neighbors import build_neighbor_map
from kernels.sparse_conv.ops import subm_conv3d
from kernels.sparse_conv.reference import subm_conv3d_reference
from tests.sparse.helpers import random_coords, shell_coords

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _problem(coords, ci, co, dtype, seed, device=DEVICE, bias=True):
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(len(coords), ci, generator=gen).to(device, dtype)
    weight = (torch.randn(co, 3, 3, 3, ci, generator=gen) / math.sqrt(27 * ci)).to(device, dtype)
    b = torch.randn(co, generator=gen).to(device, dtype) if bias else None
    nbr = build_neighbor_map(coords.to(device))
    return feats, nbr, weight, b


def check_against_references(out, feats, nbr, weight, bias):
    ref = subm_conv3d_reference(feats, nbr, weight, bias, out_dtype=torch.float32)
    if feats.dtype == torch.float32:
        scale = math.sqrt(27 * feats.shape[1])
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * scale)
        return
    pt = subm_conv3d_reference(feats, nbr, weight, bias, compute_dtype=None, out_dtype=torch.float32)
    err = (out.float() - ref).abs().max().item() if out.numel() else 0.0
    pt_err = (pt - ref).abs().max().item() if out.numel() else 0.0
    ulp = torch.finfo(feats.dtype).eps * (ref.abs().max().item() if out.numel() else 0.0)
    assert err <= 2 * pt_err + 2 * ulp, f"kernel err {err:.3g} vs torch {feats.dtype} err {pt_err:.3g}"


# The CPU interpreter's tl.dot returns garbage for bf16 operands (checked with a bare 16x16
# dot), so bf16 is covered on GPU only; fp16 runs on two shapes to keep the interpreter fast.
_BF16_GPU_ONLY = pytest.mark.skipif(DEVICE == "cpu", reason="Triton interpreter: bf16 tl.dot unsupported")
_SMALL_CASES = [
    *[(ci, co, torch.float32) for ci, co in [(3, 7), (33, 5), (16, 32), (7, 33)]],
    (3, 7, torch.float16),
    (33, 17, torch.float16),
    pytest.param(33, 5, torch.bfloat16, marks=_BF16_GPU_ONLY),
    pytest.param(7, 33, torch.bfloat16, marks=_BF16_GPU_ONLY),
]


@pytest.mark.parametrize(("ci", "co", "dtype"), _SMALL_CASES)
def test_small_random_sets(ci, co, dtype):
    gen = torch.Generator().manual_seed(ci * 31 + co)
    coords = random_coords((5, 4, 5), batch=2, p=0.4, gen=gen)
    feats, nbr, weight, bias = _problem(coords, ci, co, dtype, seed=ci + co)
    out = subm_conv3d(feats, nbr, weight, bias)
    assert out.shape == (len(coords), co) and out.dtype == dtype
    check_against_references(out, feats, nbr, weight, bias)


def test_no_bias_and_flattened_weight():
    coords = shell_coords(6, batch=1)
    feats, nbr, weight, _ = _problem(coords, 5, 6, torch.float32, seed=1, bias=False)
    out = subm_conv3d(feats, nbr, weight.reshape(6, 27, 5))
    check_against_references(out, feats, nbr, weight, None)


def test_empty_input():
    feats, nbr, weight, bias = _problem(torch.zeros(0, 4, dtype=torch.int32), 3, 7, torch.float32, seed=2)
    out = subm_conv3d(feats, nbr, weight, bias)
    assert out.shape == (0, 7)


def test_single_voxel_uses_only_the_centre_tap():
    coords = torch.tensor([[0, 3, 3, 3]], dtype=torch.int32)
    feats, nbr, weight, bias = _problem(coords, 3, 7, torch.float32, seed=3)
    out = subm_conv3d(feats, nbr, weight, bias)
    want = feats @ weight[:, 1, 1, 1, :].t() + bias
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)


def test_explicit_config_and_validation():
    coords = shell_coords(5, batch=2)
    feats, nbr, weight, bias = _problem(coords, 4, 4, torch.float32, seed=4)
    out = subm_conv3d(feats, nbr, weight, bias, config={"BLOCK_N": 16, "BLOCK_CO": 16, "BLOCK_K": 16})
    check_against_references(out, feats, nbr, weight, bias)
    with pytest.raises(TypeError):
        subm_conv3d(feats, nbr.long(), weight, bias)
    with pytest.raises(ValueError):
        subm_conv3d(feats[:, :3], nbr, weight, bias)


# ----------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.parametrize(("res", "ci", "co"), [(64, 64, 64), (32, 256, 256), (16, 1024, 1024),
                                               (48, 33, 130), (32, 512, 4096)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_gpu_shells(res, ci, co, dtype):
    coords = shell_coords(res, batch=2)
    feats, nbr, weight, bias = _problem(coords, ci, co, dtype, seed=res + ci, device="cuda")
    out = subm_conv3d(feats, nbr, weight, bias)  # autotuned path
    check_against_references(out, feats, nbr, weight, bias)


@pytest.mark.gpu
def test_gpu_int64_indexing_beyond_2_31_elements():
    # N * Ci > 2^31: row offsets into feats overflow int32 unless the kernel widens them.
    n, ci, co = (1 << 21) + 4096, 1024, 16
    side = int(math.ceil(n ** (1 / 3))) + 1
    axis = torch.arange(side, device="cuda")
    g = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    coords = torch.cat([torch.zeros(n, 1, device="cuda", dtype=torch.long), g[:n]], 1).int()
    gen = torch.Generator(device="cuda").manual_seed(0)
    feats = torch.randn(n, ci, device="cuda", dtype=torch.float16, generator=gen)
    weight = torch.randn(co, 3, 3, 3, ci, device="cuda", dtype=torch.float16, generator=gen)
    weight /= math.sqrt(27 * ci)
    nbr = build_neighbor_map(coords)
    out = subm_conv3d(feats, nbr, weight)
    rows = torch.arange(n - 2048, n, device="cuda")  # the last rows have the largest offsets
    sub = nbr[rows].long()  # [R, 27]
    gathered = torch.where((sub >= 0)[..., None], feats[sub.clamp(min=0)].float(), 0.0)  # [R, 27, Ci]
    ref = torch.einsum("rvc,ovc->ro", gathered, weight.float().reshape(co, 27, ci))
    torch.testing.assert_close(out[rows].float(), ref, rtol=2e-2, atol=2e-2)
