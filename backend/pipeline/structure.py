"""Where a generated object's voxels come from: stage 1's occupancy and the cascade's fine grid.

:class:`FlowStructure` is TRELLIS.2's own way: the sparse-structure flow and its decoder find the
occupied latent voxels, and in the cascades the shape decoder's subdivision of the low-resolution
shape latent gives the high-resolution voxels. A generator takes any :class:`StructureSampler`,
so a caller that knows the structure already (a benchmark with random weights, whose predicted
occupancy is noise) supplies it without the pipeline knowing.
"""

from __future__ import annotations

from typing import Protocol

import torch

from backend.sparse import SparseTensor

from .progress import Tracker
from .runtime import ModelStore
from .sampler import Condition, SamplerParams
from .stages import cascade_coords, sample_sparse_structure


class StructureSampler(Protocol):
    def occupancy(self, store: ModelStore, cond: Condition, neg_cond: torch.Tensor, params: SamplerParams,
                  gen: torch.Generator, grid: int, tracker: Tracker) -> torch.Tensor:
        """Occupied latent voxels ``[N, 4]`` int32 (b, x, y, z) on a ``grid``^3 grid, one batch
        index per sample (``cond``'s batch)."""
        ...

    def cascade(self, store: ModelStore, low_res_shape: SparseTensor, target: int,
                max_tokens: int) -> tuple[torch.Tensor, int]:
        """``(coords [N, 4] int32, resolution)`` of the cascade's high-resolution pass: ``target``
        (1024 or 1536), lowered as :func:`.stages.cascade_resolution` says."""
        ...


class FlowStructure:
    """The structure as the release's networks predict it."""

    def occupancy(self, store: ModelStore, cond: Condition, neg_cond: torch.Tensor, params: SamplerParams,
                  gen: torch.Generator, grid: int, tracker: Tracker) -> torch.Tensor:
        flow, decoder = store.get("sparse_structure_flow_model"), store.get("sparse_structure_decoder")
        with store.on_device(flow, decoder):
            return sample_sparse_structure(flow, decoder, cond, neg_cond, params, gen, grid,
                                           on_step=tracker.sub("sparse structure"), cancel=tracker.cancel)

    def cascade(self, store: ModelStore, low_res_shape: SparseTensor, target: int,
                max_tokens: int) -> tuple[torch.Tensor, int]:
        decoder = store.get("shape_slat_decoder")
        with store.on_device(decoder):
            fine = decoder.upsample(low_res_shape, 4)  # [K, 4] on the 512 grid
        return cascade_coords(fine, target, max_tokens)
