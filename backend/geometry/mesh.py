"""Plain-numpy triangle meshes with glTF metallic-roughness materials.

Conventions (shared by readers, writers, voxelizers and bakers):

- Positions are in the file's own frame; readers do not change axes. The
  pipeline's working frame is Z-up in the unit cube [-0.5, 0.5]^3; glTF files
  are Y-up, and the conversion happens explicitly where it is needed.
- ``uvs`` follow glTF: (0, 0) is the top-left corner of the texture image, so
  texel row = v * height.
- Textures are uint8 arrays ``[H, W, C]`` with row 0 at the top. Base color is
  sRGB RGBA; the metallic-roughness texture follows glTF (G = roughness,
  B = metallic, R unused).
- Vertex colors are linear RGBA floats in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ALPHA_MODES = ("OPAQUE", "MASK", "BLEND")


class MeshError(ValueError):
    """A mesh that cannot be processed; the message says what is wrong."""


@dataclass
class PbrMaterial:
    """A glTF 2.0 metallic-roughness material (textures already decoded)."""

    name: str = "material"
    base_color_factor: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    metallic_factor: float = 1.0
    roughness_factor: float = 1.0
    base_color_texture: np.ndarray | None = None  # [H, W, 3|4] uint8, sRGB
    metallic_roughness_texture: np.ndarray | None = None  # [H, W, 3|4] uint8, G=rough, B=metal
    normal_texture: np.ndarray | None = None  # [H, W, 3] uint8, tangent space, rgb = xyz * 0.5 + 0.5
    alpha_mode: str = "OPAQUE"
    alpha_cutoff: float = 0.5
    double_sided: bool = False

    def __post_init__(self) -> None:
        if self.alpha_mode not in ALPHA_MODES:
            raise MeshError(f"alpha_mode must be one of {ALPHA_MODES}, got {self.alpha_mode!r}")
        for label, tex in (
            ("base_color_texture", self.base_color_texture),
            ("metallic_roughness_texture", self.metallic_roughness_texture),
            ("normal_texture", self.normal_texture),
        ):
            if tex is not None and (tex.dtype != np.uint8 or tex.ndim != 3 or tex.shape[2] not in (3, 4)):
                raise MeshError(f"{label} must be a uint8 [H, W, 3|4] array, got {tex.dtype} {tex.shape}")


def _finite_where_used(arr: np.ndarray, faces: np.ndarray) -> bool:
    """True when every row of ``arr`` (per vertex) that ``faces`` reference is finite.

    Rows no face uses may hold anything. The whole array is checked first (one pass; no sort
    of the face indices unless some value is not finite: at a million faces, the ``np.unique``
    this replaced was most of a GLB write's own time).
    """
    if np.isfinite(arr).all():
        return True
    used = np.zeros(len(arr), dtype=bool)
    used[faces.reshape(-1)] = True
    return bool(np.isfinite(arr[used]).all())


@dataclass
class TriangleMesh:
    """Triangles with optional per-vertex UVs, normals, colors and per-face materials."""

    vertices: np.ndarray  # [V, 3] float
    faces: np.ndarray  # [F, 3] integer vertex indices
    uvs: np.ndarray | None = None  # [V, 2] float, glTF convention
    normals: np.ndarray | None = None  # [V, 3] float
    tangents: np.ndarray | None = None  # [V, 4] float: glTF TANGENT, xyz unit, w = +-1 (bitangent sign)
    vertex_colors: np.ndarray | None = None  # [V, 4] float, linear, in [0, 1]
    materials: list[PbrMaterial] = field(default_factory=list)
    face_materials: np.ndarray | None = None  # [F] int index into materials

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    def material_of_faces(self) -> np.ndarray:
        """Material index per face ([F] int64); -1 where the mesh has no material."""
        if self.face_materials is not None:
            return self.face_materials.astype(np.int64)
        fill = 0 if self.materials else -1
        return np.full(self.num_faces, fill, dtype=np.int64)

    def validate(self) -> TriangleMesh:
        """Raise :class:`MeshError` with a specific reason if the mesh is unusable."""
        v, f = self.vertices, self.faces
        if v.ndim != 2 or v.shape[1] != 3:
            raise MeshError(f"vertices must have shape [V, 3], got {v.shape}")
        if f.ndim != 2 or f.shape[1] != 3:
            raise MeshError(f"faces must have shape [F, 3], got {f.shape}")
        if f.shape[0] == 0:
            raise MeshError("the mesh has no faces")
        if not np.issubdtype(f.dtype, np.integer):
            raise MeshError(f"faces must be integers, got {f.dtype}")
        if f.min() < 0 or f.max() >= v.shape[0]:
            raise MeshError(
                f"face indices must lie in [0, {v.shape[0] - 1}], found [{int(f.min())}, {int(f.max())}]"
            )
        if not _finite_where_used(v, f):
            raise MeshError("the mesh has NaN or infinite vertex coordinates")
        for label, arr, width in (("uvs", self.uvs, 2), ("normals", self.normals, 3),
                                  ("tangents", self.tangents, 4), ("vertex_colors", self.vertex_colors, 4)):
            if arr is not None and arr.shape != (v.shape[0], width):
                raise MeshError(f"{label} must have shape [{v.shape[0]}, {width}], got {arr.shape}")
            if arr is not None and not _finite_where_used(arr, f):
                raise MeshError(f"the mesh has NaN or infinite {label.replace('_', ' ')}")
        if self.face_materials is not None:
            fm = self.face_materials
            if fm.shape != (f.shape[0],):
                raise MeshError(f"face_materials must have shape [{f.shape[0]}], got {fm.shape}")
            if fm.size and (fm.min() < 0 or fm.max() >= len(self.materials)):
                raise MeshError("face_materials index a material that does not exist")
        return self

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned bounds of the vertices that faces use."""
        used = self.vertices[np.unique(self.faces)]
        return used.min(axis=0), used.max(axis=0)
