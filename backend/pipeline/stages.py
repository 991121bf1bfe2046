"""The generation stages as functions of (models, conditions, generator): no pipeline object.

Mirrors ``trellis2/pipelines/trellis2_image_to_3d.py`` and the texturing
pipeline's encode/decode. Every stage takes its networks as
arguments; noise is drawn from the job's CPU ``torch.Generator`` (see
:mod:`backend.pipeline.sampler` for the order) and moved to the device.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from backend.sparse import SparseTensor

from .api import CancelToken
from .sampler import Condition, SamplerParams, StepCallback, cond_batch, cond_device, sample

log = logging.getLogger(__name__)

LR_RESOLUTION = 512  # the cascade's low-resolution pass
CASCADE_STEP = 128  # 1536 cascade: shrink the HR grid by this until the token cap holds


@dataclass(frozen=True)
class LatentNorm:
    """Per-channel latent statistics (``pipeline.json``'s ``*_normalization``)."""

    mean: torch.Tensor  # [1, C] float32
    std: torch.Tensor  # [1, C] float32

    @classmethod
    def from_lists(cls, mean: Sequence[float], std: Sequence[float]) -> LatentNorm:
        as_row = lambda v: torch.tensor(v, dtype=torch.float32)[None]  # noqa: E731  [1, C]
        return cls(as_row(mean), as_row(std))

    def normalize(self, x: SparseTensor) -> SparseTensor:
        m, s = self.mean.to(x.device), self.std.to(x.device)
        return x.replace((x.feats - m) / s)

    def denormalize(self, x: SparseTensor) -> SparseTensor:
        m, s = self.mean.to(x.device), self.std.to(x.device)
        return x.replace(x.feats * s + m)


def _noise(gen: torch.Generator, shape: tuple[int, ...], device: torch.device | str) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float32).to(device)


def sample_sparse_structure(flow: torch.nn.Module, decoder: torch.nn.Module, cond: Condition,
                            neg_cond: torch.Tensor, params: SamplerParams, gen: torch.Generator,
                            grid: int, *, on_step: StepCallback | None = None,
                            cancel: CancelToken | None = None) -> torch.Tensor:
    """Stage 1: occupied latent voxels ``[N, 4]`` int32 (b, x, y, z) on a ``grid``^3 grid (32 or 64).

    The decoder yields 64^3 occupancy logits; a coarser ``grid`` max-pools them (a cell is
    active when any child is). ``cond``'s batch is the number of samples.
    """
    device = cond_device(cond)
    b, r = cond_batch(cond), int(flow.resolution)
    noise = _noise(gen, (b, int(flow.in_channels), r, r, r), device)  # [B, 8, 16, 16, 16]
    z = sample(flow, noise, cond, neg_cond, params, on_step=on_step, cancel=cancel)
    return occupied_voxels(decoder, z, grid)


def occupied_voxels(decoder: torch.nn.Module, z: torch.Tensor, grid: int) -> torch.Tensor:
    """Stage 1's latent ``z [B, C, r, r, r]`` -> occupied voxels ``[N, 4]`` int32 on a ``grid``^3 grid."""
    occ = decoder(z) > 0  # [B, 1, 64, 64, 64]
    if occ.shape[-1] != grid:
        k = occ.shape[-1] // grid
        occ = F.max_pool3d(occ.float(), k, k) > 0.5  # [B, 1, grid, grid, grid]
    return torch.argwhere(occ[:, 0]).int()  # [N, 4] lexicographic


def sample_shape(flow: torch.nn.Module, coords: torch.Tensor, cond: Condition, neg_cond: torch.Tensor,
                 params: SamplerParams, gen: torch.Generator, norm: LatentNorm, *,
                 on_step: StepCallback | None = None, cancel: CancelToken | None = None) -> SparseTensor:
    """Stage 2 (one pass): the de-normalised shape latent on ``coords``."""
    noise = SparseTensor(coords, _noise(gen, (len(coords), int(flow.in_channels)), cond_device(cond)),
                         batch_size=cond_batch(cond))
    z = sample(flow, noise, cond, neg_cond, params, on_step=on_step, cancel=cancel)
    return norm.denormalize(z)


def cascade_resolution(coords_at: Callable[[int], torch.Tensor], target: int,
                       max_tokens: int) -> tuple[torch.Tensor, int]:
    """The cascade's grid rule: ``(coords_at(res), res)`` for the largest ``res`` that starts at
    ``target`` (1024 or 1536) and steps down by 128 until fewer than ``max_tokens`` voxels remain;
    1024 is always accepted. ``coords_at(res)`` gives the latent voxels ``[N, 4]`` of a mesh grid
    of ``res`` (latent grid ``res // 16``).
    """
    res = target
    while True:
        coords = coords_at(res)
        if len(coords) < max_tokens or res <= 1024:
            return coords, res
        log.info("cascade: %d tokens at %d exceed the cap %d; trying %d", len(coords), res, max_tokens,
                 res - CASCADE_STEP)
        res -= CASCADE_STEP


def cascade_coords(fine_coords: torch.Tensor, target: int, max_tokens: int) -> tuple[torch.Tensor, int]:
    """Requantise 512-res voxel coords onto the HR latent grid, sized by :func:`cascade_resolution`.

    Each fine voxel's centre on the 512 grid falls into one cell of the ``res // 16`` latent grid.
    Returns ``(coords [N, 4] int32 sorted, resolution)``.
    """
    def coords_at(res: int) -> torch.Tensor:
        q = fine_coords.clone().long()
        q[:, 1:] = torch.floor((q[:, 1:].double() + 0.5) / LR_RESOLUTION * (res // 16)).long()
        return torch.unique(q, dim=0).int()

    return cascade_resolution(coords_at, target, max_tokens)


def sample_texture(flow: torch.nn.Module, shape_slat: SparseTensor, cond: Condition,
                   neg_cond: torch.Tensor, params: SamplerParams, gen: torch.Generator,
                   shape_norm: LatentNorm, tex_norm: LatentNorm, *, on_step: StepCallback | None = None,
                   cancel: CancelToken | None = None) -> SparseTensor:
    """Stage 3: the de-normalised texture latent on the shape latent's voxels (same order).

    The shape latent keeps its coordinates *and cache* (e.g. the encoder's S2C maps).
    """
    s = shape_norm.normalize(shape_slat)
    c = int(flow.in_channels) - s.feats.shape[1]
    noise = s.replace(_noise(gen, (len(s), c), cond_device(cond)))
    z = sample(flow, noise, cond, neg_cond, params, on_step=on_step, cancel=cancel, concat_cond=s)
    return tex_norm.denormalize(z)


@dataclass
class DecodedAsset:
    """One sample's decoded shape (mesh in the unit cube, Z-up) and its PBR voxels."""

    vertices: np.ndarray  # [V, 3] float64
    faces: np.ndarray  # [F, 3] int64
    coords: torch.Tensor  # [K, 3] int64 fine voxels (on the decode device)
    attrs: torch.Tensor  # [K, 6] float32 in ~[0, 1]: base colour 3, metallic, roughness, alpha
    resolution: int

    def attribute_fn(self) -> Callable[[np.ndarray], np.ndarray]:
        """Points ``[M, 3]`` (unit cube) -> attributes ``[M, 6]`` by sparse trilinear lookup."""
        from backend.ovoxel.lookup import CoordIndex, sample_attributes

        index = CoordIndex(self.coords, self.resolution)

        def fn(points: np.ndarray) -> np.ndarray:
            out = []
            for s in range(0, len(points), 1 << 20):
                p = torch.from_numpy(np.ascontiguousarray(points[s:s + (1 << 20)], np.float32))
                p = p.to(self.attrs.device)
                out.append(sample_attributes(self.coords, self.attrs, self.resolution, p,
                                             index=index).cpu().numpy())
            return np.concatenate(out) if out else np.zeros((0, self.attrs.shape[1]), np.float32)

        return fn


def decode(shape_decoder: torch.nn.Module, tex_decoder: torch.nn.Module, shape_slat: SparseTensor,
           tex_slat: SparseTensor, resolution: int, fill_holes: float = 0.03) -> list[DecodedAsset]:
    """Decode both latents (texture guided by the shape decoder's subdivisions) -> one asset per sample."""
    from backend.geometry import TriangleMesh
    from backend.ovoxel.cleanup import fill_holes as fill
    from backend.ovoxel.decode import flexible_dual_contour

    fdg, subs = shape_decoder(shape_slat, return_subs=True)
    tex = tex_decoder(tex_slat, guide_subs=subs)
    attrs = tex.feats.float() * 0.5 + 0.5  # [K, 6]
    assets = []
    for b in range(fdg.batch_size):
        rows = fdg.coords[:, 0] == b
        coords = fdg.coords[rows, 1:].long()  # [K_b, 3]
        v, f = flexible_dual_contour(coords, fdg.offsets[rows], fdg.intersected[rows], resolution,
                                     split_weight=fdg.split_weight[rows])
        mesh = TriangleMesh(v.cpu().double().numpy(), f.cpu().numpy())
        if mesh.num_faces and fill_holes > 0:
            mesh = fill(mesh, fill_holes)
        tex_rows = tex.coords[:, 0] == b
        assets.append(DecodedAsset(mesh.vertices, mesh.faces, tex.coords[tex_rows, 1:].long(),
                                   attrs[tex_rows], resolution))
    return assets


def decode_texture_on(tex_decoder: torch.nn.Module, tex_slat: SparseTensor, s2c_maps) -> torch.Tensor:
    """Retexture decode: attributes ``[N, 6]`` in [0, 1]-ish on exactly the encoded voxels (input order)."""
    return tex_decoder(tex_slat, s2c_maps=s2c_maps).feats.float() * 0.5 + 0.5
