"""Pipeline fixtures: the tiny random-weight release and a small, fixed sparse structure."""

from __future__ import annotations

import pytest
import torch

from tests.fixtures.tiny_checkpoint import tiny_checkpoint  # noqa: F401  (session fixture)


def small_shell(grid: int, radius: float = 0.08, samples: int = 1) -> torch.Tensor:
    """``[N, 4]`` int32 voxels of a thin spherical shell per sample (what stage 1 would find)."""
    ax = torch.arange(grid)
    g = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    d = ((g.float() + 0.5) / grid - 0.5).norm(dim=-1)
    c = g[(d > radius) & (d < radius + 1.2 / grid)].int()
    return torch.cat([torch.cat([torch.full((len(c), 1), b, dtype=torch.int32), c], 1)
                      for b in range(samples)])


@pytest.fixture
def shell():
    return small_shell
