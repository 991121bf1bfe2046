"""A small torch triangle rasterizer (CPU or CUDA) and a textured-mesh renderer.

- :mod:`.cameras`: look-at pinhole cameras (OpenGL/Blender conventions, Z-up world) and the
  camera distributions used for condition renders.
- :mod:`.raster`: z-buffered rasterization with differentiable barycentrics and depth.
- :mod:`.mesh_render`: base-colour textures, PBR-ish shading, RGBA/mask/depth/normal maps.
- :mod:`.geometry_maps`: differentiable mask/depth/normal maps with silhouette antialiasing,
  for rendered training losses.
"""

from .cameras import (
    Camera,
    ViewSample,
    framing_fov,
    look_at,
    loss_view_camera,
    orbit_camera,
    sample_condition_views,
    sample_sphere_views,
)
from .geometry_maps import GeometryMaps, antialias_silhouettes, render_geometry_maps
from .mesh_render import Light, Lighting, RenderResult, random_condition_lighting, render_mesh, sample_texture
from .raster import Rasterization, barycentrics_at, interpolate, project, rasterize, visible_faces

__all__ = [
    "Camera", "ViewSample", "framing_fov", "look_at", "loss_view_camera", "orbit_camera",
    "sample_condition_views", "sample_sphere_views", "GeometryMaps", "antialias_silhouettes",
    "render_geometry_maps", "Light",
    "Lighting", "RenderResult", "random_condition_lighting", "render_mesh", "sample_texture",
    "Rasterization", "barycentrics_at", "interpolate", "project", "rasterize", "visible_faces",
]
