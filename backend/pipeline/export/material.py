"""Baked attribute maps -> glTF metallic-roughness material (the reference export's last step, plus alpha).

Attribute channel layout (the O-Voxel PBR volume): base colour 0:3 (sRGB),
metallic 3, roughness 4, alpha 5, all in [0, 1]. Unlike the reference (always
OPAQUE), the alpha mode follows the baked alpha map: OPAQUE when it is opaque
everywhere on the surface (alpha >= 250/255 on all but a negligible fraction
of covered texels; the alpha channel is then dropped), otherwise BLEND, or
MASK when asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.geometry import PbrMaterial

OPAQUE_LEVEL = 250  # uint8 alpha at or above this counts as opaque
OPAQUE_FRACTION = 5e-4  # this share of covered texels may fall below it and the map is still opaque


@dataclass(frozen=True)
class TextureSet:
    base_color: np.ndarray  # [H, W, 3|4] uint8 sRGB (+ alpha)
    metallic_roughness: np.ndarray  # [H, W, 3] uint8: R 0, G roughness, B metallic
    alpha_mode: str
    normal: np.ndarray | None = None  # [H, W, 3] uint8 tangent-space normals (see export/normal_map.py)


def to_u8(x: np.ndarray) -> np.ndarray:
    """``[0, 1]`` floats -> uint8 (rounded, clipped); the steps run in place on one temporary."""
    scaled = np.multiply(x, 255.0)
    np.rint(scaled, out=scaled)
    np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8)


def decide_alpha_mode(alpha_u8: np.ndarray, mask: np.ndarray, requested: str = "auto") -> str:
    """``"OPAQUE"`` if the covered alpha is (almost) all opaque, else ``requested`` or BLEND."""
    covered = alpha_u8[mask]
    transparent = float((covered < OPAQUE_LEVEL).mean()) if covered.size else 0.0
    if transparent <= OPAQUE_FRACTION:
        return "OPAQUE"
    return "BLEND" if requested in ("auto", "BLEND", "OPAQUE") else requested


def pack_textures(attrs: np.ndarray, mask: np.ndarray, alpha_mode: str = "auto") -> TextureSet:
    """``attrs [H, W, 6]`` float (filled everywhere), ``mask [H, W]`` covered texels -> textures."""
    if attrs.shape[-1] != 6:
        raise ValueError(f"expected 6 attribute channels, got {attrs.shape[-1]}")
    u8 = to_u8(attrs)  # [H, W, 6]
    mode = decide_alpha_mode(u8[..., 5], mask, alpha_mode)
    base = u8[..., :3] if mode == "OPAQUE" else u8[..., [0, 1, 2, 5]]
    mr = np.zeros((*u8.shape[:2], 3), np.uint8)
    mr[..., 1] = u8[..., 4]
    mr[..., 2] = u8[..., 3]
    return TextureSet(np.ascontiguousarray(base), mr, mode)


def material(tex: TextureSet, double_sided: bool, name: str = "trellis2") -> PbrMaterial:
    return PbrMaterial(name=name, base_color_factor=(1.0, 1.0, 1.0, 1.0), metallic_factor=1.0,
                       roughness_factor=1.0, base_color_texture=tex.base_color,
                       metallic_roughness_texture=tex.metallic_roughness, normal_texture=tex.normal,
                       alpha_mode=tex.alpha_mode, double_sided=double_sided)
