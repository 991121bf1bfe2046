"""Direct result folders made by code, in the layout the backend writes (see core/results.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def sphere_arrays(radius: float = 0.4, rings: int = 12, segments: int = 24):
    """A UV sphere with a seam: per-vertex positions, normals and UVs (v = 0 at the bottom)."""
    verts, uvs = [], []
    for r in range(rings + 1):
        theta = np.pi * r / rings
        for s in range(segments + 1):
            phi = 2 * np.pi * s / segments
            n = (np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta))
            verts.append(n)
            uvs.append((s / segments, 1.0 - r / rings))
    faces = []
    row = segments + 1
    for r in range(rings):
        for s in range(segments):
            a, b, c, d = r * row + s, (r + 1) * row + s, (r + 1) * row + s + 1, r * row + s + 1
            if r != 0:
                faces.append((a, b, d))
            if r != rings - 1:
                faces.append((b, c, d))
    normals = np.asarray(verts, dtype=np.float32)
    return (normals * radius, np.asarray(faces, dtype=np.int32), np.asarray(uvs, dtype=np.float32), normals)


def write_textures(folder: Path, name: str, *, transparent: bool, size: int = 64) -> dict[str, str]:
    yy, xx = np.mgrid[0:size, 0:size]
    check = ((yy * 8 // size) + (xx * 8 // size)) % 2 == 0
    base = np.zeros((size, size, 4), dtype=np.uint8)
    base[check] = (220, 60, 30, 255)
    base[~check] = (40, 90, 210, 255)
    if transparent:
        base[: size // 3, :, 3] = 0
    else:
        base = base[..., :3]
    mr = np.zeros((size, size, 3), dtype=np.uint8)
    mr[..., 1] = 140  # roughness
    mr[:, : size // 2, 2] = 255  # metallic on the left half
    files = {"base_color": f"{name}_base_color.png", "metallic_roughness": f"{name}_metallic_roughness.png"}
    Image.fromarray(base).save(folder / files["base_color"])
    Image.fromarray(mr).save(folder / files["metallic_roughness"])
    return files


def write_result(folder: Path, name: str = "asset", *, transparent: bool = False,
                 texture_size: int = 64, fields: dict | None = None) -> Path:
    """Write ``folder/result.json`` plus its mesh and textures; returns the result.json path.

    ``fields`` are added to result.json (e.g. the seed and sample index, as the backend does)."""
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"name": name, "alpha_mode": "BLEND" if transparent else "OPAQUE", "double_sided": False}
    positions, faces, uvs, normals = sphere_arrays()
    np.savez(folder / f"{name}.npz", positions=positions, faces=faces, uvs=uvs, normals=normals)
    doc["mesh"] = f"{name}.npz"
    doc["stats"] = {"vertices": len(positions), "faces": len(faces)}
    doc["textures"] = write_textures(folder, name, transparent=transparent, size=texture_size)
    doc.update(fields or {})
    path = folder / "result.json"
    path.write_text(json.dumps(doc, indent=2))
    return path
