"""``SparseStructureDecoder``: the TRELLIS v1 dense conv3d VAE decoder.

Mirrors TRELLIS ``models/sparse_structure_vae.py`` (decoder half): 8 x 16^3 latent ->
occupancy logits ``[B, 1, 64, 64, 64]``. Convolutions inside ``middle_block``/``blocks`` run in
float16 when ``use_fp16``; the channel LayerNorms compute in fp32; the input and output layers
are fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .dit_layers import layer_norm_fp32
from .flow_trunk import parse_dtype


def conv_block_dtype(norm_type: str, use_fp16: bool, dtype: str | None) -> torch.dtype:
    """Dense SS VAE block dtype (``dtype`` wins over ``use_fp16``); checks ``norm_type``."""
    if norm_type != "layer":
        raise ValueError(f"norm_type {norm_type!r} is not implemented (the release uses 'layer')")
    return parse_dtype(dtype) if dtype is not None else parse_dtype("float32", use_fp16)


class ChannelLayerNorm3d(nn.LayerNorm):
    """LayerNorm over the channel vector of each voxel of ``[B, C, X, Y, Z]``, in fp32 (eps 1e-5).

    fp64 inputs stay fp64 (gradient references).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = layer_norm_fp32(x.permute(0, 2, 3, 4, 1), self.eps, self.weight, self.bias)  # [B, X, Y, Z, C]
        return h.permute(0, 4, 1, 2, 3)


class ResBlock3d(nn.Module):
    """``norm1 -> SiLU -> conv1 -> norm2 -> SiLU -> conv2`` plus the identity skip."""

    def __init__(self, channels: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.norm1 = ChannelLayerNorm3d(channels)
        self.conv1 = nn.Conv3d(channels, channels, 3, padding=1, dtype=dtype)
        self.norm2 = ChannelLayerNorm3d(channels)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + x


def run_block(block: nn.Module, h: torch.Tensor, use_checkpoint: bool) -> torch.Tensor:
    """``block(h)``, recomputed in backward when ``use_checkpoint`` (training mode with grad only)."""
    if use_checkpoint and block.training and torch.is_grad_enabled():
        return checkpoint(block, h, use_reentrant=False)
    return block(h)


def pixel_shuffle_3d(x: torch.Tensor, scale: int = 2) -> torch.Tensor:
    """``[B, C s^3, X, Y, Z]`` -> ``[B, C, sX, sY, sZ]``; channel ``c s^3 + sx s^2 + sy s + sz`` (x = MSB)."""
    B, C, X, Y, Z = x.shape
    c = C // scale**3
    h = x.reshape(B, c, scale, scale, scale, X, Y, Z)
    h = h.permute(0, 1, 5, 2, 6, 3, 7, 4)  # [B, c, X, sx, Y, sy, Z, sz]
    return h.reshape(B, c, X * scale, Y * scale, Z * scale)


class UpsampleBlock3d(nn.Module):
    """Conv3d(C_in -> 8 C_out) then a x2 pixel shuffle. Key ``conv``."""

    def __init__(self, in_channels: int, out_channels: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels * 8, 3, padding=1, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_shuffle_3d(self.conv(x), 2)


def level_blocks(
    channels: list[int], num_res_blocks: int, resample: type[nn.Module], dtype: torch.dtype
) -> nn.ModuleList:
    """``num_res_blocks`` ResBlocks per level, with a ``resample(ch_i, ch_i+1)`` block between levels.

    The flat order gives the checkpoint keys ``blocks.{k}`` of both dense SS VAE halves.
    """
    blocks: list[nn.Module] = []
    for i, ch in enumerate(channels):
        blocks.extend(ResBlock3d(ch, dtype) for _ in range(num_res_blocks))
        if i < len(channels) - 1:
            blocks.append(resample(ch, channels[i + 1], dtype))
    return nn.ModuleList(blocks)


class SparseStructureDecoder(nn.Module):
    """Dense latent -> occupancy logits.

    Args:
        out_channels: 1 (occupancy logit).
        latent_channels: 8.
        num_res_blocks: ResBlocks per resolution level.
        channels: widths per level, e.g. ``[512, 128, 32]`` (one x2 upsampling between levels).
        num_res_blocks_middle: ResBlocks of the middle block.
        norm_type: only ``"layer"`` is implemented.
        use_fp16: float16 convolutions in the blocks (as stored).
        use_checkpoint: gradient checkpointing of each block (see ``set_gradient_checkpointing``).
        dtype: overrides the block dtype when given (e.g. ``"float32"`` on CPU).
    """

    def __init__(
        self,
        out_channels: int,
        latent_channels: int,
        num_res_blocks: int,
        channels: list[int],
        num_res_blocks_middle: int = 2,
        norm_type: str = "layer",
        use_fp16: bool = False,
        use_checkpoint: bool = False,
        dtype: str | None = None,
    ) -> None:
        super().__init__()
        block_dtype = conv_block_dtype(norm_type, use_fp16, dtype)
        self.use_checkpoint = use_checkpoint
        self.input_layer = nn.Conv3d(latent_channels, channels[0], 3, padding=1)
        self.middle_block = nn.Sequential(*[ResBlock3d(channels[0], block_dtype)
                                            for _ in range(num_res_blocks_middle)])
        self.blocks = level_blocks(channels, num_res_blocks, UpsampleBlock3d, block_dtype)
        self.out_layer = nn.Sequential(
            ChannelLayerNorm3d(channels[-1]), nn.SiLU(), nn.Conv3d(channels[-1], out_channels, 3, padding=1)
        )

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the convolutions inside the blocks."""
        first = self.middle_block[0].conv1 if len(self.middle_block) else self.blocks[0].conv
        return first.weight.dtype

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each res/upsample block in backward (training mode with grad only)."""
        self.use_checkpoint = bool(enabled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, latent, R, R, R]`` -> fp32 logits ``[B, out, R * 2^(levels-1), ...]``."""
        h = self.input_layer(x.to(self.input_layer.weight.dtype)).to(self.dtype)
        for block in [*self.middle_block, *self.blocks]:
            h = run_block(block, h, self.use_checkpoint)
        return self.out_layer(h.to(self.out_layer[2].weight.dtype))
