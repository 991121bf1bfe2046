"""Launcher for the Triton submanifold conv: validate, allocate, grid, launch."""

from __future__ import annotations

import functools

import torch
import triton

from . import configs
from .kernel import _subm_conv3d_fwd_kernel, tuned

KERNEL_VOLUME = 27
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@functools.cache
def _autotuned_kernel():
    return tuned(configs.cuda_configs(), configs.prune_configs)


def subm_conv3d(
    feats: torch.Tensor,
    neighbors: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    config: dict[str, int] | None = None,
    allow_tf32: bool = False,
) -> torch.Tensor:
    """Submanifold 3x3x3 sparse convolution with the Triton implicit-GEMM kernel.

    Args:
        feats: ``[N, Ci]`` fp16 / bf16 / fp32 features.
        neighbors: ``[N, 27]`` int32 neighbour rows (``-1`` = absent), column
            ``9 (dx+1) + 3 (dy+1) + (dz+1)``.
        weight: ``[Co, 3, 3, 3, Ci]`` (or ``[Co, 27, Ci]``); cast to ``feats.dtype``.
        bias: ``[Co]`` or None; added in fp32.
        config: explicit tile config (``BLOCK_N``, ``BLOCK_CO``, ``BLOCK_K`` and optionally
            ``num_warps``/``num_stages``) instead of autotuning. CPU tensors (the Triton
            interpreter) always use a fixed small config unless one is given.
        allow_tf32: for fp32 inputs, use TF32 tensor cores instead of exact fp32 products.

    Returns:
        ``[N, Co]`` in ``feats.dtype`` (accumulated in fp32).
    """
    if feats.ndim != 2:
        raise ValueError(f"feats must be [N, Ci], got {tuple(feats.shape)}")
    if feats.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"unsupported feats dtype {feats.dtype}")
    n, ci = feats.shape
    co = weight.shape[0]
    w = weight.reshape(co, KERNEL_VOLUME, -1)  # [Co, 27, Ci]
    if w.shape[2] != ci:
        raise ValueError(f"weight has Ci={w.shape[2]} but feats has {ci}")
    if neighbors.shape != (n, KERNEL_VOLUME):
        raise ValueError(f"neighbors must be [{n}, 27], got {tuple(neighbors.shape)}")
    if neighbors.dtype != torch.int32:
        raise TypeError(f"neighbors must be int32, got {neighbors.dtype}")
    if bias is not None and bias.shape != (co,):
        raise ValueError(f"bias must be [{co}], got {tuple(bias.shape)}")
    for name, t in (("weight", w), ("neighbors", neighbors), ("bias", bias)):
        if t is not None and t.device != feats.device:
            raise ValueError(f"{name} is on {t.device} but feats is on {feats.device}")

    out = torch.empty(n, co, dtype=feats.dtype, device=feats.device)  # [N, Co]
    if n == 0 or co == 0:
        return out
    if ci == 0:
        return out.copy_(bias.to(out.dtype).expand(n, co) if bias is not None else torch.zeros_like(out))
    w = w.to(feats.dtype)
    args = (
        feats, w, bias if bias is not None else out, neighbors, out,
        n, ci, co, configs.bucket_log2(n),
        feats.stride(0), feats.stride(1),
        w.stride(0), w.stride(1), w.stride(2),
        neighbors.stride(0), neighbors.stride(1),
        out.stride(0), out.stride(1),
    )
    meta = {
        "V": KERNEL_VOLUME,
        "HAS_BIAS": bias is not None,
        "FP32_IEEE": feats.dtype == torch.float32 and not allow_tf32,
    }
    if config is None and feats.device.type == "cpu":
        config = configs.INTERPRETER_CONFIG
    if config is None:
        kernel = _autotuned_kernel()

        def grid(m):
            return (triton.cdiv(n, m["BLOCK_N"]), triton.cdiv(co, m["BLOCK_CO"]))

        kernel[grid](*args, **meta)
    else:
        grid = (triton.cdiv(n, config["BLOCK_N"]), triton.cdiv(co, config["BLOCK_CO"]))
        _subm_conv3d_fwd_kernel[grid](*args, **meta, **config)
    return out
