"""Voxel sets for tests: shells (surface-like) and random occupancy."""

from __future__ import annotations

import torch


def shell_coords(res: int, batch: int = 1, thickness: float = 1.0, seed: int = 0) -> torch.Tensor:
    """``[N, 4]`` int32 voxels of a sphere shell in a ``res^3`` grid, per sample slightly shifted."""
    g = torch.stack(torch.meshgrid(*[torch.arange(res)] * 3, indexing="ij"), -1).reshape(-1, 3)
    out = []
    gen = torch.Generator().manual_seed(seed)
    for b in range(batch):
        centre = (res - 1) / 2 + (torch.rand(3, generator=gen) - 0.5)
        r = (g.float() - centre).norm(dim=1)
        radius = res * 0.4
        c = g[(r > radius - thickness) & (r <= radius)]
        out.append(torch.cat([torch.full((len(c), 1), b), c], dim=1))
    return torch.cat(out).to(torch.int32)


def random_coords(shape: tuple[int, int, int], batch: int, p: float, gen: torch.Generator) -> torch.Tensor:
    """``[N, 4]`` int32 random occupancy with probability ``p`` per cell, lexicographic order."""
    occ = torch.rand(batch, *shape, generator=gen) < p
    return occ.nonzero().to(torch.int32)
