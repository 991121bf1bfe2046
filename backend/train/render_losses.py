"""Rendered losses of the shape SC-VAE: decoded and ground-truth meshes seen from random views.

Per sample and step, ``views`` cameras are drawn (:func:`backend.render.loss_view_camera`, from
the global torch generator like every other random number of the objectives). Both meshes are
rendered into mask, depth and normal maps (:func:`backend.render.render_geometry_maps`) and
compared: L1 on each map, ``1 - SSIM`` and optionally LPIPS on the normal maps. The weights
combine as ``mask * L1(M) + depth * L1(D) + normal * (L1(N) + ssim * (1 - SSIM(N)) + lpips *
LPIPS(N))``.

The two meshes:

- predicted: the training variant of the dual-grid extraction
  (:func:`backend.ovoxel.flexible_dual_contour_fan`) from the decoder's offsets and split
  weights on the ground-truth voxels with the ground-truth intersection flags (teacher
  forcing). The topology is fixed by the data; positions are differentiable in the offsets
  and split weights, so the rendered losses reach both. The intersection logits are trained
  by their BCE only.
- ground truth: the O-Voxel's own mesh, extracted from the batch's dual vertices and flags
  (:func:`backend.ovoxel.flexible_dual_contour`, the normal-alignment split). It costs one
  contouring per sample on the training device and no extra file or data-loader work, and it
  is the surface the autoencoder can reproduce: the O-Voxel is all it sees.

Rendering runs in float32 (float64 if the decoder output is) outside autocast.

The texture SC-VAE's rendered terms (:class:`RenderedPbrLoss`) are at the end of this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from backend.ovoxel import CoordIndex, flexible_dual_contour, flexible_dual_contour_fan, sample_attributes
from backend.render import (
    Camera,
    GeometryMaps,
    interpolate,
    loss_view_camera,
    project,
    rasterize,
    render_geometry_maps,
)

from .image_losses import LpipsLoss, ssim


@dataclass(frozen=True)
class RenderLossWeights:
    """Weights and render settings (the ``trainer.args`` keys of the shape VAE, validated there)."""

    mask: float = 0.0
    depth: float = 0.0
    normal: float = 0.0
    ssim: float = 0.0
    lpips: float = 0.0
    views: int = 1
    resolution: int = 512

    @property
    def enabled(self) -> bool:
        return self.mask > 0 or self.depth > 0 or self.normal > 0


def loss_cameras(num: int) -> list[Camera]:
    """``num`` random loss views (directions uniform on the sphere) from the global torch generator."""
    directions = torch.randn(num, 3, dtype=torch.float64)
    draws = torch.rand(num, 2, dtype=torch.float64)
    return [loss_view_camera(d.numpy(), float(u[0]), float(u[1])) for d, u in zip(directions, draws)]


@torch.no_grad()
def ground_truth_mesh(batch: dict[str, Any], b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The O-Voxel mesh ``(vertices [V, 3] world units, faces [F, 3])`` of sample ``b`` of a batch.

    Extracted from the batch's ``coords``, ``vertices`` (dual-vertex offsets), ``intersected``
    flags and ``resolution`` with the normal-alignment split; no gradient.
    """
    rows = batch["coords"][:, 0] == b
    flags = batch["intersected"][rows] > 0.5
    coords = batch["coords"][rows, 1:]
    return flexible_dual_contour(coords, batch["vertices"][rows], flags, batch["resolution"])


def _full_precision(x: torch.Tensor) -> torch.Tensor:
    """float32, or float64 if it already is (gradient checks)."""
    return x if x.dtype == torch.float64 else x.float()


def _stack(maps: list[GeometryMaps]) -> dict[str, torch.Tensor]:
    """Per-view maps -> ``mask``/``depth`` ``[N, 1, H, W]`` and ``normal`` ``[N, 3, H, W]``."""
    return {
        "mask": torch.stack([m.mask for m in maps])[:, None],
        "depth": torch.stack([m.depth for m in maps])[:, None],
        "normal": torch.stack([m.normal for m in maps]).permute(0, 3, 1, 2),
    }


class RenderedShapeLoss:
    """The rendered terms for one teacher-forced micro-batch (see the module docstring)."""

    def __init__(self, weights: RenderLossWeights, lpips: LpipsLoss | None = None) -> None:
        if weights.lpips > 0 and lpips is None:
            raise ValueError("lambda_lpips > 0 needs an LPIPS network")
        self.weights = weights
        self.lpips = lpips

    def meshes(self, batch: dict[str, Any], offsets: torch.Tensor, split_weight: torch.Tensor, b: int):
        """(predicted, ground-truth) ``(vertices, faces)`` of sample ``b``; offsets row-aligned to coords."""
        rows = batch["coords"][:, 0] == b
        coords = batch["coords"][rows, 1:]
        flags = batch["intersected"][rows] > 0.5
        predicted = flexible_dual_contour_fan(coords, offsets[rows], flags, split_weight[rows],
                                              batch["resolution"])
        return predicted, ground_truth_mesh(batch, b)

    def __call__(self, batch: dict[str, Any], offsets: torch.Tensor, split_weight: torch.Tensor
                 ) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted sum of the rendered terms and their values for the log."""
        w = self.weights
        size = w.resolution
        device = offsets.device
        predicted, target = [], []
        with torch.autocast(device_type=device.type, enabled=False):
            offsets, split_weight = _full_precision(offsets), _full_precision(split_weight)
            for b in range(int(batch["batch_size"])):
                (pv, pf), (tv, tf) = self.meshes(batch, offsets, split_weight, b)
                for camera in loss_cameras(w.views):
                    predicted.append(render_geometry_maps(pv, pf, camera, size))
                    with torch.no_grad():
                        target.append(render_geometry_maps(tv.to(offsets.dtype), tf, camera, size))
            pred, gt = _stack(predicted), _stack(target)
            terms = {
                "render_mask": F.l1_loss(pred["mask"], gt["mask"]),
                "render_depth": F.l1_loss(pred["depth"], gt["depth"]),
                "render_normal": F.l1_loss(pred["normal"], gt["normal"]),
            }
            loss = w.mask * terms["render_mask"] + w.depth * terms["render_depth"]
            normal = terms["render_normal"]
            if w.ssim > 0:
                terms["render_normal_ssim"] = 1 - ssim(pred["normal"], gt["normal"])
                normal = normal + w.ssim * terms["render_normal_ssim"]
            if w.lpips > 0:
                terms["render_normal_lpips"] = self.lpips(pred["normal"], gt["normal"])
                normal = normal + w.lpips * terms["render_normal_lpips"]
            loss = loss + w.normal * normal
        return loss, {k: v.item() for k, v in terms.items()}


# --------------------------------------------------------------------------- texture SC-VAE
@dataclass(frozen=True)
class PbrRenderLossWeights:
    """Weights and render settings of the texture VAE (its ``trainer.args`` keys, validated there).

    ``render`` is the overall weight; ``ssim`` and ``lpips`` weigh ``1 - SSIM`` and LPIPS of each
    of the two images inside it.
    """

    render: float = 0.0
    ssim: float = 0.0
    lpips: float = 0.0
    views: int = 1
    resolution: int = 512

    @property
    def enabled(self) -> bool:
        return self.render > 0


@torch.no_grad()
def surface_points(vertices: torch.Tensor, faces: torch.Tensor, camera: Camera, size: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The visible surface seen by ``camera`` on a ``size x size`` image, one point per pixel centre.

    Returns the world positions [M, 3] (``vertices``' dtype) of the covered pixels and their flat
    pixel indices [M] (row-major). Near and far planes clip per pixel, as in the shape losses.
    """
    if faces.numel() == 0:
        return vertices.new_zeros(0, 3), torch.zeros(0, dtype=torch.long, device=vertices.device)
    faces = faces.long()
    to_clip = torch.as_tensor(camera.full_projection(), dtype=vertices.dtype, device=vertices.device)
    rast = rasterize(project(vertices, to_clip), faces, size, size, depth_range=(camera.near, camera.far))
    pixels = torch.nonzero(rast.mask.reshape(-1)).squeeze(1)
    return interpolate(vertices, faces, rast).reshape(-1, 3)[pixels], pixels


class RenderedPbrLoss:
    """Rendered terms of the texture SC-VAE: PBR images of the decoded and the true voxel attributes.

    Per sample, the ground-truth O-Voxel's mesh (:func:`ground_truth_mesh`, extracted from the
    batch's dual vertices and flags, so no extra files) is rasterized from ``views`` random
    loss cameras (:func:`loss_cameras`, the shape losses' camera rule; one draw per sample and
    view). At each covered pixel's surface point both attribute sets are looked up trilinearly
    from the voxel centres (:func:`backend.ovoxel.sample_attributes`, the lookup the pipeline
    uses to texture its meshes; a blend of up to eight voxels gives smooth images and sends
    each pixel's gradient to all of them, where a nearest-voxel lookup would give blocky images
    and let voxels between pixel centres go untrained):

    - target: the batch's ``attributes`` in [0, 1];
    - prediction: the decoder's output ``x`` (trained on ``attributes * 2 - 1``) as
      ``x * 0.5 + 0.5``, not clamped.

    Each view gives a base-colour image ``B`` (channels 0-2) and a material image ``A``
    (metallic, roughness, alpha), background 0, without antialiasing. The loss is
    ``render * (ssim * [(1 - SSIM(B^, B)) + (1 - SSIM(A^, A))] + lpips * [LPIPS(B^, B) + LPIPS(A^, A)])``.

    Difference from the reference recipe: there the target is the source mesh with its
    original (mip-mapped) textures and the prediction is coloured on that mesh; here both are
    coloured from voxels on the O-Voxel's own surface, so texture detail finer than a voxel is
    not part of the target. The loss compares what the autoencoder can represent, from data the
    training set already holds. The geometry is the ground truth's and carries no gradient; only
    the predicted attributes do.
    """

    def __init__(self, weights: PbrRenderLossWeights, lpips: LpipsLoss | None = None) -> None:
        if weights.lpips > 0 and lpips is None:
            raise ValueError("lambda_lpips > 0 needs an LPIPS network")
        self.weights = weights
        self.lpips = lpips

    def images(self, batch: dict[str, Any], predicted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(predicted, target) ``[views * B, 6, H, W]`` images; ``predicted`` is the decoder output
        ``[N, 6]`` row-aligned with ``batch["coords"]``. Cameras come from the global generator."""
        size, resolution = self.weights.resolution, batch["resolution"]
        predicted = _full_precision(predicted)
        target = batch["attributes"].to(predicted.dtype)
        channels = predicted.shape[1]
        pred_images, target_images = [], []
        for b in range(int(batch["batch_size"])):
            rows = batch["coords"][:, 0] == b
            coords = batch["coords"][rows, 1:]
            index = CoordIndex(coords, resolution)
            # One lookup for both sets: they share the points and the trilinear weights.
            both = torch.cat([predicted[rows] * 0.5 + 0.5, target[rows]], 1)
            vertices, faces = ground_truth_mesh(batch, b)
            for camera in loss_cameras(self.weights.views):
                points, pixels = surface_points(vertices.to(predicted.dtype), faces, camera, size)
                values = sample_attributes(coords, both, resolution, points, index=index)
                image = both.new_zeros(size * size, 2 * channels).index_put((pixels,), values)
                image = image.T.reshape(2 * channels, size, size)
                pred_images.append(image[:channels])
                target_images.append(image[channels:].detach())
        return torch.stack(pred_images), torch.stack(target_images)

    def __call__(self, batch: dict[str, Any], predicted: torch.Tensor
                 ) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted rendered terms and their (unweighted) values for the log."""
        w = self.weights
        with torch.autocast(device_type=predicted.device.type, enabled=False):
            pred, gt = self.images(batch, predicted)
            pairs = {"base_color": (pred[:, 0:3], gt[:, 0:3]), "material": (pred[:, 3:6], gt[:, 3:6])}
            terms: dict[str, torch.Tensor] = {}
            inner = pred.new_zeros(())
            for name, (p, t) in pairs.items():
                if w.ssim > 0:
                    terms[f"render_{name}_ssim"] = 1 - ssim(p, t)
                    inner = inner + w.ssim * terms[f"render_{name}_ssim"]
                if w.lpips > 0:
                    terms[f"render_{name}_lpips"] = self.lpips(p, t)
                    inner = inner + w.lpips * terms[f"render_{name}_lpips"]
            loss = w.render * inner
        return loss, {k: v.item() for k, v in terms.items()}
