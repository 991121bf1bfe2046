"""Launcher for the Triton submanifold conv: validate, allocate, grid, launch."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

import torch
import triton

from . import configs
from .kernel import AUTOTUNE_KEY, _subm_conv3d_fwd_kernel, tuned

log = logging.getLogger(__name__)

KERNEL_VOLUME = 27
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@functools.cache
def autotuner() -> triton.runtime.Autotuner:
    """The process's autotuned kernel (its ``cache`` maps Triton's keys to the chosen configs)."""
    return tuned(configs.cuda_configs(), configs.prune_configs)


@functools.cache
def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device)


def autotune_key(args: Sequence[Any], meta: dict[str, Any]) -> str:
    """The table key of a launch: the parts Triton's autotuner keys on, built the way it builds
    them (the ``AUTOTUNE_KEY`` arguments, then the dtype of every argument that has one, in the
    kernel's argument order), joined by :func:`configs.table_key`."""
    named = {**dict(zip(_subm_conv3d_fwd_kernel.arg_names, args)), **meta}
    parts = [named[name] for name in AUTOTUNE_KEY]
    parts += [value.dtype for value in named.values() if hasattr(value, "dtype")]
    return configs.table_key(parts)


def kernel_arguments(
    feats: torch.Tensor,
    neighbors: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    out: torch.Tensor,
    allow_tf32: bool,
) -> tuple[tuple, dict[str, Any]]:
    """Positional arguments and constexpr meta of one launch (``weight`` is ``[Co, 27, Ci]`` in
    ``feats.dtype``; inputs already checked by :func:`subm_conv3d`)."""
    n, ci = feats.shape
    co = weight.shape[0]
    args = (
        feats, weight, bias if bias is not None else out, neighbors, out,
        n, ci, co, configs.bucket_log2(n),
        feats.stride(0), feats.stride(1),
        weight.stride(0), weight.stride(1), weight.stride(2),
        neighbors.stride(0), neighbors.stride(1),
        out.stride(0), out.stride(1),
    )
    meta = {
        "V": KERNEL_VOLUME,
        "HAS_BIAS": bias is not None,
        "FP32_IEEE": feats.dtype == torch.float32 and not allow_tf32,
    }
    return args, meta


def subm_conv3d(
    feats: torch.Tensor,
    neighbors: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    config: dict[str, int] | None = None,
    allow_tf32: bool = False,
    use_tuned_table: bool = True,
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
        use_tuned_table: on CUDA without ``config``, launch the config shipped for this GPU and
            autotune key (``configs.tuned_config``) when there is one: one compile, no
            benchmarking. False always autotunes (``scripts/tune_sparse_conv.py`` does).

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
    args, meta = kernel_arguments(feats, neighbors, w.to(feats.dtype), bias, out, allow_tf32)
    if config is None and feats.device.type == "cpu":
        config = configs.INTERPRETER_CONFIG
    if config is None and use_tuned_table:
        device = _device_name(feats.device)
        if device in configs.load_tuned_table():  # the key is built per launch only where it can match
            config = configs.tuned_config(device, autotune_key(args, meta))
    if config is None:
        kernel = autotuner()

        def grid(m):
            return (triton.cdiv(n, m["BLOCK_N"]), triton.cdiv(co, m["BLOCK_CO"]))

        kernel[grid](*args, **meta)
    else:
        grid = (triton.cdiv(n, config["BLOCK_N"]), triton.cdiv(co, config["BLOCK_CO"]))
        _subm_conv3d_fwd_kernel[grid](*args, **meta, **config)
    return out
