"""Read the backend's direct result folder (no ``bpy``; numpy only, which Blender ships).

The folder holds ``result.json``, one ``.npz`` mesh and PNG textures::

    {
      "name": "chair",
      "mesh": "chair.npz",                  # positions [V,3] f32, faces [F,3] i32,
                                            # uvs [V,2] f32 (v = 0 at the image bottom),
                                            # normals [V,3] f32; Blender's frame (Z-up)
      "textures": {
        "base_color": "chair_base_color.png",                  # sRGB, RGB or RGBA
        "metallic_roughness": "chair_metallic_roughness.png"   # glTF packing: G rough, B metal
        # or "metallic" / "roughness" as single-channel maps, optional "alpha", "normal"
      },
      "alpha_mode": "OPAQUE" | "MASK" | "BLEND",
      "double_sided": false
    }

Relative file names are resolved against the folder of ``result.json``. A retexture
result may leave out ``mesh``: only its textures are used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

TEXTURE_KEYS = ("base_color", "metallic_roughness", "metallic", "roughness", "alpha", "normal")
ALPHA_MODES = ("OPAQUE", "MASK", "BLEND")


class ResultError(ValueError):
    """A result folder that cannot be imported; the message says what is wrong."""


@dataclass(frozen=True)
class DirectResult:
    path: Path  # the result.json
    name: str
    mesh: Path | None
    textures: dict[str, Path] = field(default_factory=dict)
    alpha_mode: str = "OPAQUE"
    double_sided: bool = False
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class MeshArrays:
    positions: object  # np.ndarray [V, 3] float32
    faces: object  # [F, 3] int32
    uvs: object | None  # [V, 2] float32
    normals: object | None  # [V, 3] float32


def read_result(path: Path | str) -> DirectResult:
    """Parse and check ``result.json`` (or the folder holding it); files must exist."""
    path = Path(path)
    if path.is_dir():
        path = path / "result.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultError(f"no result file at {path}") from None
    except ValueError as exc:
        raise ResultError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ResultError(f"{path}: expected a JSON object")
    base = path.parent

    def resolve(value, what: str) -> Path:
        if not isinstance(value, str) or not value:
            raise ResultError(f"{path}: {what} must be a file name")
        file = (base / value) if not Path(value).is_absolute() else Path(value)
        if not file.is_file():
            raise ResultError(f"{path}: {what} file {file} is missing")
        return file

    mesh = resolve(data["mesh"], "mesh") if data.get("mesh") else None
    textures_in = data.get("textures") or {}
    if not isinstance(textures_in, dict):
        raise ResultError(f"{path}: 'textures' must be an object")
    textures = {key: resolve(value, f"texture '{key}'")
                for key, value in textures_in.items() if key in TEXTURE_KEYS and value}
    alpha_mode = str(data.get("alpha_mode", "OPAQUE")).upper()
    if alpha_mode not in ALPHA_MODES:
        raise ResultError(f"{path}: alpha_mode must be one of {ALPHA_MODES}, got {alpha_mode!r}")
    known = {"name", "mesh", "textures", "alpha_mode", "double_sided"}
    return DirectResult(
        path=path,
        name=str(data.get("name") or base.name),
        mesh=mesh,
        textures=textures,
        alpha_mode=alpha_mode,
        double_sided=bool(data.get("double_sided", False)),
        extra={k: v for k, v in data.items() if k not in known},
    )


def load_mesh(path: Path) -> MeshArrays:
    """Load and check the mesh arrays of a result (shapes, index range, finite values)."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError) as exc:
        raise ResultError(f"cannot read mesh {path}: {exc}") from None
    for key in ("positions", "faces"):
        if key not in arrays:
            raise ResultError(f"mesh {path} has no '{key}' array")
    positions = np.ascontiguousarray(arrays["positions"], dtype=np.float32)
    faces = np.ascontiguousarray(arrays["faces"], dtype=np.int32)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ResultError(f"mesh {path}: positions must be [V, 3], got {positions.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
        raise ResultError(f"mesh {path}: faces must be a non-empty [F, 3], got {faces.shape}")
    if faces.min() < 0 or faces.max() >= len(positions):
        raise ResultError(f"mesh {path}: face indices out of range")
    if not np.isfinite(positions).all():
        raise ResultError(f"mesh {path}: positions are not finite")
    uvs = arrays.get("uvs")
    if uvs is not None:
        uvs = np.ascontiguousarray(uvs, dtype=np.float32)
        if uvs.shape != (len(positions), 2):
            raise ResultError(f"mesh {path}: uvs must be [V, 2], got {uvs.shape}")
    normals = arrays.get("normals")
    if normals is not None:
        normals = np.ascontiguousarray(normals, dtype=np.float32)
        if normals.shape != positions.shape:
            raise ResultError(f"mesh {path}: normals must be [V, 3], got {normals.shape}")
        length = np.linalg.norm(normals, axis=1, keepdims=True)
        normals = np.where(length > 1e-12, normals / np.maximum(length, 1e-12), np.float32([0, 0, 1]))
        normals = normals.astype(np.float32)
    return MeshArrays(positions, faces, uvs, normals)


def split_corners(vertex_of_corner, uv_of_corner, decimals: int = 6):
    """Turn per-corner UVs into per-vertex ones by splitting vertices along UV seams.

    Returns ``(source_vertex [N], uvs [N, 2], corner_to_new [C])``: new vertex ``i`` is a copy
    of ``source_vertex[i]`` with ``uvs[i]``, and corner ``c`` uses new vertex ``corner_to_new[c]``.
    """
    import numpy as np

    vertex_of_corner = np.asarray(vertex_of_corner, dtype=np.int64)
    uv = np.round(np.asarray(uv_of_corner, dtype=np.float64), decimals)
    keys = np.empty(len(vertex_of_corner), dtype=[("v", np.int64), ("u", np.float64), ("w", np.float64)])
    keys["v"], keys["u"], keys["w"] = vertex_of_corner, uv[:, 0], uv[:, 1]
    unique, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return unique["v"], np.asarray(uv_of_corner, dtype=np.float32)[first], inverse.reshape(-1)
