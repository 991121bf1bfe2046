"""Small DiT layers: timestep embedding, QK-RMSNorm, 3-D RoPE, fp32 layer norms.

Mirrors TRELLIS.2 ``models/sparse_structure_flow.py`` (``TimestepEmbedder``),
``modules/attention/modules.py`` (``MultiHeadRMSNorm``), ``modules/attention/rope.py`` and
``modules/norm.py`` (``LayerNorm32``), with their numerics: norms and rotations in fp32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def norm_compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype norms and rotations compute in: fp32 for reduced-precision inputs, else the input's.

    Half-precision activations are upcast to fp32 (the official precision); fp32 and fp64
    inputs are kept, so a float64 copy of a model can serve as a gradient reference.
    """
    return torch.promote_types(dtype, torch.float32)


def _needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def timestep_features(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal timestep features, **cos first**.

    Args:
        t: ``[B]`` timesteps (already scaled by 1000 by the sampler).
        dim: feature size (even).
        max_period: the slowest period.

    Returns:
        fp32 ``[B, dim]`` = ``[cos(t f_k), sin(t f_k)]``, ``f_k = exp(-ln(max_period) k / (dim/2))``.
    """
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(-math.log(max_period) * k / half)  # [half]
    args = t.float()[:, None] * freqs[None]  # [B, half]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """Sinusoid (256) -> Linear -> SiLU -> Linear; fp32. Keys ``mlp.0.*``, ``mlp.2.*``."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256) -> None:
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """``t [B]`` -> fp32 ``[B, hidden_size]``."""
        feats = timestep_features(t, self.frequency_embedding_size).to(self.mlp[0].weight.dtype)
        return self.mlp(feats)


class QKRMSNorm(nn.Module):
    """Per-head "RMSNorm" of TRELLIS.2: ``normalize_L2(x) * gamma * sqrt(head_dim)``, in fp32.

    Args:
        head_dim: channels per head.
        num_heads: heads (``gamma`` is ``[num_heads, head_dim]``).
    """

    def __init__(self, head_dim: int, num_heads: int) -> None:
        super().__init__()
        self.scale = head_dim**0.5
        self.gamma = nn.Parameter(torch.ones(num_heads, head_dim, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., H, D]`` -> same shape and dtype."""
        return rms_norm_rope(x, self.gamma * self.scale)


def rms_norm_rope(x: torch.Tensor, gamma: torch.Tensor, phases: torch.Tensor | None = None) -> torch.Tensor:
    """QK-RMSNorm, then (optionally) RoPE, in fp32 with one rounding at the end.

    ``y = x / max(||x||, 1e-12) * gamma`` (``gamma`` already multiplied by ``sqrt(D)``), rotated by
    ``phases``. Equals the official ``normalize -> * gamma * sqrt(D) -> cast -> RoPE -> cast`` up
    to fp32 re-association and one skipped intermediate rounding; it needs ~5 memory passes
    instead of ~20, which matters at 10K+ tokens.

    Args:
        x: ``[..., H, D]``, any dtype and strides (e.g. the q/k slots of a fused qkv view).
        gamma: fp32, broadcastable to x (e.g. ``[2, H, D]`` for stacked q and k).
        phases: complex64 broadcastable to ``[..., H, D // 2]``, or None.

    Returns:
        Contiguous tensor shaped like x, in x's dtype.
    """
    cdt = norm_compute_dtype(x.dtype)
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=cdt)
    y = x * gamma.to(cdt)  # compute dtype by type promotion
    if _needs_grad(x, gamma):
        # autograd needs the norm unchanged for backward: no in-place ops on this path
        y = y / norm.clamp_min(1e-12)
    else:
        y = y.div_(norm.clamp_min_(1e-12))
    if phases is not None:
        y = torch.view_as_real(torch.view_as_complex(y.view(*y.shape[:-1], -1, 2)) * phases).flatten(-2)
    return y.to(x.dtype)


def layer_norm_fp32(
    x: torch.Tensor,
    eps: float,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """LayerNorm over the last dim computed in (at least) fp32, cast back to ``x``'s dtype ("LayerNorm32").

    The one fp32 layer norm of the models: :class:`LayerNorm32` and the dense decoders'
    channel norm call it. Without affine parameters the reduced-precision input goes straight
    to ``F.layer_norm``, which already accumulates and normalises in fp32 and rounds once at
    the end -- the same result as upcasting first, without the fp32 copy. fp64 stays fp64.

    Args:
        x: ``[..., C]``.
        eps: the epsilon.
        weight: optional ``[C]`` (computed with in the compute dtype).
        bias: optional ``[C]``.
    """
    shape = x.shape[-1:]
    if weight is None and bias is None:
        return F.layer_norm(x, shape, eps=eps)
    cdt = norm_compute_dtype(x.dtype)
    weight = None if weight is None else weight.to(cdt)
    bias = None if bias is None else bias.to(cdt)
    return F.layer_norm(x.to(cdt), shape, weight, bias, eps).to(x.dtype)


class LayerNorm32(nn.LayerNorm):
    """:class:`torch.nn.LayerNorm` (same parameters and keys) computed by :func:`layer_norm_fp32`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm_fp32(x, self.eps, self.weight, self.bias)


def rope_frequencies(
    head_dim: int, axes: int = 3, rope_freq: tuple[float, float] = (1.0, 10000.0), device=None
) -> torch.Tensor:
    """Per-axis RoPE frequencies ``a / b^(j / F)`` for ``rope_freq = (a, b)``, ``F = head_dim // 2 // axes``.

    Returns:
        fp32 ``[F]``.
    """
    freq_dim = head_dim // 2 // axes
    if freq_dim < 1:
        raise ValueError(f"head_dim {head_dim} is too small for {axes}-axis RoPE")
    exponents = torch.arange(freq_dim, dtype=torch.float32, device=device) / freq_dim
    return rope_freq[0] / rope_freq[1] ** exponents


def rope_phases(
    coords: torch.Tensor, head_dim: int, rope_freq: tuple[float, float] = (1.0, 10000.0)
) -> torch.Tensor:
    """Unit complex rotations for integer grid coordinates (3-D RoPE).

    The phase vector of a token at ``(x, y, z)`` is ``[x * f (F), y * f (F), z * f (F), 0 ...]``,
    padded with zero phases (identity pairs) up to ``head_dim // 2``.

    Args:
        coords: ``[L, 3]`` integer (x, y, z).
        head_dim: channels per head.
        rope_freq: ``(a, b)`` of the frequencies ``a / b^(j / F)`` (the released models: (1, 1e4)).

    Returns:
        complex64 ``[L, head_dim // 2]``.
    """
    freqs = rope_frequencies(head_dim, coords.shape[-1], rope_freq, coords.device)  # [F]
    phases = (coords.float()[:, :, None] * freqs).reshape(coords.shape[0], -1)  # [L, axes * F]
    pad = head_dim // 2 - phases.shape[1]
    if pad:
        phases = F.pad(phases, (0, pad))
    return torch.polar(torch.ones_like(phases), phases)


def absolute_position_embedding(coords: torch.Tensor, channels: int) -> torch.Tensor:
    """Sinusoidal embedding of integer grid coordinates (``pe_mode = "ape"``).

    Per axis ``a`` of ``[x, y, z]``: ``[sin(a * f), cos(a * f)]`` with ``F = channels // 3 // 2``
    frequencies ``f_j = 10000^(-j / F)``; the axes' blocks are concatenated and zero-padded to
    ``channels``.

    Args:
        coords: ``[L, 3]`` integer (x, y, z).
        channels: embedding width (the model width).

    Returns:
        float32 ``[L, channels]``.
    """
    num_freqs = channels // coords.shape[-1] // 2
    freqs = 1.0 / 10000 ** (torch.arange(num_freqs, dtype=torch.float32, device=coords.device) / num_freqs)
    angles = coords.float()[:, :, None] * freqs  # [L, axes, F]
    emb = torch.cat([angles.sin(), angles.cos()], dim=-1).reshape(coords.shape[0], -1)  # [L, axes * 2F]
    return F.pad(emb, (0, channels - emb.shape[1]))


def apply_rope(x: torch.Tensor, phases: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs ``(2i, 2i + 1)`` of each head by ``phases[..., i]``, in (at least) fp32.

    Args:
        x: ``[B, L, H, D]``.
        phases: complex64 ``[B or 1, L, D // 2]``.

    Returns:
        ``[B, L, H, D]`` in x's dtype.
    """
    xc = torch.view_as_complex(x.to(norm_compute_dtype(x.dtype)).reshape(*x.shape[:-1], -1, 2))  # [B,L,H,D/2]
    rotated = xc * phases[:, :, None, :]
    return torch.view_as_real(rotated).flatten(-2).to(x.dtype)
