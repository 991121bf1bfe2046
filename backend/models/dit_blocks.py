"""Transformer blocks shared by the dense (SS) and sparse (SLat) flow DiTs.

Mirrors TRELLIS.2 ``modules/attention/modules.py`` (``MultiHeadAttention``),
``modules/transformer/modulated.py`` (``ModulatedTransformerCrossBlock``) and their sparse
twins. Both DiTs run these blocks on a token tensor ``[B, L, C]``: the dense model has
``B`` equal-length sequences; the sparse model has one sequence (``B = 1``) or several
samples packed into ``[1, T, C]`` with a :class:`VarlenLayout`.

State-dict names match the official checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .attention import AttentionBackend, VarlenLayout, attention
from .dit_layers import QKRMSNorm, apply_rope, layer_norm_fp32, rms_norm_rope

BLOCK_NORM_EPS = 1e-6


@dataclass(frozen=True)
class AttentionContext:
    """What the attention layers of one forward need besides the activations.

    Args:
        backend: the attention kernel.
        rope: complex64 ``[B or 1, L, head_dim // 2]`` rotations for self-attention, or None.
        self_layout: per-sample ranges when several samples are packed, else None.
        cross_layout: per-sample (query, condition) ranges when packed, else None.
    """

    backend: AttentionBackend = AttentionBackend.SDPA
    rope: torch.Tensor | None = None
    self_layout: VarlenLayout | None = None
    cross_layout: VarlenLayout | None = None


class SelfAttention(nn.Module):
    """Fused-QKV self-attention, optional QK-RMSNorm and RoPE. Keys ``to_qkv``, ``*_rms_norm``, ``to_out``."""

    def __init__(self, channels: int, num_heads: int, qk_rms_norm: bool, dtype: torch.dtype) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = channels // num_heads
        self.to_qkv = nn.Linear(channels, 3 * channels, dtype=dtype)
        if qk_rms_norm:
            self.q_rms_norm = QKRMSNorm(self.head_dim, num_heads)
            self.k_rms_norm = QKRMSNorm(self.head_dim, num_heads)
        self.qk_rms_norm = qk_rms_norm
        self.to_out = nn.Linear(channels, channels, dtype=dtype)

    def forward(self, x: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        """``x [B, L, C]`` -> ``[B, L, C]``."""
        B, L, C = x.shape
        qkv = self.to_qkv(x).view(B, L, 3, self.num_heads, self.head_dim)  # [B, L, 3, H, D]
        v = qkv[:, :, 2]  # [B, L, H, D]
        if self.qk_rms_norm:
            # q and k normalised (and rotated) together: [B, L, 2, H, D]
            gamma = torch.stack([self.q_rms_norm.gamma, self.k_rms_norm.gamma]) * self.q_rms_norm.scale
            rope = None if ctx.rope is None else ctx.rope[:, :, None, None]  # [B|1, L, 1, 1, D/2]
            q, k = rms_norm_rope(qkv[:, :, :2], gamma, rope).unbind(2)
        else:
            q, k = qkv[:, :, 0], qkv[:, :, 1]
            if ctx.rope is not None:
                q, k = apply_rope(q, ctx.rope), apply_rope(k, ctx.rope)
        out = attention(q, k, v, ctx.backend, ctx.self_layout)  # [B, L, H, D]
        return self.to_out(out.reshape(B, L, C))


class CrossAttention(nn.Module):
    """Attention from tokens to condition tokens. Keys ``to_q``, ``to_kv``, ``*_rms_norm``, ``to_out``."""

    def __init__(
        self, channels: int, cond_channels: int, num_heads: int, qk_rms_norm: bool, dtype: torch.dtype
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = channels // num_heads
        self.to_q = nn.Linear(channels, channels, dtype=dtype)
        self.to_kv = nn.Linear(cond_channels, 2 * channels, dtype=dtype)
        if qk_rms_norm:
            self.q_rms_norm = QKRMSNorm(self.head_dim, num_heads)
            self.k_rms_norm = QKRMSNorm(self.head_dim, num_heads)
        self.qk_rms_norm = qk_rms_norm
        self.to_out = nn.Linear(channels, channels, dtype=dtype)

    def cond_kv(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values of the condition tokens ``cond [B, M, Cc]``: ``([B, M, H, D], [B, M, H, D])``.

        They depend on the condition alone, so a sampler computes them once per job and passes
        them to every step's :meth:`forward` (``kv``).
        """
        kv = self.to_kv(cond).view(*cond.shape[:2], 2, self.num_heads, self.head_dim)  # [B, M, 2, H, D]
        k, v = kv.unbind(2)
        if self.qk_rms_norm:
            k = self.k_rms_norm(k)
        return k, v

    def forward(self, x: torch.Tensor, cond: torch.Tensor, ctx: AttentionContext,
                kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``x [B, L, C]``, ``cond [B, M, Cc]`` -> ``[B, L, C]``; ``kv``: :meth:`cond_kv` of ``cond``
        computed earlier (then ``cond`` is not read)."""
        B, L, C = x.shape
        q = self.to_q(x).view(B, L, self.num_heads, self.head_dim)  # [B, L, H, D]
        k, v = self.cond_kv(cond) if kv is None else kv
        if self.qk_rms_norm:
            q = self.q_rms_norm(q)
        out = attention(q, k, v, ctx.backend, ctx.cross_layout)  # [B, L, H, D]
        return self.to_out(out.reshape(B, L, C))


class FeedForward(nn.Module):
    """Linear -> GELU(tanh) -> Linear. Keys ``mlp.0``, ``mlp.2``."""

    def __init__(self, channels: int, mlp_ratio: float, dtype: torch.dtype) -> None:
        super().__init__()
        hidden = int(channels * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden, dtype=dtype),
            nn.GELU(approximate="tanh"),
            nn.Linear(hidden, channels, dtype=dtype),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class ModulatedCrossBlock(nn.Module):
    """Self-attention (AdaLN-modulated, gated) -> cross-attention (affine LN) -> MLP (modulated, gated).

    The block receives the shared modulation ``mod`` and adds its own learned ``modulation``
    vector (``share_mod = true``). Linears run in ``dtype``; norms, ``modulation`` and the
    RMSNorm gammas stay fp32 as stored.

    Args:
        channels: width C.
        cond_channels: condition token width.
        num_heads: heads (head dim = C / heads).
        mlp_ratio: MLP hidden = ``int(C * mlp_ratio)``.
        qk_rms_norm: QK-RMSNorm in self-attention.
        qk_rms_norm_cross: QK-RMSNorm in cross-attention.
        dtype: dtype of the block's linears and activations.
    """

    def __init__(
        self,
        channels: int,
        cond_channels: int,
        num_heads: int,
        mlp_ratio: float,
        qk_rms_norm: bool,
        qk_rms_norm_cross: bool,
        dtype: torch.dtype,
    ) -> None:
        super().__init__()
        self.norm2 = nn.LayerNorm(channels, eps=BLOCK_NORM_EPS, elementwise_affine=True, dtype=torch.float32)
        self.self_attn = SelfAttention(channels, num_heads, qk_rms_norm, dtype)
        self.cross_attn = CrossAttention(channels, cond_channels, num_heads, qk_rms_norm_cross, dtype)
        self.mlp = FeedForward(channels, mlp_ratio, dtype)
        self.modulation = nn.Parameter(torch.randn(6 * channels, dtype=torch.float32) / channels**0.5)

    def forward(
        self, x: torch.Tensor, mod: torch.Tensor, cond: torch.Tensor, ctx: AttentionContext,
        cond_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """One block.

        Args:
            x: ``[B, L, C]`` in the block dtype.
            mod: ``[B, 1, 6C]`` (or ``[1, L, 6C]`` per token when packed), block dtype.
            cond: ``[B, M, Cc]`` (or packed ``[1, T_c, Cc]``), block dtype.
            ctx: attention settings for this forward.
            cond_kv: this block's ``cross_attn.cond_kv(cond)``, computed earlier, or None.

        Returns:
            ``[B, L, C]``.
        """
        m = (self.modulation + mod).to(x.dtype)  # fp32 sum, rounded like the official code
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = m.chunk(6, dim=-1)
        # addcmul = one pass and one rounding for "a * b + c" (the official code rounds twice)
        h = torch.addcmul(shift_msa, layer_norm_fp32(x, BLOCK_NORM_EPS), 1 + scale_msa)
        x = torch.addcmul(x, self.self_attn(h, ctx), gate_msa)
        h = layer_norm_fp32(x, BLOCK_NORM_EPS, self.norm2.weight, self.norm2.bias)
        x = x + self.cross_attn(h, cond, ctx, cond_kv)
        h = torch.addcmul(shift_mlp, layer_norm_fp32(x, BLOCK_NORM_EPS), 1 + scale_mlp)
        return torch.addcmul(x, self.mlp(h), gate_mlp)

