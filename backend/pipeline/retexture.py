"""Retexture an existing mesh from an image, keeping its topology, UVs and placement.

The mesh is taken to the working frame only to be voxelized: rotated from its
file's up axis to Z-up and normalised into the unit cube. Its O-Voxel goes
through the shape encoder; the encoder's four S2C maps are handed to the
texture decoder explicitly, so the decoded PBR voxels are exactly the encoded
ones. Baking then samples them at the mesh's own surface (through the same
transform), onto its own UVs; nothing about the mesh itself is changed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image

from backend.geometry import TriangleMesh
from backend.geometry.axes import to_z_up_matrix
from backend.sparse import SparseTensor

from .api import RetextureRequest
from .errors import InputError
from .image_to_3d import norms, sampler_params
from .progress import Tracker
from .runtime import ModelStore
from .sampler import DEFAULT_TEX
from .stages import DecodedAsset, decode_texture_on, sample_texture

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class WorkFrame:
    """File frame -> working frame: ``p_work = (R p - center) * scale``."""

    rotation: np.ndarray  # [3, 3]
    center: np.ndarray  # [3]
    scale: float

    def apply(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, np.float64) @ self.rotation.T - self.center) * self.scale


def work_frame(mesh: TriangleMesh, up_axis: str = "y") -> WorkFrame:
    """The transform that puts ``mesh`` Z-up into [-0.5, 0.5]^3 (bbox centre, 0.99999 / max extent)."""
    from backend.ovoxel.normalize import UNIT_CUBE_FILL

    rot = to_z_up_matrix(up_axis)
    used = np.asarray(mesh.vertices, np.float64)[np.unique(mesh.faces)] @ rot.T
    lo, hi = used.min(0), used.max(0)
    extent = float((hi - lo).max())
    if not extent > 0:
        raise InputError("the mesh has zero extent (all vertices coincide)")
    return WorkFrame(rot, (lo + hi) / 2, UNIT_CUBE_FILL / extent)


def check_resolution(resolution: int) -> int:
    if resolution % 16 or not 64 <= resolution <= 1536:
        raise InputError(f"retexture resolution must be a multiple of 16 in [64, 1536], got {resolution}",
                         "use 512, 1024 or 1536")
    return resolution


def retexture_voxels(store: ModelStore, image: Image.Image, mesh: TriangleMesh, frame: WorkFrame,
                     request: RetextureRequest, gen: torch.Generator, tracker: Tracker) -> DecodedAsset:
    """Encode the mesh, sample a texture latent, decode PBR voxels on the mesh's own voxels."""
    from backend.ovoxel.encode import ENCODE_STEPS, mesh_to_ovoxel

    res = check_resolution(request.resolution)
    config = store.tex_config or store.config
    shape_norm, tex_norm = norms(config)
    params = sampler_params(config.tex_slat_sampler, DEFAULT_TEX, request.texture, store.runtime)

    tracker.begin("preprocess", "conditioning")
    dino = store.conditioner()
    with store.on_device(dino.model):
        cond, neg = dino.condition([image], 512 if res == 512 else 1024)

    tracker.begin("shape", "voxelizing and encoding the mesh")
    work = replace(mesh, vertices=frame.apply(mesh.vertices), normals=None, uvs=None, materials=[],
                   face_materials=None, vertex_colors=None)
    steps = len(ENCODE_STEPS) + 1  # the O-Voxel encode's parts, then the shape encoder
    ov = mesh_to_ovoxel(work, res, attributes=False,
                        on_step=lambda i, words: tracker.step(i, steps, words))
    tracker.step(len(ENCODE_STEPS), steps, "encoding the voxels")
    device = cond.device
    coords = torch.cat([torch.zeros(ov.num_voxels, 1, dtype=torch.int32),
                        torch.from_numpy(ov.coords).int()], 1).to(device)  # [N, 4]
    verts = SparseTensor(coords, torch.from_numpy(ov.dual_vertices).float().to(device))
    inter = verts.replace(torch.from_numpy(ov.intersected).float().to(device))
    encoder = store.get("shape_slat_encoder")
    with store.on_device(encoder):
        shape_slat, maps = encoder(verts, inter, return_maps=True)
    log.info("retexture: %d voxels at %d -> %d latent tokens", ov.num_voxels, res, len(shape_slat))

    tracker.begin("texture")
    flow = store.get("tex_slat_flow_model_512" if res == 512 else "tex_slat_flow_model_1024")
    with store.on_device(flow):
        tex = sample_texture(flow, shape_slat, cond, neg, params, gen, shape_norm, tex_norm,
                             on_step=tracker.sub("texture"), cancel=tracker.cancel)

    tracker.begin("decode")
    decoder = store.get("tex_slat_decoder")
    with store.on_device(decoder):
        attrs = decode_texture_on(decoder, tex, maps)  # [N, 6], rows = ov.coords
    return DecodedAsset(work.vertices, work.faces, coords[:, 1:].long(), attrs, res)
