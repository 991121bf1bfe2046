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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from backend.ovoxel import flexible_dual_contour, flexible_dual_contour_fan
from backend.render import Camera, GeometryMaps, loss_view_camera, render_geometry_maps

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
        resolution = batch["resolution"]
        predicted = flexible_dual_contour_fan(coords, offsets[rows], flags, split_weight[rows], resolution)
        with torch.no_grad():
            target = flexible_dual_contour(coords, batch["vertices"][rows], flags, resolution)
        return predicted, target

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
