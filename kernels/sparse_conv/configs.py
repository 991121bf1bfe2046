"""Autotune configurations for the sparse conv kernel, as data plus a prune filter."""

from __future__ import annotations

import triton

# (BLOCK_N, BLOCK_CO, BLOCK_K, num_warps, num_stages)
_CUDA_CONFIGS: tuple[tuple[int, int, int, int, int], ...] = (
    (128, 128, 64, 8, 3),
    (128, 128, 32, 4, 4),
    (128, 64, 64, 4, 3),
    (128, 64, 32, 4, 4),
    (64, 128, 64, 4, 3),
    (64, 128, 32, 4, 4),
    (64, 64, 64, 4, 3),
    (64, 64, 32, 4, 4),
    (64, 32, 32, 4, 4),
    (128, 32, 32, 4, 4),
    (64, 32, 16, 2, 4),
    (128, 16, 16, 4, 3),
    (64, 16, 16, 2, 3),
)

# One small config for the CPU interpreter (tests) and for callers that skip tuning.
INTERPRETER_CONFIG: dict[str, int] = {"BLOCK_N": 32, "BLOCK_CO": 16, "BLOCK_K": 16}
DEFAULT_CUDA_CONFIG: dict[str, int] = {"BLOCK_N": 64, "BLOCK_CO": 64, "BLOCK_K": 32,
                                       "num_warps": 4, "num_stages": 3}


def cuda_configs() -> list[triton.Config]:
    """Candidate configs for NVIDIA GPUs (sm80+)."""
    return [
        triton.Config({"BLOCK_N": bn, "BLOCK_CO": bco, "BLOCK_K": bk}, num_warps=w, num_stages=s)
        for bn, bco, bk, w, s in _CUDA_CONFIGS
    ]


def _pow2_at_least(n: int, lo: int) -> int:
    return max(lo, 1 << max(0, int(n) - 1).bit_length())


def prune_configs(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Drop tiles far larger than the problem (tiny Ci or Co) so tuning stays cheap."""
    ci, co = int(named_args["Ci"]), int(named_args["Co"])
    max_k = _pow2_at_least(ci, 16)
    max_co = _pow2_at_least(co, 16)
    kept = [c for c in configs if c.kwargs["BLOCK_K"] <= max_k and c.kwargs["BLOCK_CO"] <= max_co]
    return kept or configs[-1:]


def bucket_log2(n: int) -> int:
    """Autotune key for the voxel count: floor(log2 N), so nearby N share a tuned config."""
    return max(0, int(n).bit_length() - 1)
