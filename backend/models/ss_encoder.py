"""``SparseStructureEncoder``: the TRELLIS v1 dense conv3d VAE encoder (``ss_enc_conv3d_16l8``).

Mirrors TRELLIS ``models/sparse_structure_vae.py`` (encoder half): occupancy ``[B, 1, 64, 64, 64]``
-> Gaussian posterior over the 8 x 16^3 sparse-structure latent. It is used to make training
latents for the stage-1 flow, not at inference. Building blocks are shared with
:class:`~backend.models.ss_decoder.SparseStructureDecoder`.
"""

from __future__ import annotations

import torch
from torch import nn

from .ss_decoder import ChannelLayerNorm3d, ResBlock3d, conv_block_dtype, level_blocks, run_block


class DownsampleBlock3d(nn.Module):
    """x2 downsampling by a Conv3d with kernel 2, stride 2 ("conv" mode). Key ``conv``."""

    def __init__(self, in_channels: int, out_channels: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, 2, stride=2, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class SparseStructureEncoder(nn.Module):
    """Dense occupancy -> latent mean (and log-variance).

    Args:
        in_channels: 1 (occupancy).
        latent_channels: 8.
        num_res_blocks: ResBlocks per resolution level.
        channels: widths per level, e.g. ``[32, 128, 512]`` (one x2 downsampling between levels).
        num_res_blocks_middle: ResBlocks of the middle block (at ``channels[-1]``).
        norm_type: only ``"layer"`` is implemented.
        use_fp16: float16 convolutions in ``blocks`` and ``middle_block``.
        use_checkpoint: gradient checkpointing of each block (see ``set_gradient_checkpointing``).
        dtype: overrides the block dtype when given (e.g. ``"float32"``).
    """

    def __init__(
        self,
        in_channels: int,
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
        self.latent_channels = latent_channels
        self.use_checkpoint = use_checkpoint
        self.input_layer = nn.Conv3d(in_channels, channels[0], 3, padding=1)
        self.blocks = level_blocks(channels, num_res_blocks, DownsampleBlock3d, block_dtype)
        self.middle_block = nn.Sequential(*[ResBlock3d(channels[-1], block_dtype)
                                            for _ in range(num_res_blocks_middle)])
        self.out_layer = nn.Sequential(
            ChannelLayerNorm3d(channels[-1]),
            nn.SiLU(),
            nn.Conv3d(channels[-1], 2 * latent_channels, 3, padding=1),
        )

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the convolutions inside the blocks."""
        for m in self.blocks.modules():
            if isinstance(m, nn.Conv3d):
                return m.weight.dtype
        return self.input_layer.weight.dtype

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block in backward (training mode with grad only)."""
        self.use_checkpoint = bool(enabled)

    def forward(
        self,
        x: torch.Tensor,
        sample_posterior: bool = False,
        return_raw: bool = False,
        generator: torch.Generator | None = None,
    ):
        """Encode occupancy.

        Args:
            x: ``[B, in, R, R, R]`` float occupancy (0/1), R = 64 in the release.
            sample_posterior: return ``mean + exp(logvar / 2) * noise`` instead of the mean.
            return_raw: also return the posterior's mean and log-variance.
            generator: noise source for ``sample_posterior``.

        Returns:
            fp32 latent ``[B, latent, R / 2^(levels-1), ...]``; with ``return_raw`` the tuple
            ``(latent, mean, logvar)`` (as the official encoder).
        """
        h = self.input_layer(x.to(self.input_layer.weight.dtype)).to(self.dtype)
        for block in [*self.blocks, *self.middle_block]:
            h = run_block(block, h, self.use_checkpoint)
        h = self.out_layer(h.to(self.out_layer[2].weight.dtype))
        mean, logvar = h.chunk(2, dim=1)
        z = mean
        if sample_posterior:
            noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
            z = mean + torch.exp(0.5 * logvar) * noise
        return (z, mean, logvar) if return_raw else z
