"""Plain-torch submanifold convolution: per-offset gather, GEMM, scatter-add.

This is both the test oracle and the CPU inference path: for each of the 27 kernel
offsets it multiplies only the rows whose neighbour exists (surface voxel sets have
roughly a third of them), so no work is spent on zeros.
"""

from __future__ import annotations

import torch

KERNEL_VOLUME = 27


def subm_conv3d_reference(
    feats: torch.Tensor,
    neighbors: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    compute_dtype: torch.dtype | None = torch.float32,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Submanifold conv ``out[n] = bias + sum_v W[:, v] @ feats[neighbors[n, v]]``.

    Args:
        feats: ``[N, Ci]`` input features.
        neighbors: ``[N, 27]`` int32/int64 row index of each neighbour, ``-1`` if absent.
        weight: ``[Co, 3, 3, 3, Ci]`` (or already flattened ``[Co, 27, Ci]``).
        bias: ``[Co]`` or None.
        compute_dtype: dtype of the GEMMs and the accumulator (fp32 by default);
            ``None`` computes in ``feats.dtype`` (the "same precision" reference).
        out_dtype: result dtype, default ``feats.dtype``.

    Returns:
        ``[N, Co]`` output features.
    """
    n, ci = feats.shape
    co = weight.shape[0]
    w = weight.reshape(co, KERNEL_VOLUME, ci)  # [Co, 27, Ci]
    if neighbors.shape != (n, KERNEL_VOLUME):
        raise ValueError(f"neighbors must be [{n}, 27], got {tuple(neighbors.shape)}")
    if w.shape[2] != ci:
        raise ValueError(f"weight has Ci={w.shape[2]} but feats has {ci}")
    cdt = feats.dtype if compute_dtype is None else compute_dtype
    x = feats.to(cdt)
    w = w.to(cdt)
    out = torch.zeros(n, co, dtype=cdt, device=feats.device)  # [N, Co]
    nbr = neighbors.long()
    for v in range(KERNEL_VOLUME):
        col = nbr[:, v]  # [N]
        rows = torch.nonzero(col >= 0).squeeze(1)  # [M]
        if rows.numel() == 0:
            continue
        contrib = x.index_select(0, col.index_select(0, rows)) @ w[:, v].t()  # [M, Co]
        out.index_add_(0, rows, contrib.to(cdt))  # autocast may have run the GEMM in lower precision
    if bias is not None:
        out += bias.to(cdt)
    return out.to(feats.dtype if out_dtype is None else out_dtype)
