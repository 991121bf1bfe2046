"""``SparseStructureFlowModel``: the dense DiT of stage 1.

Mirrors TRELLIS.2 ``models/sparse_structure_flow.py``: the latent grid ``[B, C, R, R, R]`` is
flattened to ``R^3`` tokens (x slowest, z fastest), run through the shared trunk with 3-D RoPE
over the grid coordinates (or, with ``pe_mode = "ape"``, their sinusoidal embedding added to the
input tokens), and reshaped back.
"""

from __future__ import annotations

import torch

from .dit_blocks import AttentionContext
from .dit_layers import absolute_position_embedding, rope_phases
from .flow_trunk import CondKVCache, FlowTrunk


class SparseStructureFlowModel(FlowTrunk):
    """Dense flow DiT over a ``resolution^3`` latent grid.

    Args: the release config's, see :class:`FlowTrunk` (``resolution`` R is 16 in the release).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # The official module's buffer names: "rope_phases" (rope) or "pos_emb" (ape).
        for name, value in self.computed_buffers(None).items():
            self.register_buffer(name, value)

    def _grid(self, device: torch.device | str | None) -> torch.Tensor:
        """int64 ``[R^3, 3]`` voxel coordinates in token (x, y, z, row-major) order."""
        axis = torch.arange(self.resolution, device=device)
        return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)

    def compute_rope_phases(self, device: torch.device | str | None = None) -> torch.Tensor:
        """complex64 ``[R^3, head_dim // 2]`` for the grid, in token order."""
        return rope_phases(self._grid(device), self.head_dim, self.rope_freq)

    def computed_buffers(self, device: torch.device | str | None) -> dict[str, torch.Tensor]:
        """Buffers a checkpoint may omit, computed from the config (the loader fills them in)."""
        if self.pe_mode == "ape":
            return {"pos_emb": absolute_position_embedding(self._grid(device), self.model_channels)}
        return {"rope_phases": self.compute_rope_phases(device)}

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, *,
                cond_kv_cache: CondKVCache | None = None) -> torch.Tensor:
        """Predict the flow velocity.

        Args:
            x: ``[B, Cin, R, R, R]`` noisy latent.
            t: ``[B]`` timesteps (x1000).
            cond: ``[B, M, Cc]`` condition tokens.
            cond_kv_cache: inference: where the cross-attention K/V of ``cond`` are computed
                once and reused by later calls with the same ``cond`` tensor; None computes them.

        Returns:
            fp32 ``[B, Cout, R, R, R]``.
        """
        B, C, *spatial = x.shape
        if cond.shape[0] != B:
            raise ValueError(f"cond batch {cond.shape[0]} differs from x batch {B}")
        tokens = x.reshape(B, C, -1).transpose(1, 2)  # [B, R^3, Cin]
        kv = None if cond_kv_cache is None else cond_kv_cache.get(self, cond, "dense", cond)
        if self.pe_mode == "ape":
            ctx = AttentionContext(self.attention_backend)
            h = self.run_trunk(tokens, t, cond, ctx, pos_emb=self.pos_emb, cond_kv=kv)  # [B, R^3, Cout]
        else:
            ctx = AttentionContext(self.attention_backend, rope=self.rope_phases[None])
            h = self.run_trunk(tokens, t, cond, ctx, cond_kv=kv)
        return h.transpose(1, 2).reshape(B, -1, *spatial)
