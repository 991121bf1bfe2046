"""Submanifold conv as one gather and one GEMM ("im2col"), for small channel counts.

``out = [feats; 0][neighbors] . reshape(N, 27 Ci) @ W.reshape(Co, 27 Ci)^T + bias``: missing
neighbours index an appended zero row. Three kernels per convolution instead of a few per kernel
offset, at the price of an ``[N, 27 Ci]`` temporary -- the right trade for training networks with
narrow layers on large voxel sets (launch-bound otherwise), the wrong one for wide layers.
Differentiable through autograd; under autocast the GEMM runs in the autocast dtype.
"""

from __future__ import annotations

import torch

KERNEL_VOLUME = 27


def subm_conv3d_im2col(
    feats: torch.Tensor,
    neighbors: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Submanifold conv ``out[n] = bias + sum_v W[:, v] @ feats[neighbors[n, v]]``.

    Args:
        feats: ``[N, Ci]``.
        neighbors: ``[N, 27]`` int32/int64 neighbour rows, ``-1`` if absent.
        weight: ``[Co, 3, 3, 3, Ci]`` (or ``[Co, 27, Ci]``).
        bias: ``[Co]`` or None.

    Returns:
        ``[N, Co]`` in the dtype the GEMM produces (``feats.dtype`` outside autocast).
    """
    n, ci = feats.shape
    co = weight.shape[0]
    if neighbors.shape != (n, KERNEL_VOLUME):
        raise ValueError(f"neighbors must be [{n}, 27], got {tuple(neighbors.shape)}")
    if weight.shape[-1] != ci or weight.numel() != co * KERNEL_VOLUME * ci:
        raise ValueError(f"weight {tuple(weight.shape)} does not fit feats with {ci} input channels")
    w = weight.reshape(co, KERNEL_VOLUME * ci)  # [Co, 27 Ci], offset-major like the gathered columns
    padded = torch.cat([feats, feats.new_zeros(1, ci)])  # row n = "no neighbour"
    rows = torch.where(neighbors >= 0, neighbors, n).long().reshape(-1)  # [N * 27]
    columns = padded.index_select(0, rows).reshape(n, KERNEL_VOLUME * ci)  # [N, 27 Ci]
    out = columns @ w.to(columns.dtype).t()  # [N, Co]; autocast may run it in bf16
    if bias is not None:
        out = out + bias.to(out.dtype)
    return out
