"""A training-only head that reads a coarse 3D occupancy out of image-encoder tokens.

The mini release's image encoder is too small and too briefly trained to arrive knowing what a
picture shows in 3D, the way a large pretrained DINOv3 does. Before the flows train, it is taught
with this head: every cell of a ``grid^3`` occupancy grid owns a learned query that cross-attends
to the picture's tokens (as the sparse-structure flow's blocks do), and a linear readout gives the
cell's logit. The head is thrown away afterwards; only the encoder ships.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _ReadBlock(nn.Module):
    """Queries attend to the picture's tokens, then an MLP; pre-norm residuals."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm_q = nn.LayerNorm(channels)
        self.to_q = nn.Linear(channels, channels)
        self.to_kv = nn.Linear(channels, 2 * channels)
        self.out = nn.Linear(channels, channels)
        self.norm_mlp = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, 4 * channels), nn.GELU(approximate="tanh"),
                                 nn.Linear(4 * channels, channels))

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        H = self.heads
        q = self.to_q(self.norm_q(x)).view(B, N, H, C // H).transpose(1, 2)
        k, v = self.to_kv(tokens).view(B, tokens.shape[1], 2, H, C // H).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, C)
        x = x + self.out(att)
        return x + self.mlp(self.norm_mlp(x))


class StructureProbe(nn.Module):
    """Occupancy logits ``[B, grid, grid, grid]`` from encoder tokens ``[B, T, cond_channels]``.

    Args:
        cond_channels: the encoder's token width.
        grid: cells per side of the predicted occupancy.
        channels: width of the cell queries.
        num_blocks: cross-attention + MLP blocks.
        num_heads: attention heads.
    """

    def __init__(self, cond_channels: int, grid: int = 16, channels: int = 128, num_blocks: int = 2,
                 num_heads: int = 4) -> None:
        super().__init__()
        if grid < 1 or num_blocks < 1 or channels % num_heads:
            raise ValueError(f"grid and num_blocks must be >= 1 and channels ({channels}) a multiple of "
                             f"num_heads ({num_heads})")
        self.grid = grid
        self.queries = nn.Parameter(torch.randn(grid**3, channels) * 0.02)
        self.token_norm = nn.LayerNorm(cond_channels)
        self.token_proj = nn.Linear(cond_channels, channels)
        self.blocks = nn.ModuleList(_ReadBlock(channels, num_heads) for _ in range(num_blocks))
        self.norm_out = nn.LayerNorm(channels)
        self.readout = nn.Linear(channels, 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        kv = self.token_proj(self.token_norm(tokens))
        x = self.queries.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        for block in self.blocks:
            x = block(x, kv)
        g = self.grid
        return self.readout(self.norm_out(x)).view(-1, g, g, g)


# Networks that only training uses (never part of a release), by the name configs give them.
TRAINING_ONLY_MODELS: dict[str, type[nn.Module]] = {"StructureProbe": StructureProbe}
