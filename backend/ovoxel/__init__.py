"""O-Voxel: textured mesh <-> sparse flexible dual grid + PBR attribute volume.

Public API:
    normalize_to_unit_cube(mesh) -> (mesh, Normalization)
    mesh_to_ovoxel(mesh, resolution, *, aabb, weights, attributes) -> OVoxel
    ovoxel_to_mesh(ov, *, device, drop_unreferenced, orient, fill_holes_perimeter) -> TriangleMesh
    flexible_dual_contour(coords, dual_vertices, intersected, resolution, ...) -> (verts, faces)  [torch]
    flexible_dual_contour_fan(coords, dual_vertices, intersected, split_weight, resolution) -> (verts, faces)
        [torch, differentiable: the training variant]
    sample_attributes(coords, attributes, resolution, points, ...)  [numpy or torch, any device]
    save_ovoxel(path, ov) / load_ovoxel(path)
"""

from .decode import flexible_dual_contour, flexible_dual_contour_fan, ovoxel_to_mesh
from .encode import DualGridWeights, mesh_to_ovoxel
from .io import load_ovoxel, save_ovoxel
from .lookup import CoordIndex, sample_attributes
from .normalize import Normalization, normalize_to_unit_cube
from .types import ATTR_LAYOUT, OVoxel, OVoxelError

__all__ = ["ATTR_LAYOUT", "CoordIndex", "DualGridWeights", "Normalization", "OVoxel", "OVoxelError",
           "flexible_dual_contour", "flexible_dual_contour_fan", "load_ovoxel", "mesh_to_ovoxel",
           "normalize_to_unit_cube", "ovoxel_to_mesh", "sample_attributes", "save_ovoxel"]
