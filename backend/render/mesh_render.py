"""Render a textured :class:`TriangleMesh` with simple PBR-ish shading.

Shading, in linear colour: ``ambient + sum over lights of Lambert`` on the diffuse colour
``base * (1 - metallic)``, plus a Blinn-Phong highlight whose colour is
``mix(0.04, base, metallic)`` and whose exponent grows as roughness falls. The result is
converted to sRGB. Base colour = texture (sRGB -> linear) x ``base_color_factor`` x vertex
colour; metallic/roughness = texture B/G x factors; faces without a material get a 0.8 grey,
non-metallic, roughness 0.5 default.

Alpha: OPAQUE -> 1; MASK -> 1 where ``alpha >= alpha_cutoff`` else 0; BLEND -> the material
alpha as a partially transparent pixel (not composited over surfaces behind it). Background
pixels are fully transparent (RGBA 0). Normals face the camera (meshes are treated as
double-sided).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from backend.colorspace import linear_to_srgb, srgb_to_linear
from backend.geometry import TriangleMesh

from .cameras import Camera
from .raster import Rasterization, project, rasterize

DEFAULT_BASE_COLOR = (0.8, 0.8, 0.8)
DEFAULT_METALLIC = 0.0
DEFAULT_ROUGHNESS = 0.5
DIELECTRIC_SPECULAR = 0.04


@dataclass(frozen=True)
class Light:
    """A directional light (``position`` None, shining along ``-direction``) or a point light.

    Attributes:
        direction: for directional lights, the unit-free direction *towards* the light.
        position: for point lights, the world position; irradiance falls off with the squared
            distance, normalised so that ``intensity`` is the value at the origin.
        color: linear RGB.
        intensity: scale of ``color``.
    """

    direction: tuple[float, float, float] = (0.3, -0.4, 0.85)
    position: tuple[float, float, float] | None = None
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    intensity: float = 1.0


@dataclass(frozen=True)
class Lighting:
    """Ambient (white world light) plus a few lights."""

    ambient: float = 0.35
    lights: tuple[Light, ...] = field(default_factory=lambda: (Light(),))


@dataclass
class RenderResult:
    """Float images of one view (``H x W``), on the render device.

    Attributes:
        rgba: [H, W, 4] float in [0, 1], straight (not premultiplied) sRGB colour + alpha.
        mask: [H, W] bool coverage (before material alpha).
        depth: [H, W] camera-space depth, 0 on background.
        normal: [H, W, 3] unit world-space normals facing the camera, 0 on background.
        rast: the raw rasterization (face ids, barycentrics).
    """

    rgba: torch.Tensor
    mask: torch.Tensor
    depth: torch.Tensor
    normal: torch.Tensor
    rast: Rasterization

    def rgba_uint8(self) -> np.ndarray:
        """[H, W, 4] uint8 RGBA (background 0) for writing a PNG."""
        return (self.rgba.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()


def sample_texture(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear, wrap-around (REPEAT) lookup of ``texture [h, w, C]`` at glTF ``uv [M, 2]`` -> [M, C].

    Texel centres sit at ``(j + 0.5) / w, (i + 0.5) / h`` with row 0 at the top (v = 0).
    """
    h, w = texture.shape[:2]
    x = uv[:, 0] * w - 0.5
    y = uv[:, 1] * h - 0.5
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = x0.long(), y0.long()
    xs0, xs1 = x0 % w, (x0 + 1) % w
    ys0, ys1 = y0 % h, (y0 + 1) % h
    top = texture[ys0, xs0] * (1 - fx) + texture[ys0, xs1] * fx
    bottom = texture[ys1, xs0] * (1 - fx) + texture[ys1, xs1] * fx
    return top * (1 - fy) + bottom * fy


def _texture_tensor(tex: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(tex)).to(device=device, dtype=torch.float32) / 255.0


def _interpolate_at(attributes: torch.Tensor, faces: torch.Tensor, pix_face: torch.Tensor,
                    pix_bary: torch.Tensor) -> torch.Tensor:
    """Per-vertex ``attributes [V, C]`` at M covered pixels (their faces [M], barycentrics [M, 3])."""
    return (attributes[faces[pix_face]] * pix_bary[..., None].to(attributes.dtype)).sum(1)


def _surface_properties(mesh: TriangleMesh, faces: torch.Tensor, pix_face: torch.Tensor,
                        pix_bary: torch.Tensor, device: torch.device):
    """Per covered pixel: linear base colour [M, 3], alpha [M], metallic [M], roughness [M]."""
    m = len(pix_face)
    base = torch.tensor(DEFAULT_BASE_COLOR, device=device).expand(m, 3).clone()
    alpha = torch.ones(m, device=device)
    metallic = torch.full((m,), DEFAULT_METALLIC, device=device)
    roughness = torch.full((m,), DEFAULT_ROUGHNESS, device=device)
    uv = None
    if mesh.uvs is not None:
        uvs = torch.as_tensor(np.asarray(mesh.uvs), dtype=torch.float32, device=device)
        uv = _interpolate_at(uvs, faces, pix_face, pix_bary)  # [M, 2]
    face_material = torch.as_tensor(mesh.material_of_faces(), device=device)[pix_face]
    for index, mat in enumerate(mesh.materials):
        sel = face_material == index
        if not bool(sel.any()):
            continue
        factor = torch.tensor(mat.base_color_factor, dtype=torch.float32, device=device)
        color = factor.expand(int(sel.sum()), 4).clone()
        met = torch.full((int(sel.sum()),), float(mat.metallic_factor), device=device)
        rough = torch.full_like(met, float(mat.roughness_factor))
        if uv is not None and mat.base_color_texture is not None:
            texel = sample_texture(_texture_tensor(mat.base_color_texture, device), uv[sel])
            color[:, :3] *= srgb_to_linear(texel[:, :3])
            if texel.shape[1] == 4:
                color[:, 3] *= texel[:, 3]
        if uv is not None and mat.metallic_roughness_texture is not None:
            texel = sample_texture(_texture_tensor(mat.metallic_roughness_texture, device), uv[sel])
            met = met * texel[:, 2]
            rough = rough * texel[:, 1]
        a = color[:, 3]
        if mat.alpha_mode == "OPAQUE":
            a = torch.ones_like(a)
        elif mat.alpha_mode == "MASK":
            a = (a >= mat.alpha_cutoff).float()
        base[sel], alpha[sel], metallic[sel], roughness[sel] = color[:, :3], a, met, rough
    if mesh.vertex_colors is not None:
        vc = torch.as_tensor(np.asarray(mesh.vertex_colors), dtype=torch.float32, device=device)
        vc_pix = _interpolate_at(vc, faces, pix_face, pix_bary)
        base = base * vc_pix[:, :3]
        alpha = alpha * vc_pix[:, 3]
    return base.clamp(0, 1), alpha.clamp(0, 1), metallic.clamp(0, 1), roughness.clamp(0.02, 1)


def _shade(base, metallic, roughness, normal, position, view_dir, lighting: Lighting) -> torch.Tensor:
    """Linear RGB [M, 3] for unit normals/view directions [M, 3] at world positions [M, 3]."""
    diffuse_color = base * (1 - metallic[:, None])
    spec_color = DIELECTRIC_SPECULAR * (1 - metallic[:, None]) + base * metallic[:, None]
    # Blinn-Phong exponent from roughness (the usual 2 / alpha^2 - 2 mapping), energy-normalised.
    shininess = (2.0 / roughness.pow(4) - 2.0).clamp(1.0, 4096.0)[:, None]
    spec_norm = (shininess + 8.0) / (8.0 * math.pi)
    color = lighting.ambient * (diffuse_color + spec_color * 0.5)
    for light in lighting.lights:
        light_rgb = torch.tensor(light.color, dtype=base.dtype, device=base.device) * light.intensity
        if light.position is None:
            to_light = torch.tensor(light.direction, dtype=base.dtype, device=base.device)
            to_light = (to_light / to_light.norm()).expand_as(normal)
            irradiance = light_rgb.expand_as(normal)
        else:
            lp = torch.tensor(light.position, dtype=base.dtype, device=base.device)
            offset = lp - position
            dist2 = (offset * offset).sum(-1, keepdim=True).clamp_min(1e-8)
            to_light = offset / dist2.sqrt()
            irradiance = light_rgb * (lp.dot(lp) / dist2)
        n_dot_l = (normal * to_light).sum(-1, keepdim=True).clamp_min(0)
        half = to_light + view_dir
        half = half / half.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        n_dot_h = (normal * half).sum(-1, keepdim=True).clamp_min(0)
        specular = spec_color * spec_norm * n_dot_h.pow(shininess) * (n_dot_l > 0)
        color = color + irradiance * (diffuse_color * n_dot_l + specular * n_dot_l)
    return color


def render_mesh(mesh: TriangleMesh, camera: Camera, size: int | tuple[int, int],
                lighting: Lighting | None = None, device: str | torch.device = "cpu",
                vertices: torch.Tensor | None = None) -> RenderResult:
    """Render ``mesh`` seen by ``camera`` into a ``size`` (square, or ``(height, width)``) image.

    Args:
        mesh: triangles in world space (Z-up); materials, UVs and vertex colours are used.
        camera: the view; its ``aspect`` should match ``width / height``.
        size: image size.
        lighting: ambient + lights (default: ambient 0.35 and one directional light).
        device: torch device for rasterization and shading.
        vertices: optional [V, 3] float tensor replacing ``mesh.vertices`` (e.g. with
            ``requires_grad`` so depth/normal maps carry gradients to the positions).
    """
    height, width = (size, size) if isinstance(size, int) else size
    device = torch.device(device)
    lighting = lighting or Lighting()
    faces = torch.as_tensor(np.asarray(mesh.faces), dtype=torch.int64, device=device)
    verts = vertices if vertices is not None else torch.as_tensor(
        np.asarray(mesh.vertices), dtype=torch.float32, device=device)
    world_to_clip = torch.as_tensor(camera.full_projection(), dtype=verts.dtype, device=device)
    rast = rasterize(project(verts, world_to_clip), faces, height, width)
    mask = rast.mask
    # Shading works on the covered pixels only (a list of M), then scatters into the images.
    pix = torch.nonzero(rast.face_id.reshape(-1) >= 0).squeeze(1)
    pix_face = rast.face_id.reshape(-1)[pix]
    pix_bary = rast.bary.reshape(-1, 3)[pix]

    eye = torch.as_tensor(camera.position, dtype=verts.dtype, device=device)
    position = _interpolate_at(verts, faces, pix_face, pix_bary)  # [M, 3]
    if mesh.normals is not None and vertices is None:
        vn = torch.as_tensor(np.asarray(mesh.normals), dtype=verts.dtype, device=device)
        normal = _interpolate_at(vn, faces, pix_face, pix_bary)
    else:  # flat normals from the (possibly differentiable) positions
        tri = verts[faces]
        normal = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=1)[pix_face]
    normal = normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    view_dir = eye - position
    view_dir = view_dir / view_dir.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    normal = torch.where((normal * view_dir).sum(-1, keepdim=True) < 0, -normal, normal)
    normal_img = normal.new_zeros(height * width, 3).index_put((pix,), normal).view(height, width, 3)

    rgba = torch.zeros(height * width, 4, device=device)
    if len(pix):
        base, alpha, metallic, roughness = _surface_properties(mesh, faces, pix_face, pix_bary, device)
        lin = _shade(base, metallic, roughness, normal.detach().float(), position.detach().float(),
                     view_dir.detach().float(), lighting)
        rgba[pix] = torch.cat([linear_to_srgb(lin), alpha[:, None]], -1)
    return RenderResult(rgba.view(height, width, 4), mask, rast.depth, normal_img, rast)


def random_condition_lighting(rng: np.random.Generator) -> Lighting:
    """1-3 random white-ish point lights biased upward plus a white ambient term.

    Each light sits at distance ``1 / U(1/100, 1/10)`` (10 to 100 units) in a random direction
    whose elevation is drawn from [-0.3, 1] in sine (so most lights shine from above).
    """
    count = int(rng.integers(1, 4))
    lights = []
    for _ in range(count):
        z = rng.uniform(-0.3, 1.0)
        yaw = rng.uniform(0, 2 * math.pi)
        r_xy = math.sqrt(max(0.0, 1 - z * z))
        distance = 1.0 / rng.uniform(1 / 100, 1 / 10)
        position = (distance * r_xy * math.cos(yaw), distance * r_xy * math.sin(yaw), distance * z)
        tint = 1.0 - 0.15 * rng.random(3)
        lights.append(Light(position=position, color=tuple(float(t) for t in tint),
                            intensity=float(rng.uniform(0.7, 1.3)) / math.sqrt(count)))
    return Lighting(ambient=float(rng.uniform(0.25, 0.45)), lights=tuple(lights))
