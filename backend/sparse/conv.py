"""``SparseConv3d``: submanifold 3x3x3 convolution module with an explicit backend choice."""

from __future__ import annotations

import enum
import math

import torch
from torch import nn

from kernels.sparse_conv.im2col import subm_conv3d_im2col
from kernels.sparse_conv.reference import gather_plan, subm_conv3d_reference

from .neighbors import KERNEL_VOLUME, neighbor_map
from .tensor import SparseTensor

GATHER_PLAN_CACHE_KEY = "subm_conv3d_gather_plan"


class ConvBackend(enum.StrEnum):
    """How ``SparseConv3d`` computes: the Triton kernel or the torch gather-GEMM."""

    TRITON = "triton"
    TORCH = "torch"
    IM2COL = "im2col"  # one gather + one GEMM per conv: fewest kernels, [N, 27 Ci] temporary

    @classmethod
    def default_for(cls, device: torch.device) -> ConvBackend:
        """Triton on CUDA, torch elsewhere (the Triton interpreter is far too slow for inference)."""
        return cls.TRITON if device.type == "cuda" else cls.TORCH


class SparseConv3d(nn.Module):
    """Submanifold (stride 1, output voxels = input voxels) 3x3x3 convolution.

    Parameters (official key layout): ``weight [Co, 3, 3, 3, Ci]`` with kernel axes
    (x, y, z) of the neighbour offset + 1, and ``bias [Co]``.

    Args:
        in_channels, out_channels: Ci, Co.
        kernel_size: must be 3 (accepted for signature compatibility).
        backend: a :class:`ConvBackend` (or its string); ``None`` picks per call from the
            input's device (Triton on CUDA, torch otherwise).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 backend: ConvBackend | str | None = None) -> None:
        super().__init__()
        if kernel_size != 3:
            raise ValueError("only 3x3x3 submanifold convolutions are supported")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.weight = nn.Parameter(torch.empty(out_channels, 3, 3, 3, in_channels))
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.backend = None if backend is None else ConvBackend(backend)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform init with bound 1/sqrt(fan_in), fan_in = 27 Ci (like ``nn.Conv3d``)."""
        bound = 1.0 / math.sqrt(max(1, KERNEL_VOLUME * self.in_channels))
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def set_backend(self, backend: ConvBackend | str | None) -> None:
        self.backend = None if backend is None else ConvBackend(backend)

    def forward(self, x: SparseTensor) -> SparseTensor:
        """``x.feats [N, Ci]`` -> ``[N, Co]`` on the same coords (cache shared)."""
        nbr = neighbor_map(x)  # [N, 27] int32, cached on x
        backend = self.backend or ConvBackend.default_for(x.feats.device)
        feats = x.feats.to(self.weight.dtype)
        if backend is ConvBackend.TRITON:
            out = self._triton(feats, nbr)
        elif backend is ConvBackend.IM2COL:
            out = subm_conv3d_im2col(feats, nbr, self.weight, self.bias)
        else:
            plan = x.cached(GATHER_PLAN_CACHE_KEY, lambda: gather_plan(nbr))  # shared by every conv here
            out = subm_conv3d_reference(feats, nbr, self.weight, self.bias,
                                        compute_dtype=_torch_compute_dtype(feats), plan=plan)
        return x.replace(out)

    def _triton(self, feats: torch.Tensor, nbr: torch.Tensor) -> torch.Tensor:
        # Triton is only needed here; the kernel is not an autocast op, so under autocast
        # the inputs are cast to the autocast dtype by hand (as autocast does for a GEMM).
        from kernels.sparse_conv.autograd import subm_conv3d_differentiable
        from kernels.sparse_conv.ops import subm_conv3d

        weight, bias = self.weight, self.bias
        device_type = feats.device.type
        if torch.is_autocast_enabled(device_type):
            low = torch.get_autocast_dtype(device_type)
            feats, weight = feats.to(low), weight.to(low)
        if torch.is_grad_enabled() and (feats.requires_grad or weight.requires_grad or bias.requires_grad):
            return subm_conv3d_differentiable(feats, nbr, weight, bias)
        return subm_conv3d(feats, nbr, weight, bias)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size=3, backend={self.backend}"


def _torch_compute_dtype(feats: torch.Tensor) -> torch.dtype | None:
    # Half GEMMs are slow or missing on CPU: accumulate in fp32 there (fp64 stays fp64, for
    # gradient references); keep the input precision on GPUs (cuBLAS accumulates half
    # products in fp32 already).
    return torch.promote_types(feats.dtype, torch.float32) if feats.device.type == "cpu" else None


def set_conv_backend(module: nn.Module, backend: ConvBackend | str | None) -> None:
    """Set the backend of every ``SparseConv3d`` inside ``module``."""
    for m in module.modules():
        if isinstance(m, SparseConv3d):
            m.set_backend(backend)
