"""SC-VAE building blocks: sparse ConvNeXt, S2C down-block, C2S up-block.

Keys and shapes follow the official checkpoints (spec 5.4): ``conv``, ``norm``,
``mlp.0``, ``mlp.2`` (ConvNeXt); ``norm1``, ``conv1``, ``conv2`` (+ ``to_subdiv``) for
the resampling blocks. Block-internal activations run in the conv weights' dtype
(fp16 when the model uses ``use_fp16``); LayerNorms compute in fp32 with fp32 params.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from backend.models.dit_layers import LayerNorm32
from backend.sparse.conv import SparseConv3d
from backend.sparse.neighbors import neighbor_map
from backend.sparse.spatial import S2CMap, channel_to_spatial, s2c_map, spatial_to_channel
from backend.sparse.tensor import SparseTensor

_TRAINING_ONLY_ARGS = ("use_checkpoint",)


def _check_kwargs(kwargs: dict) -> None:
    """Accept the config's block args (``use_checkpoint`` is used by the ConvNeXt block only)."""
    unknown = sorted(k for k in kwargs if k not in _TRAINING_ONLY_ARGS)
    if unknown:
        raise TypeError(f"unexpected block arguments: {unknown}")


class SparseConvNeXtBlock3d(nn.Module):
    """``x + MLP(LN(conv(x)))`` with a 3x3x3 submanifold conv; channels C -> C.

    Args:
        channels: C.
        mlp_ratio: MLP hidden = ``int(C * mlp_ratio)``.
        use_checkpoint: recompute the block in backward (training mode with grad only).
    """

    def __init__(self, channels: int, mlp_ratio: float = 4.0, use_checkpoint: bool = False, **kwargs) -> None:
        super().__init__()
        _check_kwargs(kwargs)
        self.use_checkpoint = use_checkpoint
        hidden = int(channels * mlp_ratio)
        self.conv = SparseConv3d(channels, channels)
        self.norm = LayerNorm32(channels, elementwise_affine=True, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.SiLU(), nn.Linear(hidden, channels))

    def forward(self, x: SparseTensor) -> SparseTensor:
        """``[N, C]`` -> ``[N, C]`` on the same coords."""
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            neighbor_map(x)  # build the cached map outside the recomputed region
            return x.replace(checkpoint(self._residual, x, use_reentrant=False))
        return x.replace(self._residual(x))

    def _residual(self, x: SparseTensor) -> torch.Tensor:
        h = self.conv(x).feats  # [N, C]
        h = self.mlp(self.norm(h))  # [N, C]
        return x.feats + h


class SparseResBlockS2C3d(nn.Module):
    """Encoder down-block: conv at the fine level, spatial-to-channel, conv at the coarse level.

    ``[N, C_in]`` fine -> ``[M, C_out]`` parents. Skip: the S2C of the input
    (``8 C_in`` channels) averaged over consecutive groups of ``8 C_in / C_out``.
    """

    def __init__(self, channels: int, out_channels: int, **kwargs) -> None:
        super().__init__()
        _check_kwargs(kwargs)
        if out_channels % 8 or (8 * channels) % out_channels:
            raise ValueError(f"S2C: need 8 | C_out and C_out | 8 C_in, got {channels} -> {out_channels}")
        self.channels, self.out_channels = channels, out_channels
        self.norm1 = LayerNorm32(channels, elementwise_affine=True, eps=1e-6)
        self.norm2 = LayerNorm32(out_channels, elementwise_affine=False, eps=1e-6)
        self.conv1 = SparseConv3d(channels, out_channels // 8)
        self.conv2 = SparseConv3d(out_channels, out_channels)

    def forward(self, x: SparseTensor, mapping: S2CMap | None = None) -> SparseTensor:
        mapping = s2c_map(x) if mapping is None else mapping
        h = self.conv1(x.replace(F.silu(self.norm1(x.feats))))  # [N, C_out/8]
        h = spatial_to_channel(h, mapping)  # [M, C_out]
        skip = spatial_to_channel(x, mapping).feats  # [M, 8 C_in]
        h = self.conv2(h.replace(F.silu(self.norm2(h.feats))))  # [M, C_out]
        skip = skip.reshape(skip.shape[0], self.out_channels, -1).mean(dim=-1)  # [M, C_out]
        return h.replace(h.feats + skip)


class SparseResBlockC2S3d(nn.Module):
    """Decoder up-block: conv at the coarse level, channel-to-spatial, conv at the fine level.

    ``[M, C_in]`` parents -> ``[K, C_out]`` children. Which children exist: a cached S2C
    map (encoder-paired), else a guide (logits, ``> 0``, or a bool mask), else the block's
    own prediction ``to_subdiv(x) > 0`` (computed on the block input). Skip: the C2S of
    the input (``C_in / 8`` channels) with each channel repeated ``8 C_out / C_in`` times.
    """

    def __init__(self, channels: int, out_channels: int, pred_subdiv: bool = True, **kwargs) -> None:
        super().__init__()
        _check_kwargs(kwargs)
        if channels % 8 or out_channels % (channels // 8):
            raise ValueError(f"C2S: need 8 | C_in and C_in/8 | C_out, got {channels} -> {out_channels}")
        self.channels, self.out_channels, self.pred_subdiv = channels, out_channels, pred_subdiv
        self.norm1 = LayerNorm32(channels, elementwise_affine=True, eps=1e-6)
        self.norm2 = LayerNorm32(out_channels, elementwise_affine=False, eps=1e-6)
        self.conv1 = SparseConv3d(channels, out_channels * 8)
        self.conv2 = SparseConv3d(out_channels, out_channels)
        if pred_subdiv:
            self.to_subdiv = nn.Linear(channels, 8)

    def forward(
        self,
        x: SparseTensor,
        guide: torch.Tensor | SparseTensor | None = None,
        mapping: S2CMap | None = None,
    ) -> tuple[SparseTensor, torch.Tensor | None]:
        """Returns the fine tensor and the predicted logits ``[M, 8]`` (None without ``to_subdiv``)."""
        logits = self.to_subdiv(x.feats) if self.pred_subdiv else None  # [M, 8]
        h = self.conv1(x.replace(F.silu(self.norm1(x.feats))))  # [M, 8 C_out]
        mask = None
        if mapping is None:
            mask = _guide_mask(guide) if guide is not None else None
            if mask is None and logits is not None:
                mask = logits > 0
            if mask is None:
                raise ValueError("C2S block without to_subdiv needs a guide mask or an S2C map")
        h, mapping = channel_to_spatial(h, mask=mask, mapping=mapping)  # [K, C_out]
        xs, _ = channel_to_spatial(x, mapping=mapping)  # [K, C_in/8]
        h = self.conv2(h.replace(F.silu(self.norm2(h.feats))))  # [K, C_out]
        skip = xs.feats.repeat_interleave(self.out_channels // xs.feats.shape[1], dim=1)  # [K, C_out]
        return h.replace(h.feats + skip), logits


def _guide_mask(guide: torch.Tensor | SparseTensor) -> torch.Tensor:
    g = guide.feats if isinstance(guide, SparseTensor) else guide
    return g if g.dtype == torch.bool else g > 0


BLOCK_TYPES: dict[str, type[nn.Module]] = {
    "SparseConvNeXtBlock3d": SparseConvNeXtBlock3d,
    "SparseResBlockS2C3d": SparseResBlockS2C3d,
    "SparseResBlockC2S3d": SparseResBlockC2S3d,
}


def block_class(name: str) -> type[nn.Module]:
    """Block class from its official name (only the types the released VAEs use)."""
    try:
        return BLOCK_TYPES[name]
    except KeyError:
        raise ValueError(f"unsupported SC-VAE block type {name!r}; known: {sorted(BLOCK_TYPES)}") from None
