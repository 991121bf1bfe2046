"""Triton implicit-GEMM kernel for the submanifold 3x3x3 sparse convolution.

The GEMM is ``out[N, Co] = A[N, K] @ B[K, Co]`` with ``K = 27 * Ci``, where row ``n`` of
``A`` is the concatenation of the features of voxel ``n``'s 27 neighbours. ``A`` is
never materialised: each K-step loads one offset's neighbour rows straight from
``feats`` through the neighbour map, with absent neighbours masked to zero.
"""

from __future__ import annotations

import inspect

import triton
import triton.language as tl


@triton.jit
def _subm_conv3d_fwd_kernel(
    # pointers
    feats_ptr,  # [N, Ci] fp16 | bf16 | fp32
    weight_ptr,  # [Co, V, Ci] same dtype as feats (any strides)
    bias_ptr,  # [Co] (unused when HAS_BIAS is False)
    neighbor_ptr,  # [N, V] int32, -1 (0xffffffff) marks an absent neighbour
    out_ptr,  # [N, Co]
    # sizes
    N,
    Ci,
    Co,
    LOGN,  # bucketed log2(N): only an autotune key, unused in the body
    # strides (elements)
    stride_fn,
    stride_fc,
    stride_wo,
    stride_wv,
    stride_wc,
    stride_nn,
    stride_nv,
    stride_on,
    stride_oc,
    # meta-parameters
    V: tl.constexpr,  # kernel volume (27)
    HAS_BIAS: tl.constexpr,
    FP32_IEEE: tl.constexpr,  # fp32 inputs: exact fp32 products instead of TF32
    BLOCK_N: tl.constexpr,
    BLOCK_CO: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_co = tl.program_id(1)

    rows = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)  # (BN,) int64
    cols = pid_co.to(tl.int64) * BLOCK_CO + tl.arange(0, BLOCK_CO)  # (BCO,) int64
    row_mask = rows < N  # (BN,)
    col_mask = cols < Co  # (BCO,)
    rk = tl.arange(0, BLOCK_K)  # (BK,)

    acc = tl.zeros((BLOCK_N, BLOCK_CO), dtype=tl.float32)  # (BN, BCO)
    num_k = tl.cdiv(Ci, BLOCK_K)
    # One flat loop over (offset, channel block) so the compiler can pipeline it.
    for step in range(0, V * num_k):
        v = step // num_k
        k0 = (step % num_k) * BLOCK_K
        nbr = tl.load(neighbor_ptr + rows * stride_nn + v * stride_nv, mask=row_mask, other=-1)  # (BN,)
        valid = nbr >= 0  # (BN,)
        src = tl.where(valid, nbr, 0).to(tl.int64)  # (BN,)
        ks = k0 + rk  # (BK,)
        k_mask = ks < Ci  # (BK,)
        a = tl.load(
            feats_ptr + src[:, None] * stride_fn + ks[None, :] * stride_fc,
            mask=valid[:, None] & k_mask[None, :],
            other=0.0,
        )  # (BN, BK)
        b = tl.load(
            weight_ptr + cols[None, :] * stride_wo + v * stride_wv + ks[:, None] * stride_wc,
            mask=k_mask[:, None] & col_mask[None, :],
            other=0.0,
        )  # (BK, BCO)
        if FP32_IEEE:
            acc = tl.dot(a, b, acc, input_precision="ieee")
        else:
            acc = tl.dot(a, b, acc)

    if HAS_BIAS:
        bias = tl.load(bias_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)  # (BCO,)
        acc += bias[None, :]
    out_ptrs = out_ptr + rows[:, None] * stride_on + cols[None, :] * stride_oc
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=row_mask[:, None] & col_mask[None, :])


# What the autotuner keys on, besides the dtypes of the tensor arguments that Triton appends.
AUTOTUNE_KEY = ("LOGN", "Ci", "Co", "FP32_IEEE")


def tuned(configs: list[triton.Config], prune) -> triton.runtime.Autotuner:
    """The kernel wrapped in an autotuner keyed on (bucketed N, Ci, Co, dtype).

    Tuning results are kept in Triton's on-disk cache (``cache_results``) where this Triton
    has that option (3.2 and later): a decoder pass meets ~20 keys, and re-tuning them in
    every new backend process cost ~25 s on the first job (measured on an H200).
    """
    options = {}
    if "cache_results" in inspect.signature(triton.autotune).parameters:
        options["cache_results"] = True
    return triton.autotune(
        configs=configs,
        key=list(AUTOTUNE_KEY),
        prune_configs_by={"early_config_prune": prune},
        **options,
    )(_subm_conv3d_fwd_kernel)
