"""``SparseStructureFlowModel``: the dense DiT of stage 1.

Mirrors TRELLIS.2 ``models/sparse_structure_flow.py``: the latent grid ``[B, C, R, R, R]`` is
flattened to ``R^3`` tokens (x slowest, z fastest), run through the shared trunk with 3-D RoPE
over the grid coordinates, and reshaped back.
"""

from __future__ import annotations

import torch

from .dit_blocks import AttentionContext
from .dit_layers import rope_phases
from .flow_trunk import FlowTrunk


class SparseStructureFlowModel(FlowTrunk):
    """Dense flow DiT over a ``resolution^3`` latent grid.

    Args: the release config's, see :class:`FlowTrunk` (``resolution`` R is 16 in the release).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("rope_phases", self.compute_rope_phases())

    def compute_rope_phases(self, device: torch.device | str | None = None) -> torch.Tensor:
        """complex64 ``[R^3, head_dim // 2]`` for the grid, in token (x, y, z, row-major) order."""
        axis = torch.arange(self.resolution, device=device)
        grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)  # [R^3, 3]
        return rope_phases(grid, self.head_dim, self.rope_freq)

    def computed_buffers(self, device: torch.device | str) -> dict[str, torch.Tensor]:
        """Buffers a checkpoint may omit, computed from the config (the loader fills them in)."""
        return {"rope_phases": self.compute_rope_phases(device)}

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Predict the flow velocity.

        Args:
            x: ``[B, Cin, R, R, R]`` noisy latent.
            t: ``[B]`` timesteps (x1000).
            cond: ``[B, M, Cc]`` condition tokens.

        Returns:
            fp32 ``[B, Cout, R, R, R]``.
        """
        B, C, *spatial = x.shape
        if cond.shape[0] != B:
            raise ValueError(f"cond batch {cond.shape[0]} differs from x batch {B}")
        tokens = x.reshape(B, C, -1).transpose(1, 2)  # [B, R^3, Cin]
        ctx = AttentionContext(self.attention_backend, rope=self.rope_phases[None])
        h = self.run_trunk(tokens, t, cond, ctx)  # [B, R^3, Cout]
        return h.transpose(1, 2).reshape(B, -1, *spatial)
