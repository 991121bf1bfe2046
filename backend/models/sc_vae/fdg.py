"""Flexible-dual-grid (shape) SC-VAE: ``FlexiDualGridVaeEncoder`` / ``FlexiDualGridVaeDecoder``.

The decoder stops at the per-voxel dual-grid quantities (dual-vertex offsets, intersection flags,
quad split weights); turning them into a mesh is ``backend.ovoxel``'s job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from backend.models.dit_layers import norm_compute_dtype
from backend.sparse.spatial import S2CMap
from backend.sparse.tensor import SparseTensor

from .unet import SparseUnetVaeDecoder, SparseUnetVaeEncoder

FDG_CHANNELS = 7  # offset (3), intersection logits (3), split weight (1)


@dataclass
class FlexiDualGridOutput:
    """Decoded flexible dual grid of a batch, row-aligned on the fine voxels.

    Attributes:
        coords: ``[K, 4]`` int32 (b, x, y, z) fine voxels (the latent grid x 16; the grid a mesh is
            extracted on is the caller's argument, see ``backend.ovoxel.decode``).
        offsets: ``[K, 3]`` fp32 dual-vertex position relative to the voxel's min corner, in
            voxel units, in ``(-margin, 1 + margin)``.
        intersected: ``[K, 3]`` bool, whether the voxel's edge along x / y / z crosses the surface.
        split_weight: ``[K, 1]`` fp32 (> 0) quad split weight.
        batch_size: number of samples.
        intersection_logits: ``[K, 3]`` fp32 logits behind ``intersected`` (``> 0`` = crosses),
            differentiable, for the training loss; ``offsets`` and ``split_weight`` are
            differentiable too.
    """

    coords: torch.Tensor
    offsets: torch.Tensor
    intersected: torch.Tensor
    split_weight: torch.Tensor
    batch_size: int
    intersection_logits: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    def sample(self, i: int) -> FlexiDualGridOutput:
        """The rows of sample ``i`` (batch index kept as 0)."""
        rows = self.coords[:, 0] == i
        coords = self.coords[rows].clone()
        coords[:, 0] = 0
        logits = None if self.intersection_logits is None else self.intersection_logits[rows]
        return FlexiDualGridOutput(coords, self.offsets[rows], self.intersected[rows],
                                   self.split_weight[rows], 1, logits)


class FlexiDualGridVaeEncoder(SparseUnetVaeEncoder):
    """Shape encoder: input = dual vertices in ``[0, 1]^3`` and intersection flags (6 channels)."""

    def __init__(
        self,
        model_channels: Sequence[int],
        latent_channels: int,
        num_blocks: Sequence[int],
        block_type: Sequence[str],
        down_block_type: Sequence[str],
        block_args: Sequence[dict] | None = None,
        use_fp16: bool = False,
        **ignored,
    ) -> None:
        super().__init__(6, model_channels, latent_channels, num_blocks, block_type, down_block_type,
                         block_args, use_fp16, **ignored)

    def _input(self, vertices: SparseTensor, intersected: SparseTensor) -> SparseTensor:
        dtype = self.input_layer.weight.dtype
        feats = torch.cat([vertices.feats.to(dtype) - 0.5, intersected.feats.to(dtype) - 0.5], dim=1)  # [N,6]
        return vertices.replace(feats)

    def forward(self, vertices: SparseTensor, intersected: SparseTensor, return_maps: bool = False):
        """``vertices.feats [N, 3]`` in [0, 1] and ``intersected.feats [N, 3]`` (bool / 0-1) on the
        same coords -> latent (and the S2C maps, see :meth:`SparseUnetVaeEncoder.forward`)."""
        return super().forward(self._input(vertices, intersected), return_maps=return_maps)

    def encode_posterior(
        self, vertices: SparseTensor, intersected: SparseTensor
    ) -> tuple[SparseTensor, SparseTensor, list[S2CMap]]:
        """``(mean, logvar, maps)`` for the inputs of :meth:`forward`; see
        :meth:`SparseUnetVaeEncoder.encode_posterior`."""
        return super().encode_posterior(self._input(vertices, intersected))


class FlexiDualGridVaeDecoder(SparseUnetVaeDecoder):
    """Shape decoder: latent -> predicted subdivision -> per-voxel dual-grid quantities."""

    def __init__(
        self,
        model_channels: Sequence[int],
        latent_channels: int,
        num_blocks: Sequence[int],
        block_type: Sequence[str],
        up_block_type: Sequence[str],
        block_args: Sequence[dict] | None = None,
        voxel_margin: float = 0.5,
        use_fp16: bool = False,
        resolution: int | None = None,  # in the checkpoint config; extraction takes its grid as an argument
        **ignored,
    ) -> None:
        super().__init__(FDG_CHANNELS, model_channels, latent_channels, num_blocks, block_type, up_block_type,
                         block_args, use_fp16, pred_subdiv=True, **ignored)
        self.voxel_margin = voxel_margin

    def forward(
        self,
        x: SparseTensor,
        guide_subs: Sequence[SparseTensor | torch.Tensor] | None = None,
        return_subs: bool = False,
        *,
        s2c_maps: Sequence[S2CMap] | None = None,
    ):
        """Decode to a :class:`FlexiDualGridOutput` (and the subdivision logits if asked).

        For training, pass the encoder's maps as ``s2c_maps`` (teacher forcing): the output then
        lies on the encoded voxels in their order, and with ``return_subs`` the 4 ``to_subdiv``
        logits (coarse to fine, row-aligned to ``s2c_maps[l].parent_coords``) are still returned
        for the subdivision loss against ``s2c_maps[l].child_mask()``.
        """
        h, subs = super().forward(x, guide_subs, return_subs=True, s2c_maps=s2c_maps)
        out = self.postprocess(h)
        return (out, subs) if return_subs else out

    def postprocess(self, h: SparseTensor) -> FlexiDualGridOutput:
        """Raw ``[K, 7]`` decoder output -> offsets, intersection flags, split weights."""
        raw = h.feats.to(norm_compute_dtype(h.feats.dtype))  # [K, 7]
        m = self.voxel_margin
        return FlexiDualGridOutput(
            coords=h.coords,
            offsets=(1 + 2 * m) * torch.sigmoid(raw[:, 0:3]) - m,
            intersected=raw[:, 3:6] > 0,
            split_weight=F.softplus(raw[:, 6:7]),
            batch_size=h.batch_size,
            intersection_logits=raw[:, 3:6],
        )
