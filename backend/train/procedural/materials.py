"""Random glTF metallic-roughness materials of a few physical kinds (wood, metal, glass, ...).

A kind fixes the plausible ranges (hue family, metallic, roughness, patterns, alpha);
the generator draws the concrete values. Every material gets a small tileable base-colour
texture; some also get a metallic-roughness texture (G = roughness, B = metallic), in
which case the factors are 1 so the texture alone decides.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from backend.geometry import PbrMaterial

from .textures import colorize, pattern_field, value_noise

TEXTURE_SIZES = (64, 128)


@dataclass(frozen=True)
class MaterialKind:
    """Ranges a material of one kind is drawn from (hue/saturation/value in [0, 1])."""

    hue: tuple[float, float]
    saturation: tuple[float, float]
    value: tuple[float, float]
    metallic: tuple[float, float]
    roughness: tuple[float, float]
    patterns: tuple[str, ...]
    contrast: tuple[float, float] = (0.15, 0.45)  # how far the second pattern colour is from the first
    alpha: tuple[float, float] | None = None  # set: translucent (alpha_mode BLEND)
    roughness_texture_share: float = 0.3  # share that gets a metallic-roughness texture
    uv_density: tuple[int, int] = (2, 6)  # texture repeats per unit length (an integer, see primitives)


MATERIAL_KINDS: dict[str, MaterialKind] = {
    "wood": MaterialKind((0.05, 0.11), (0.35, 0.75), (0.25, 0.75), (0.0, 0.0), (0.45, 0.8), ("wood",),
                         contrast=(0.2, 0.45), uv_density=(1, 4)),
    "metal": MaterialKind((0.0, 1.0), (0.0, 0.12), (0.55, 0.95), (0.85, 1.0), (0.12, 0.5),
                          ("noise", "stripes"), contrast=(0.03, 0.12), roughness_texture_share=0.5),
    "brass": MaterialKind((0.09, 0.14), (0.45, 0.75), (0.7, 0.95), (0.9, 1.0), (0.15, 0.4), ("noise",),
                          contrast=(0.03, 0.1)),
    "plastic": MaterialKind((0.0, 1.0), (0.55, 0.95), (0.55, 0.95), (0.0, 0.0), (0.25, 0.6),
                            ("noise", "stripes", "checker", "dots", "gradient"), contrast=(0.1, 0.5)),
    "painted": MaterialKind((0.0, 1.0), (0.4, 0.9), (0.4, 0.9), (0.0, 0.3), (0.3, 0.6),
                            ("noise", "stripes", "checker", "dots"), contrast=(0.1, 0.4),
                            roughness_texture_share=0.5),
    "ceramic": MaterialKind((0.0, 1.0), (0.05, 0.6), (0.6, 0.98), (0.0, 0.0), (0.05, 0.25),
                            ("gradient", "stripes", "dots", "noise", "checker"), contrast=(0.15, 0.6)),
    "rubber": MaterialKind((0.0, 1.0), (0.0, 0.15), (0.08, 0.25), (0.0, 0.0), (0.8, 1.0), ("noise",),
                           contrast=(0.05, 0.15)),
    "fabric": MaterialKind((0.0, 1.0), (0.25, 0.8), (0.35, 0.9), (0.0, 0.0), (0.85, 1.0),
                           ("checker", "stripes", "noise", "dots"), contrast=(0.1, 0.4)),
    "glass": MaterialKind((0.0, 1.0), (0.0, 0.5), (0.75, 1.0), (0.0, 0.0), (0.0, 0.12), ("noise", "gradient"),
                          contrast=(0.02, 0.1), alpha=(0.2, 0.6), roughness_texture_share=0.0),
    "stone": MaterialKind((0.05, 0.15), (0.0, 0.25), (0.4, 0.8), (0.0, 0.0), (0.75, 1.0), ("noise", "tiles"),
                          contrast=(0.1, 0.3), uv_density=(2, 5)),
    "brick": MaterialKind((0.0, 0.06), (0.45, 0.75), (0.35, 0.7), (0.0, 0.0), (0.8, 1.0), ("bricks",),
                          contrast=(0.3, 0.6), uv_density=(1, 3)),
    "roof": MaterialKind((0.0, 1.0), (0.2, 0.7), (0.2, 0.6), (0.0, 0.1), (0.6, 0.95), ("tiles", "stripes"),
                         contrast=(0.2, 0.5), uv_density=(2, 5)),
}


def _hsv_to_srgb(h: float, s: float, v: float) -> np.ndarray:
    return np.asarray(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)))


@dataclass
class DrawnMaterial:
    """A material plus the integer tile density its UVs are scaled by."""

    material: PbrMaterial
    uv_density: int


def draw_material(kind_name: str, rng: np.random.Generator, name: str, *,
                  hue: float | None = None) -> DrawnMaterial:
    """A random material of kind ``kind_name`` (a key of :data:`MATERIAL_KINDS`).

    ``hue`` in [0, 1] replaces the drawn hue (e.g. bluish window glass).
    """
    kind = MATERIAL_KINDS[kind_name]
    size = int(rng.choice(TEXTURE_SIZES))
    h = rng.uniform(*kind.hue) if hue is None else hue
    s, v = rng.uniform(*kind.saturation), rng.uniform(*kind.value)
    base = _hsv_to_srgb(h, s, v)
    shift = rng.uniform(*kind.contrast) * rng.choice([-1.0, 1.0])
    # The second colour varies value (and a little hue), the way paint, wood or dirt varies.
    second = _hsv_to_srgb(h + rng.uniform(-0.06, 0.06), s * rng.uniform(0.7, 1.2), v + shift)
    if rng.random() < 0.25 and kind_name in ("plastic", "ceramic", "fabric", "painted"):
        second = _hsv_to_srgb(rng.random(), s, v)  # a contrasting two-colour pattern
    pattern = str(rng.choice(kind.patterns))
    texture = colorize(pattern_field(pattern, rng, size), base, second, rng)
    metallic = float(rng.uniform(*kind.metallic))
    roughness = float(rng.uniform(*kind.roughness))
    alpha = 1.0 if kind.alpha is None else float(rng.uniform(*kind.alpha))
    mr_texture = None
    if rng.random() < kind.roughness_texture_share:
        # Roughness wanders around the drawn value; metallic is either uniform or, for paint,
        # exposed metal where the noise is high (chipped paint).
        noise = value_noise(rng, size, int(rng.integers(3, 8)), 3)
        rough = np.clip(roughness + (noise - 0.5) * 0.4, 0.02, 1.0)
        metal = np.full_like(noise, metallic)
        if kind_name == "painted":
            metal = np.where(noise > 0.68, 1.0, 0.0)
            rough = np.where(noise > 0.68, 0.25, rough)
        mr_texture = np.zeros((size, size, 3), dtype=np.uint8)
        mr_texture[..., 1] = np.rint(rough * 255)
        mr_texture[..., 2] = np.rint(metal * 255)
        metallic, roughness = 1.0, 1.0
    material = PbrMaterial(
        name=name,
        base_color_factor=(1.0, 1.0, 1.0, alpha),
        metallic_factor=metallic,
        roughness_factor=roughness,
        base_color_texture=texture,
        metallic_roughness_texture=mr_texture,
        alpha_mode="OPAQUE" if kind.alpha is None else "BLEND",
        double_sided=kind.alpha is not None,
    )
    return DrawnMaterial(material, int(rng.integers(kind.uv_density[0], kind.uv_density[1] + 1)))
