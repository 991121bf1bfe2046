"""Plain-torch submanifold convolution: per-offset gather, GEMM, scatter-add.

This is both the test oracle and the CPU inference path: for each of the 27 kernel
offsets it multiplies only the rows whose neighbour exists (surface voxel sets have
roughly a third of them), so no work is spent on zeros.
"""

from __future__ import annotations

import torch

KERNEL_VOLUME = 27

# (offset v, output rows that have that neighbour, the neighbour's row) for every offset in use
GatherPlan = list[tuple[int, torch.Tensor, torch.Tensor]]


def gather_plan(neighbors: torch.Tensor) -> GatherPlan:
    """Which rows each of the 27 offsets touches, from an ``[N, 27]`` neighbour map.

    Depends only on the coordinates, so it can be built once per voxel set and reused by every
    convolution on it (finding the rows costs a host synchronisation per offset on a GPU).
    """
    nbr = neighbors.long()
    plan = []
    for v in range(KERNEL_VOLUME):
        col = nbr[:, v]  # [N]
        rows = torch.nonzero(col >= 0).squeeze(1)  # [M]
        if rows.numel():
            plan.append((v, rows, col.index_select(0, rows)))
    return plan


def subm_conv3d_reference(
    feats: torch.Tensor,
    neighbors: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    compute_dtype: torch.dtype | None = torch.float32,
    out_dtype: torch.dtype | None = None,
    plan: GatherPlan | None = None,
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
        plan: :func:`gather_plan` of ``neighbors`` when the caller keeps one; built here otherwise.

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
    for v, rows, cols in gather_plan(neighbors) if plan is None else plan:
        contrib = x.index_select(0, cols) @ w[:, v].t()  # [M, Co]
        out.index_add_(0, rows, contrib.to(cdt))  # autocast may have run the GEMM in lower precision
    if bias is not None:
        out += bias.to(cdt)
    return out.to(feats.dtype if out_dtype is None else out_dtype)
