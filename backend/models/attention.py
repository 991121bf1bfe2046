"""Scaled dot-product attention with an explicitly chosen kernel.

Mirrors the role of TRELLIS.2 ``modules/attention/full_attn.py`` and
``modules/sparse/attention/full_attn.py``, but the backend is an argument chosen by the
caller (a model's runtime setting), never an environment variable or a module global.

Two layouts:
* dense: ``q [B, Lq, H, D]``, ``k, v [B, Lk, H, D]`` -- one sequence per batch row;
* packed varlen: ``q [Tq, H, D]``, ``k, v [Tk, H, D]`` with a :class:`VarlenLayout` giving
  each sample's row range (several sequences of different lengths, concatenated).

A single sequence should use the dense layout with ``B = 1`` (no varlen machinery).
"""

from __future__ import annotations

import enum
import functools
import importlib.util
import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

log = logging.getLogger(__name__)


class AttentionBackend(enum.Enum):
    """Which kernel runs attention.

    * ``SDPA``: ``F.scaled_dot_product_attention`` with torch's own dispatch; packed varlen
      input on CUDA runs torch's one-kernel varlen attention (see :func:`varlen_attention`).
    * ``SDPA_CUDNN``: SDPA restricted to the cuDNN kernel (fastest on Hopper at head dim 128).
    * ``SDPA_FLASH``: SDPA restricted to torch's built-in FlashAttention-2 kernel.
    * ``FLASH_ATTN``: the ``flash_attn`` package (real varlen); only when it is importable.
    * ``REFERENCE``: plain fp32 matmul -> softmax -> matmul, for tests.
    """

    SDPA = "sdpa"
    SDPA_CUDNN = "sdpa_cudnn"
    SDPA_FLASH = "sdpa_flash"
    FLASH_ATTN = "flash_attn"
    REFERENCE = "reference"

    @classmethod
    def parse(cls, value: AttentionBackend | str) -> AttentionBackend:
        """Accept an enum member or its string value (e.g. from a CLI flag)."""
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            names = ", ".join(m.value for m in cls)
            raise ValueError(f"unknown attention backend {value!r}; expected one of {names}") from None


_SDPA_KERNELS = {
    AttentionBackend.SDPA_CUDNN: SDPBackend.CUDNN_ATTENTION,
    AttentionBackend.SDPA_FLASH: SDPBackend.FLASH_ATTENTION,
}


def flash_attn_available() -> bool:
    """Whether the optional ``flash_attn`` package can be imported."""
    return importlib.util.find_spec("flash_attn") is not None


def _flash_attn():
    if not flash_attn_available():
        raise RuntimeError("AttentionBackend.FLASH_ATTN needs the flash-attn package, which is not installed")
    import flash_attn

    return flash_attn


@dataclass(frozen=True)
class VarlenLayout:
    """Row ranges of the samples packed into one varlen attention call.

    Args:
        cu_seqlens_q: int32 ``[B + 1]`` cumulative query lengths (on the tensors' device).
        cu_seqlens_k: int32 ``[B + 1]`` cumulative key/value lengths.
        offsets_q: the same offsets as Python ints (for per-sample loops without a host sync).
        offsets_k: likewise for keys/values.
    """

    cu_seqlens_q: torch.Tensor
    cu_seqlens_k: torch.Tensor
    offsets_q: tuple[int, ...]
    offsets_k: tuple[int, ...]

    @property
    def max_seqlen_q(self) -> int:
        return max(b - a for a, b in zip(self.offsets_q[:-1], self.offsets_q[1:]))

    @property
    def max_seqlen_k(self) -> int:
        return max(b - a for a, b in zip(self.offsets_k[:-1], self.offsets_k[1:]))

    @staticmethod
    def from_offsets(offsets_q: list[int], offsets_k: list[int], device: torch.device) -> VarlenLayout:
        """Build a layout from Python offset lists ``[0, n0, n0 + n1, ...]``."""
        if len(offsets_q) != len(offsets_k):
            raise ValueError("query and key layouts must have the same number of samples")
        cu_q = torch.tensor(offsets_q, dtype=torch.int32, device=device)
        cu_k = torch.tensor(offsets_k, dtype=torch.int32, device=device)
        return VarlenLayout(cu_q, cu_k, tuple(offsets_q), tuple(offsets_k))


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Plain softmax attention in fp32 (fp64 for fp64 inputs, e.g. gradient references).

    ``q [B, Lq, H, D]``, ``k, v [B, Lk, H, D]`` -> ``[B, Lq, H, D]`` in q's dtype.
    """
    cdt = torch.promote_types(q.dtype, torch.float32)
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = torch.einsum("blhd,bmhd->bhlm", q.to(cdt), k.to(cdt)) * scale  # [B, H, Lq, Lk]
    probs = scores.softmax(dim=-1)
    return torch.einsum("bhlm,bmhd->blhd", probs, v.to(cdt)).to(q.dtype)


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: AttentionBackend) -> torch.Tensor:
    # SDPA wants [B, H, L, D]; transposed views are fine (last dim stays contiguous).
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    kernel = _SDPA_KERNELS.get(backend)
    if kernel is None:
        return F.scaled_dot_product_attention(qt, kt, vt).transpose(1, 2)  # [B, Lq, H, D]
    with sdpa_kernel(kernel):
        try:
            out = F.scaled_dot_product_attention(qt, kt, vt)
        except RuntimeError:
            # A pinned kernel may reject some strided layouts; dense copies are always accepted.
            log.debug("%s rejected strided inputs; retrying with contiguous copies", backend.value)
            out = F.scaled_dot_product_attention(qt.contiguous(), kt.contiguous(), vt.contiguous())
    return out.transpose(1, 2)  # [B, Lq, H, D]


def dense_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: AttentionBackend = AttentionBackend.SDPA
) -> torch.Tensor:
    """Attention over equal-length sequences, no mask, scale ``1/sqrt(D)``.

    Args:
        q: ``[B, Lq, H, D]``.
        k: ``[B, Lk, H, D]``.
        v: ``[B, Lk, H, D]``.
        backend: the kernel to use.

    Returns:
        ``[B, Lq, H, D]`` in q's dtype (may be a non-contiguous view).
    """
    if backend is AttentionBackend.REFERENCE:
        return reference_attention(q, k, v)
    if backend is AttentionBackend.FLASH_ATTN:
        return _flash_attn().flash_attn_func(q, k, v)
    return _sdpa(q, k, v, backend)


@functools.cache
def _torch_varlen_kernel():
    """torch's packed FlashAttention entry point (``torch.nn.attention.varlen``), or None."""
    if importlib.util.find_spec("torch.nn.attention.varlen") is None:
        return None
    from torch.nn.attention.varlen import varlen_attn

    return varlen_attn


def _flash_kernel_accepts(q: torch.Tensor) -> bool:
    """Whether FlashAttention kernels take ``q``: CUDA, fp16/bf16, head dim <= 256."""
    return q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] <= 256


def varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: VarlenLayout,
    backend: AttentionBackend = AttentionBackend.SDPA,
) -> torch.Tensor:
    """Attention within each packed sample: sample ``i``'s queries see only its own keys.

    Training batches pack samples of many different lengths. Looping over them with torch's
    default SDPA dispatch on Hopper picks cuDNN, which builds an execution plan (hundreds of ms)
    for every new sequence length, forward and backward: a packed batch of 32 shapes then costs
    seconds per step. So with ``SDPA`` on CUDA the packed batch runs as one FlashAttention varlen
    kernel (``torch.nn.attention.varlen``), or, where torch lacks it, as a loop pinned to the
    FlashAttention kernel, which has no per-shape plan.

    Args:
        q: ``[Tq, H, D]`` (all samples' queries concatenated).
        k: ``[Tk, H, D]``.
        v: ``[Tk, H, D]``.
        layout: the per-sample row ranges of q and k/v.
        backend: FLASH_ATTN runs the flash-attn package's varlen kernel; SDPA on CUDA runs
            torch's (see above); the others loop over samples with ``B = 1``.

    Returns:
        ``[Tq, H, D]``.
    """
    args = (layout.cu_seqlens_q, layout.cu_seqlens_k, layout.max_seqlen_q, layout.max_seqlen_k)
    if backend is AttentionBackend.FLASH_ATTN:
        return _flash_attn().flash_attn_varlen_func(q, k, v, *args)
    if backend is AttentionBackend.SDPA and _flash_kernel_accepts(q):
        packed_kernel = _torch_varlen_kernel()
        if packed_kernel is not None:
            return packed_kernel(q, k, v, *args)
        backend = AttentionBackend.SDPA_FLASH
    oq, ok = layout.offsets_q, layout.offsets_k
    outs = []
    for i in range(len(oq) - 1):
        qs, ks = slice(oq[i], oq[i + 1]), slice(ok[i], ok[i + 1])
        outs.append(dense_attention(q[None, qs], k[None, ks], v[None, ks], backend)[0])
    # One cat (not slice assignment into a buffer): a single backward node, no copy chain.
    return torch.cat(outs)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    backend: AttentionBackend = AttentionBackend.SDPA,
    layout: VarlenLayout | None = None,
) -> torch.Tensor:
    """Dense attention when ``layout`` is None, else packed varlen (``q`` etc. carry a leading 1).

    Args:
        q: ``[B, Lq, H, D]`` (``B = 1`` when ``layout`` is given: ``[1, Tq, H, D]``).
        k: ``[B, Lk, H, D]``.
        v: ``[B, Lk, H, D]``.
        backend: the kernel.
        layout: per-sample row ranges for packed multi-sample input, or None.

    Returns:
        ``[B, Lq, H, D]``.
    """
    if layout is None:
        return dense_attention(q, k, v, backend)
    return varlen_attention(q[0], k[0], v[0], layout, backend)[None]
