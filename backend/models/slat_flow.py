"""``SLatFlowModel``: the sparse DiT of the shape and texture stages.

Mirrors TRELLIS.2 ``models/structured_latent_flow.py``. Self-attention is full attention over
all voxels of a sample with 3-D RoPE from the voxel coordinates (or, with ``pe_mode = "ape"``,
without RoPE and with the coordinates' sinusoidal embedding added to the input tokens). One
sample runs as a dense ``B = 1`` sequence; several samples are packed and use varlen attention.
"""

from __future__ import annotations

import torch

from ..sparse import SparseTensor
from .attention import VarlenLayout
from .dit_blocks import AttentionContext
from .dit_layers import absolute_position_embedding, rope_phases
from .flow_trunk import FlowTrunk


class SLatFlowModel(FlowTrunk):
    """Sparse flow DiT over a :class:`SparseTensor` of latent voxels.

    Args: the release config's, see :class:`FlowTrunk`; ``in_channels`` is 32 (shape) or 64
    (texture: noise 32 + shape-latent ``concat_cond`` 32); ``resolution`` is nominal (unused
    with RoPE).
    """

    def _rope(self, x: SparseTensor) -> torch.Tensor:
        """complex64 ``[N, head_dim // 2]``, built once per coordinate set (shared cache)."""
        key = f"rope_phases:{self.head_dim}:{self.rope_freq}"
        return x.cached(key, lambda: rope_phases(x.coords[:, 1:], self.head_dim, self.rope_freq))

    def _pos_emb(self, x: SparseTensor) -> torch.Tensor:
        """float32 ``[N, C]`` absolute position embedding of the voxels (shared cache)."""
        key = f"pos_emb:{self.model_channels}"
        return x.cached(key, lambda: absolute_position_embedding(x.coords[:, 1:], self.model_channels))

    def _layouts(self, x: SparseTensor, cond_len: int) -> tuple[VarlenLayout, VarlenLayout]:
        def build() -> tuple[VarlenLayout, VarlenLayout]:
            offsets = x.cu_seqlens.tolist()
            cond_offsets = [i * cond_len for i in range(x.batch_size + 1)]
            return (VarlenLayout.from_offsets(offsets, offsets, x.device),
                    VarlenLayout.from_offsets(offsets, cond_offsets, x.device))

        return x.cached(f"varlen_layouts:{cond_len}", build)

    def forward(
        self,
        x: SparseTensor,
        t: torch.Tensor,
        cond: torch.Tensor,
        concat_cond: SparseTensor | None = None,
    ) -> SparseTensor:
        """Predict the flow velocity on the voxels of ``x``.

        Args:
            x: noisy latent, feats ``[N, 32]``.
            t: ``[B]`` timesteps (x1000).
            cond: ``[B, M, Cc]`` condition tokens.
            concat_cond: texture stage only: the normalised shape latent (feats ``[N, 32]``, same
                coords and order); concatenated after the noise channels.

        Returns:
            fp32 velocity with x's coords and order, feats ``[N, Cout]``.
        """
        B = x.batch_size
        if cond.shape[0] != B:
            raise ValueError(f"cond batch {cond.shape[0]} differs from x batch {B}")
        feats = x.feats  # [N, Cin]
        if concat_cond is not None:
            if len(concat_cond) != len(x):
                raise ValueError(f"concat_cond has {len(concat_cond)} voxels, x has {len(x)}")
            feats = torch.cat([feats, concat_cond.feats.to(feats.dtype)], dim=-1)  # noise first
        ape = self.pe_mode == "ape"
        rope = None if ape else self._rope(x)[None]  # [1, N, D/2]
        pos_emb = self._pos_emb(x) if ape else None  # [N, C]
        if B == 1:
            ctx = AttentionContext(self.attention_backend, rope=rope)
            out = self.run_trunk(feats[None], t, cond, ctx, pos_emb=pos_emb)[0]  # [N, Cout]
        else:
            self_layout, cross_layout = self._layouts(x, cond.shape[1])
            ctx = AttentionContext(self.attention_backend, rope, self_layout, cross_layout)
            packed_cond = cond.reshape(1, -1, cond.shape[-1])  # [1, B*M, Cc]
            out = self.run_trunk(feats[None], t, packed_cond, ctx, x.batch_index, pos_emb=pos_emb)[0]
        return x.replace(out)
