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
from .flow_trunk import CondKVCache, FlowTrunk


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

    @staticmethod
    def _common_length(x: SparseTensor) -> int | None:
        """The voxel count every sample of ``x`` has, or None when they differ (shared cache)."""
        def build() -> int | None:
            if x.batch_size == 1:
                return len(x)
            lengths = set(x.seqlens.tolist())
            return lengths.pop() if len(lengths) == 1 else None

        return x.cached("common_length", build)

    def forward(
        self,
        x: SparseTensor,
        t: torch.Tensor,
        cond: torch.Tensor,
        concat_cond: SparseTensor | None = None,
        *,
        cond_kv_cache: CondKVCache | None = None,
    ) -> SparseTensor:
        """Predict the flow velocity on the voxels of ``x``.

        Samples with equally many voxels (one sample; or the copies of one sample that a batched
        classifier-free-guidance step makes) run as a dense batch ``[B, L, C]``; samples of
        different sizes are packed into one sequence with per-sample (varlen) attention.

        Args:
            x: noisy latent, feats ``[N, 32]``.
            t: ``[B]`` timesteps (x1000).
            cond: ``[B, M, Cc]`` condition tokens.
            concat_cond: texture stage only: the normalised shape latent (feats ``[N, 32]``, same
                coords and order); concatenated after the noise channels.
            cond_kv_cache: inference: where the cross-attention K/V of ``cond`` are computed
                once and reused by later calls with the same ``cond`` tensor; None computes them.

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
        rope = None if ape else self._rope(x)  # [N, D/2]
        pos_emb = self._pos_emb(x) if ape else None  # [N, C]
        length = self._common_length(x)
        if length is not None:
            dense = lambda v: None if v is None else v.view(B, length, v.shape[-1])  # noqa: E731  [B, L, *]
            ctx = AttentionContext(self.attention_backend, rope=dense(rope))
            kv = None if cond_kv_cache is None else cond_kv_cache.get(self, cond, "dense", cond)
            out = self.run_trunk(dense(feats), t, cond, ctx, pos_emb=dense(pos_emb), cond_kv=kv)
            return x.replace(out.reshape(len(x), out.shape[-1]))  # [N, Cout]
        self_layout, cross_layout = self._layouts(x, cond.shape[1])
        ctx = AttentionContext(self.attention_backend, None if rope is None else rope[None],
                               self_layout, cross_layout)
        packed_cond = cond.reshape(1, -1, cond.shape[-1])  # [1, B*M, Cc]
        kv = None if cond_kv_cache is None else cond_kv_cache.get(self, cond, "packed", packed_cond)
        out = self.run_trunk(feats[None], t, packed_cond, ctx, x.batch_index, pos_emb=pos_emb, cond_kv=kv)
        return x.replace(out[0])
