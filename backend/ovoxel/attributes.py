"""The PBR attribute volume: per-voxel base colour, metallic, roughness, alpha.

Every (triangle, voxel) pair found by the crossing scan contributes: the voxel centre is
projected onto the triangle (barycentrics clamped to the triangle, so UVs are never
extrapolated past a chart), UV and vertex colour are interpolated, textures sampled
with mip filtering, and the voxel's value is the weighted mean over its pairs with
weight ``1 - d`` (d = signed distance of the centre from the plane, world units).

Colour handling: base colour texels are sRGB; factors and vertex colours are linear
(glTF). They are multiplied in linear space and the result is stored sRGB-encoded,
which equals the texel value whenever factor and vertex colour are 1 (the upstream
data path). Faces without material get 0.8 grey, metallic 0, roughness 0.5.
"""

from __future__ import annotations

import numpy as np

from backend.colorspace import linear_to_srgb, srgb_to_linear
from backend.geometry import PbrMaterial, TriangleMesh

from .texture import MipTexture
from .types import ATTR_CHANNELS

DEFAULT_MATERIAL = PbrMaterial(name="default", base_color_factor=(0.8, 0.8, 0.8, 1.0),
                               metallic_factor=0.0, roughness_factor=0.5)


def _project(gv: np.ndarray, tri: np.ndarray, centres: np.ndarray):
    """Clamped barycentrics [M, 3], signed plane distance [M] and twice the area [M] (grid units)."""
    p0, p1, p2 = gv[tri[:, 0]], gv[tri[:, 1]], gv[tri[:, 2]]
    e1, e2 = p1 - p0, p2 - p0
    n = np.cross(e1, e2)
    area2 = np.linalg.norm(n, axis=1)
    nu = n / np.maximum(area2, 1e-300)[:, None]
    d = np.einsum("ij,ij->i", centres - p0, nu)
    q = centres - d[:, None] * nu - p0
    d00, d01, d11 = (e1 * e1).sum(1), (e1 * e2).sum(1), (e2 * e2).sum(1)
    d20, d21 = (q * e1).sum(1), (q * e2).sum(1)
    den = np.maximum(d00 * d11 - d01 * d01, 1e-300)
    b1 = (d11 * d20 - d01 * d21) / den
    b2 = (d00 * d21 - d01 * d20) / den
    bary = np.stack([1 - b1 - b2, b1, b2], axis=1).clip(0, None)
    bary /= np.maximum(bary.sum(1, keepdims=True), 1e-300)
    return bary, d, area2


def _material_values(mat: PbrMaterial, uv: np.ndarray | None, level: np.ndarray,
                     vcol: np.ndarray | None, cache: dict) -> np.ndarray:
    """[M, 6] attributes of one material at the given sample points."""
    m = level.shape[0]
    rgba = np.ones((m, 4), dtype=np.float32)
    if mat.base_color_texture is not None and uv is not None:
        tex = cache.setdefault(id(mat.base_color_texture), MipTexture(mat.base_color_texture))
        s = tex.sample(uv, level + np.log2(tex.size))
        rgba[:, : s.shape[1]] = s[:, :4]
    lin = srgb_to_linear(rgba[:, :3]) * np.asarray(mat.base_color_factor[:3], dtype=np.float32)
    alpha = rgba[:, 3] * np.float32(mat.base_color_factor[3])
    if vcol is not None:
        lin = lin * vcol[:, :3]
        alpha = alpha * vcol[:, 3]
    metal = np.full(m, mat.metallic_factor, dtype=np.float32)
    rough = np.full(m, mat.roughness_factor, dtype=np.float32)
    if mat.metallic_roughness_texture is not None and uv is not None:
        tex = cache.setdefault(id(mat.metallic_roughness_texture), MipTexture(mat.metallic_roughness_texture))
        s = tex.sample(uv, level + np.log2(tex.size))
        rough = rough * s[:, 1]
        metal = metal * s[:, 2]
    if mat.alpha_mode == "OPAQUE":
        alpha = np.ones(m, dtype=np.float32)
    elif mat.alpha_mode == "MASK":
        alpha = (alpha >= mat.alpha_cutoff).astype(np.float32)
    out = np.empty((m, ATTR_CHANNELS), dtype=np.float32)
    out[:, 0:3] = linear_to_srgb(lin)
    out[:, 3] = metal
    out[:, 4] = rough
    out[:, 5] = alpha
    return out


def voxel_attributes(mesh: TriangleMesh, gv: np.ndarray, coords: np.ndarray, pairs: np.ndarray,
                     voxel_size: float) -> np.ndarray:
    """[N, 6] float32 attributes in [0, 1] for the voxels ``coords`` from (triangle, voxel) ``pairs``.

    Args:
        mesh: the source mesh (materials, UVs, vertex colours).
        gv: [V, 3] vertex positions in grid units (voxel size 1).
        coords: [N, 3] voxel coordinates.
        pairs: [P, 2] int32 (triangle index, voxel index) pairs.
        voxel_size: world size of one voxel (for the distance weight).
    """
    n = coords.shape[0]
    tri_id, vox_id = pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)
    faces = mesh.faces[tri_id]
    centres = coords[vox_id].astype(np.float64) + 0.5
    bary, d, area2 = _project(gv, faces, centres)
    weight = 1.0 - d * voxel_size  # d in world units
    uv = None
    level = np.zeros(len(pairs))
    if mesh.uvs is not None:
        tuv = mesh.uvs[faces]  # [P, 3, 2]
        uv = np.einsum("pk,pkc->pc", bary, tuv)
        e1, e2 = tuv[:, 1] - tuv[:, 0], tuv[:, 2] - tuv[:, 0]
        uv_area2 = np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])  # np.cross refuses 2-D in numpy 2.5
        # log2 of UV units per voxel edge (isotropic estimate from the area ratio); each texture
        # adds log2(its size), giving log2(texels per voxel) = the mip level.
        with np.errstate(divide="ignore", invalid="ignore"):
            level = np.log2(np.sqrt(uv_area2 / np.maximum(area2, 1e-300)))
    vcol = None
    if mesh.vertex_colors is not None:
        vcol = np.einsum("pk,pkc->pc", bary, mesh.vertex_colors[faces]).astype(np.float32)
    fmat = mesh.material_of_faces()[tri_id]
    values = np.zeros((len(pairs), ATTR_CHANNELS), dtype=np.float32)
    cache: dict = {}
    for k in np.unique(fmat):
        mat = DEFAULT_MATERIAL if k < 0 else mesh.materials[k]
        sel = fmat == k
        values[sel] = _material_values(mat, None if uv is None else uv[sel], level[sel],
                                       None if vcol is None else vcol[sel], cache)
    wsum = np.bincount(vox_id, weight, minlength=n)
    out = np.stack([np.bincount(vox_id, weight * values[:, c], minlength=n) for c in range(ATTR_CHANNELS)], 1)
    out /= np.where(wsum > 0, wsum, 1.0)[:, None]
    return np.clip(out, 0.0, 1.0).astype(np.float32)
