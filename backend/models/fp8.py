"""FP8 (e4m3) matmuls in the DiT blocks: an opt-in inference mode for GPUs with FP8 tensor cores.

:func:`convert_blocks_to_fp8` replaces each linear of a flow model's transformer blocks (the
self- and cross-attention projections and the MLP: nearly all of a DiT's FLOPs) with an
:class:`Fp8Linear`. Its weight is stored once in ``float8_e4m3fn`` with one scale per output
channel; its input is quantized per token on every call; ``torch._scaled_mm`` multiplies the two
in FP8, accumulates in fp32 and writes bf16. The embedders, the adaLN modulation, the input and
output layers, norms and attention itself keep their precision.

Per-row scales (``amax / 448``) keep every row's largest value representable; e4m3 has 3
mantissa bits, so each product carries up to ~6% relative rounding error per operand, averaged
down over the dot product. The conversion is inference-only: the converted network has no
gradient path and its ``state_dict`` is not the release's.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8_DTYPE).max)  # 448
MIN_CUDA_CAPABILITY = (8, 9)  # Ada and Hopper: the first GPUs with FP8 tensor cores
_ALIGNMENT = 16  # _scaled_mm needs the inner and output widths to be multiples of 16
_TINY = 1e-12  # a row of zeros gets this amax instead of dividing by zero


class Fp8Unsupported(RuntimeError):
    """FP8 matmuls cannot run on this device; the message says why."""


def check_fp8_device(device: torch.device | str) -> None:
    """Raise :class:`Fp8Unsupported` unless ``device`` can run ``torch._scaled_mm``.

    CUDA GPUs of compute capability 8.9 or newer (Ada, Hopper, Blackwell) run it on FP8 tensor
    cores; the CPU runs it too (slowly; useful to measure the quality cost without a GPU).
    """
    device = torch.device(device)
    if device.type == "cpu":
        return
    if device.type != "cuda":
        raise Fp8Unsupported(f"FP8 matmuls need an NVIDIA GPU (compute capability 8.9+) or the CPU, "
                             f"not {device.type}")
    capability = torch.cuda.get_device_capability(device)
    if capability < MIN_CUDA_CAPABILITY:
        name = torch.cuda.get_device_name(device)
        raise Fp8Unsupported(f"{name} has compute capability {capability[0]}.{capability[1]}; FP8 matmuls "
                             "need 8.9 or newer (Ada, Hopper)")


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x [M, K]`` -> ``(q [M, K] float8_e4m3fn, scale [M, 1] float32)`` with ``x ~ q * scale``."""
    amax = x.abs().amax(dim=-1, keepdim=True).float()
    scale = amax.clamp(min=_TINY) / FP8_MAX
    q = (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return q, scale


class Fp8Linear(nn.Module):
    """An ``nn.Linear`` computed in FP8: weight quantized per output channel once, input per token.

    ``forward(x [..., K]) -> [..., N]`` in ``x``'s dtype (the product is written in bf16 first).
    ``activation_dtype`` is the dtype the replaced linear's weight had (the block's compute dtype).
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.activation_dtype = linear.weight.dtype  # what the block around it computes in
        if self.in_features % _ALIGNMENT or self.out_features % _ALIGNMENT:
            raise ValueError(f"Fp8Linear needs widths divisible by {_ALIGNMENT}, got "
                             f"{self.in_features} -> {self.out_features}")
        weight, scale = quantize_rows(linear.weight.detach())  # [N, K], [N, 1]
        self.register_buffer("weight_fp8", weight)
        self.register_buffer("weight_scale", scale.t().contiguous())  # [1, N]
        bias = linear.bias.detach().clone() if linear.bias is not None else None
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        q, scale = quantize_rows(rows)
        out = torch._scaled_mm(q, self.weight_fp8.t(), scale_a=scale, scale_b=self.weight_scale,
                               out_dtype=torch.bfloat16).to(x.dtype)  # [M, N]
        if self.bias is not None:
            out = out + self.bias.to(x.dtype)
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, e4m3"


def convert_blocks_to_fp8(model: nn.Module) -> int:
    """Replace, in place, every ``nn.Linear`` inside ``model.blocks`` by an :class:`Fp8Linear`.

    Linears whose widths ``_scaled_mm`` cannot take (not multiples of 16) stay as they are (logged).
    Returns the number converted. Raises ValueError for a model without ``blocks``.
    """
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise ValueError(f"{type(model).__name__} has no transformer blocks to convert")
    converted, kept = 0, []
    for block in blocks:
        for parent in block.modules():
            for name, child in list(parent.named_children()):
                if type(child) is not nn.Linear:
                    continue
                if child.in_features % _ALIGNMENT or child.out_features % _ALIGNMENT:
                    kept.append(f"{name} ({child.in_features} -> {child.out_features})")
                    continue
                setattr(parent, name, Fp8Linear(child))
                converted += 1
    if kept:
        log.info("FP8: %d linears kept in their precision (widths not multiples of %d): %s",
                 len(kept), _ALIGNMENT, ", ".join(sorted(set(kept))))
    log.info("FP8: %d linears of %s's blocks run in e4m3", converted, type(model).__name__)
    return converted
