"""Mesh export: decimation, UV unwrapping, UV-space baking, PBR textures, GLB and direct results."""

from .asset import export_generated, export_retextured
from .bake import SurfaceProjector, bake, dilate
from .raster import rasterize_uv

__all__ = ["SurfaceProjector", "bake", "dilate", "export_generated", "export_retextured", "rasterize_uv"]
