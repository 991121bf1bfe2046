"""Spatial <-> channel rearrangement (x2 down / x2 up) of sparse voxels.

Child index convention (x is the least significant bit)::

    s = x % 2 + 2 * (y % 2) + 4 * (z % 2),   child = 2 * parent + (s & 1, (s >> 1) & 1, (s >> 2) & 1)

* Spatial-to-channel (S2C): each voxel goes to parent ``(x//2, y//2, z//2)`` and its
  features land in channel block ``s`` of the parent (``[M, 8 C]``; absent children are
  zeros). Parents are the unique parents sorted lexicographically by (b, x, y, z).
* Channel-to-spatial (C2S): a parent's ``8 C'`` channels are split into 8 blocks, block
  ``s`` going to child ``s``. Which children exist comes from a boolean mask ``[M, 8]``
  (children emitted parent-major, ascending ``s``) or from the :class:`S2CMap` of the
  matching S2C (children emitted in that map's fine row order, i.e. exactly the voxels
  that were downsampled).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .neighbors import pack_keys
from .tensor import SparseTensor

S2C_CACHE_KEY = "s2c_map_x2"


@dataclass(frozen=True)
class S2CMap:
    """How a fine voxel set maps to its x2-coarser parents.

    Attributes:
        fine_coords: ``[N, 4]`` int32 fine voxels, in their row order.
        parent_coords: ``[M, 4]`` int32 parents, lexicographically sorted for S2C maps and in
            the coarse tensor's row order for maps built from a subdivision mask.
        parent_index: ``[N]`` int64 parent row of each fine voxel.
        child_index: ``[N]`` int64 child slot ``s`` in ``[0, 8)`` of each fine voxel.
    """

    fine_coords: torch.Tensor
    parent_coords: torch.Tensor
    parent_index: torch.Tensor
    child_index: torch.Tensor

    def __len__(self) -> int:
        return int(self.fine_coords.shape[0])

    def child_mask(self) -> torch.Tensor:
        """``[M, 8]`` bool: which children of each parent exist (row-aligned to ``parent_coords``).

        For an encoder's map this is the ground-truth subdivision target of the decoder level
        whose input voxels are ``parent_coords``.
        """
        mask = torch.zeros(self.parent_coords.shape[0], 8, dtype=torch.bool, device=self.parent_coords.device)
        mask[self.parent_index, self.child_index] = True
        return mask


def child_index(coords: torch.Tensor) -> torch.Tensor:
    """``[N, 4]`` (b, x, y, z) -> ``[N]`` int64 ``x%2 + 2 (y%2) + 4 (z%2)``."""
    c = coords.long()
    return (c[:, 1] & 1) | ((c[:, 2] & 1) << 1) | ((c[:, 3] & 1) << 2)


def child_offsets(s: torch.Tensor) -> torch.Tensor:
    """``[K]`` child slots -> ``[K, 3]`` int (dx, dy, dz) in {0, 1}."""
    s = s.long()
    return torch.stack([s & 1, (s >> 1) & 1, (s >> 2) & 1], dim=1)


def build_s2c_map(coords: torch.Tensor) -> S2CMap:
    """Parents of ``coords [N, 4]`` (sorted unique) and each voxel's (parent row, child slot)."""
    parents = coords.clone()
    parents[:, 1:] = torch.div(parents[:, 1:], 2, rounding_mode="floor")
    keys = pack_keys(parents)  # [N]
    uniq, inverse = torch.unique(keys, sorted=True, return_inverse=True)  # [M], [N]
    first = torch.full((uniq.shape[0],), coords.shape[0], dtype=torch.long, device=coords.device)
    first.scatter_reduce_(0, inverse, torch.arange(coords.shape[0], device=coords.device), "amin")
    return S2CMap(
        fine_coords=coords,
        parent_coords=parents[first].to(torch.int32),
        parent_index=inverse.long(),
        child_index=child_index(coords),
    )


def map_from_mask(parent_coords: torch.Tensor, mask: torch.Tensor) -> S2CMap:
    """Children selected by ``mask [M, 8]`` bool, emitted parent-major, ascending slot."""
    if mask.shape != (parent_coords.shape[0], 8):
        raise ValueError(f"subdivision mask must be [{parent_coords.shape[0]}, 8], got {tuple(mask.shape)}")
    flat = torch.nonzero(mask.reshape(-1)).squeeze(1)  # [K], row-major = parent-major
    parent = flat // 8  # [K]
    slot = flat % 8  # [K]
    fine = parent_coords[parent].clone()  # [K, 4]
    fine[:, 1:] = fine[:, 1:] * 2 + child_offsets(slot).to(fine.dtype)
    return S2CMap(fine_coords=fine.to(torch.int32), parent_coords=parent_coords,
                  parent_index=parent, child_index=slot)


def s2c_map(x: SparseTensor) -> S2CMap:
    """The cached S2C map of ``x``'s coordinates (shared by every tensor on these coords)."""
    return x.cached(S2C_CACHE_KEY, lambda: build_s2c_map(x.coords))


def spatial_to_channel(x: SparseTensor, mapping: S2CMap | None = None) -> SparseTensor:
    """x2 downsample: ``feats [N, C]`` -> parents ``[M, 8 C]`` (channel block s = child s)."""
    m = s2c_map(x) if mapping is None else mapping
    n_parent = m.parent_coords.shape[0]
    c = x.feats.shape[1]
    out = x.feats.new_zeros(n_parent, 8, c)  # [M, 8, C]
    out[m.parent_index, m.child_index] = x.feats
    return SparseTensor(m.parent_coords, out.reshape(n_parent, 8 * c), x.batch_size)


def channel_to_spatial(
    x: SparseTensor,
    mask: torch.Tensor | None = None,
    mapping: S2CMap | None = None,
) -> tuple[SparseTensor, S2CMap]:
    """x2 upsample: ``feats [M, 8 C']`` -> children ``[K, C']``.

    Exactly one of ``mask`` (``[M, 8]`` bool) and ``mapping`` (the S2C map that produced
    ``x``'s coordinates) must be given. Returns the fine tensor and the map used, so a second
    tensor on the same coords can be expanded identically.
    """
    if (mask is None) == (mapping is None):
        raise ValueError("channel_to_spatial needs exactly one of `mask` or `mapping`")
    if mapping is None:
        mapping = map_from_mask(x.coords, mask)
    elif mapping.parent_coords.shape != x.coords.shape or not torch.equal(mapping.parent_coords, x.coords):
        raise ValueError("the S2C map does not belong to these coordinates")
    n_parent, c8 = x.feats.shape
    if c8 % 8:
        raise ValueError(f"channel count {c8} is not divisible by 8")
    feats = x.feats.reshape(n_parent, 8, c8 // 8)[mapping.parent_index, mapping.child_index]  # [K, C']
    return SparseTensor(mapping.fine_coords, feats, x.batch_size), mapping
