"""Differentiable Triton submanifold convolution (forward and backward kernels).

Backward of ``out[n] = bias + sum_v W_v f[nbr[n, v]]``:

* features: the submanifold neighbour relation is symmetric -- ``nbr[n, v] = m`` exactly when
  ``nbr[m, 26 - v] = n`` -- so ``grad_f[m] = sum_v W_{26-v}^T grad_out[nbr[m, v]]`` is the same
  forward kernel run on ``grad_out`` with the weight flipped along the offset axis and
  transposed (``Ci <-> Co``);
* weight: ``grad_W_v = grad_out[rows]^T f[nbr[rows, v]]`` over the rows whose neighbour ``v``
  exists, a gather-GEMM per offset in torch, in row chunks so the gathered copy stays bounded;
* bias: the column sum of ``grad_out``.

The neighbour map must be a submanifold map of one voxel set onto itself (as built by
``build_neighbor_map``); the symmetry does not hold for other maps.
"""

from __future__ import annotations

import torch

from .ops import KERNEL_VOLUME, subm_conv3d

# Rows per gather-GEMM step of the weight gradient: bounds the gathered [rows, Ci] copy.
WEIGHT_GRAD_CHUNK_ROWS = 1 << 16


def subm_conv3d_weight_grad(
    feats: torch.Tensor,
    neighbors: torch.Tensor,
    grad_out: torch.Tensor,
    chunk_rows: int = WEIGHT_GRAD_CHUNK_ROWS,
) -> torch.Tensor:
    """``grad_W [Co, 27, Ci]`` (fp32) of the submanifold conv for ``grad_out [N, Co]``.

    Args:
        feats: ``[N, Ci]`` forward input.
        neighbors: ``[N, 27]`` int32 neighbour rows (``-1`` = absent).
        grad_out: ``[N, Co]`` gradient of the output.
        chunk_rows: rows gathered per GEMM.
    """
    n, ci = feats.shape
    co = grad_out.shape[1]
    grad_w = torch.zeros(co, KERNEL_VOLUME, ci, dtype=torch.float32, device=feats.device)
    gemm_dtype = torch.float32 if feats.device.type == "cpu" else feats.dtype  # half GEMMs are slow on CPU
    for start in range(0, n, chunk_rows):
        stop = min(n, start + chunk_rows)
        nbr = neighbors[start:stop].long()  # [R, 27]
        g = grad_out[start:stop].to(gemm_dtype)  # [R, Co]
        for v in range(KERNEL_VOLUME):
            rows = torch.nonzero(nbr[:, v] >= 0).squeeze(1)  # [M]
            if rows.numel() == 0:
                continue
            src = feats.index_select(0, nbr.index_select(0, rows)[:, v]).to(gemm_dtype)  # [M, Ci]
            grad_w[:, v] += (g.index_select(0, rows).t() @ src).float()  # [Co, Ci]
    return grad_w


class _SubmConv3dFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, feats, neighbors, weight, bias, config, allow_tf32):
        ctx.save_for_backward(feats, neighbors, weight)
        ctx.has_bias = bias is not None
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.config, ctx.allow_tf32 = config, allow_tf32
        return subm_conv3d(feats, neighbors, weight, bias, config=config, allow_tf32=allow_tf32)

    @staticmethod
    def backward(ctx, grad_out):
        feats, neighbors, weight = ctx.saved_tensors
        grad_out = grad_out.to(feats.dtype).contiguous()
        co, ci = weight.shape[0], feats.shape[1]
        grad_feats = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            # [Co, 27, Ci] -> flip offsets -> [Ci, 27, Co]
            w_t = weight.reshape(co, KERNEL_VOLUME, ci).flip(1).permute(2, 1, 0)
            grad_feats = subm_conv3d(grad_out, neighbors, w_t, None, config=ctx.config,
                                     allow_tf32=ctx.allow_tf32)
        if ctx.needs_input_grad[2]:
            grad_weight = subm_conv3d_weight_grad(feats, neighbors, grad_out)
            grad_weight = grad_weight.to(weight.dtype).reshape(weight.shape)
        if ctx.has_bias and ctx.needs_input_grad[3]:
            grad_bias = grad_out.float().sum(0).to(ctx.bias_dtype)
        return grad_feats, None, grad_weight, grad_bias, None, None


def subm_conv3d_differentiable(
    feats: torch.Tensor,
    neighbors: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    config: dict[str, int] | None = None,
    allow_tf32: bool = False,
) -> torch.Tensor:
    """:func:`subm_conv3d` with autograd support for ``feats``, ``weight`` and ``bias``.

    Same arguments and result as :func:`kernels.sparse_conv.ops.subm_conv3d`; ``neighbors``
    must be a submanifold map (symmetric, see the module docstring). Gradients come back in
    the dtype of the tensor they belong to.
    """
    return _SubmConv3dFunction.apply(feats, neighbors, weight, bias, config, allow_tf32)
