"""The direct result folder that the Blender add-on imports without a GLB round trip.

Layout (read by ``trellis2_blender/results.py``)::

    <folder>/result.json
    <folder>/<name>.npz                        positions [V,3] f32, faces [F,3] i32,
                                               uvs [V,2] f32 (v = 0 at the image bottom),
                                               normals [V,3] f32; Blender frame (Z-up)
    <folder>/<name>_base_color.png             sRGB RGB or RGBA (alpha = opacity)
    <folder>/<name>_metallic_roughness.png     glTF packing: G roughness, B metallic
    <folder>/<name>_normal.png                 when baked: tangent-space normals (glTF encoding)

``result.json``: ``{"name", "mesh", "textures": {"base_color", "metallic_roughness"[, "normal"]},
"alpha_mode", "double_sided", "stats": {"vertices", "faces", "texture_size"}}`` plus the
caller's fields, e.g. ``"qa"`` (the QA report, see ``export/asset.py``), ``"seed"``, ``"sample"``,
``"model": {"source": "official" | "local" | "bundled-mini", "path"}`` (which
weights made the asset, see ``backend/pipeline/model_source.py``).
Textures are always PNG here (lossless; Blender reads them natively).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from backend.fileio import write_atomic
from backend.meshio.images import encode_image

from .material import TextureSet


def write_direct(folder: Path, name: str, positions: np.ndarray | None, faces: np.ndarray,
                 uvs_gltf: np.ndarray | None, normals: np.ndarray | None, tex: TextureSet,
                 double_sided: bool, encode: Callable[[np.ndarray, str], bytes] = encode_image,
                 fields: Mapping[str, object] | None = None) -> Path:
    """Write the folder; ``positions`` None leaves the mesh out (textures only). Returns result.json.

    ``encode`` turns a texture into PNG bytes (the GLB writer's encoder can be shared); ``fields``
    are added to result.json as they are (JSON values).
    """
    folder.mkdir(parents=True, exist_ok=True)
    doc: dict = {"name": name, "alpha_mode": tex.alpha_mode, "double_sided": bool(double_sided)}
    if positions is not None:
        arrays = {"positions": np.asarray(positions, np.float32), "faces": np.asarray(faces, np.int32)}
        if uvs_gltf is not None:
            uv = np.asarray(uvs_gltf, np.float32).copy()
            uv[:, 1] = 1.0 - uv[:, 1]  # glTF (v down) -> Blender (v up)
            arrays["uvs"] = uv
        if normals is not None:
            arrays["normals"] = np.asarray(normals, np.float32)
        write_atomic(folder / f"{name}.npz", lambda fh: np.savez(fh, **arrays))
        doc["mesh"] = f"{name}.npz"
        doc["stats"] = {"vertices": int(len(positions)), "faces": int(len(faces)),
                        "texture_size": int(tex.base_color.shape[0])}
    files = {"base_color": f"{name}_base_color.png", "metallic_roughness": f"{name}_metallic_roughness.png"}
    write_atomic(folder / files["base_color"], encode(tex.base_color, "png"))
    write_atomic(folder / files["metallic_roughness"], encode(tex.metallic_roughness, "png"))
    if tex.normal is not None:
        files["normal"] = f"{name}_normal.png"
        write_atomic(folder / files["normal"], encode(tex.normal, "png"))
    doc["textures"] = files
    doc.update(fields or {})
    path = folder / "result.json"
    write_atomic(path, json.dumps(doc, indent=2).encode())
    return path
