"""glTF 2.0 binary (.glb) writer, written by hand (no trimesh).

One mesh, one node; one primitive per material used (all primitives share the vertex
accessors). Positions are written as given: convert axes first if needed
(:func:`backend.geometry.axes.z_up_to_y_up`). Textures are embedded as PNG or, with
``texture_format="webp"``, as lossless WebP through ``EXT_texture_webp`` (then required).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable

import numpy as np

from backend.fileio import write_atomic
from backend.geometry import MeshError, PbrMaterial, TriangleMesh

from .images import MIME_TYPES, encode_image

_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_FLOAT, _UINT16, _UINT32 = 5126, 5123, 5125


class _BinBuilder:
    """Accumulates the BIN chunk, buffer views and accessors."""

    def __init__(self) -> None:
        self.blob = bytearray()
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def view(self, data: bytes, target: int | None = None) -> int:
        self.blob += b"\0" * (-len(self.blob) % 4)
        view = {"buffer": 0, "byteOffset": len(self.blob), "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        self.blob += data
        self.views.append(view)
        return len(self.views) - 1

    def accessor(self, arr: np.ndarray, kind: str, component: int, target: int, minmax: bool = False) -> int:
        acc = {"bufferView": self.view(arr.tobytes(), target), "componentType": component,
               "count": int(arr.shape[0]), "type": kind}
        if minmax:
            acc["min"] = [float(x) for x in arr.min(axis=0)]
            acc["max"] = [float(x) for x in arr.max(axis=0)]
        self.accessors.append(acc)
        return len(self.accessors) - 1


def _unit_normals(n: np.ndarray) -> np.ndarray:
    n = np.nan_to_num(np.asarray(n, dtype=np.float64))
    ln = np.linalg.norm(n, axis=1, keepdims=True)
    out = np.where(ln > 1e-12, n / np.maximum(ln, 1e-12), np.array([0.0, 0.0, 1.0]))
    return out.astype(np.float32)


def _material_json(mat: PbrMaterial, tex_index) -> dict:
    pbr: dict = {
        "baseColorFactor": [float(x) for x in mat.base_color_factor],
        "metallicFactor": float(mat.metallic_factor),
        "roughnessFactor": float(mat.roughness_factor),
    }
    if mat.base_color_texture is not None:
        pbr["baseColorTexture"] = {"index": tex_index(mat.base_color_texture)}
    if mat.metallic_roughness_texture is not None:
        pbr["metallicRoughnessTexture"] = {"index": tex_index(mat.metallic_roughness_texture)}
    out = {"name": mat.name, "pbrMetallicRoughness": pbr, "alphaMode": mat.alpha_mode,
           "doubleSided": bool(mat.double_sided)}
    if mat.normal_texture is not None:
        out["normalTexture"] = {"index": tex_index(mat.normal_texture)}
    if mat.alpha_mode == "MASK":
        out["alphaCutoff"] = float(mat.alpha_cutoff)
    return out


ImageEncoder = Callable[[np.ndarray, str], bytes]  # (uint8 [H, W, C], "png"|"webp") -> file bytes


def build_glb(mesh: TriangleMesh, *, texture_format: str = "png",
              generator: str = "trellis2-blender", encode: ImageEncoder = encode_image) -> bytes:
    """The .glb file contents for ``mesh`` (see :func:`write_glb`)."""
    if texture_format not in MIME_TYPES or texture_format == "jpeg":
        raise ValueError(f"texture_format must be 'png' or 'webp', got {texture_format!r}")
    mesh.validate()
    b = _BinBuilder()
    pos = np.asarray(mesh.vertices, dtype=np.float32)
    attrs = {"POSITION": b.accessor(pos, "VEC3", _FLOAT, _ARRAY_BUFFER, minmax=True)}
    if mesh.normals is not None:
        attrs["NORMAL"] = b.accessor(_unit_normals(mesh.normals), "VEC3", _FLOAT, _ARRAY_BUFFER)
    if mesh.tangents is not None:
        attrs["TANGENT"] = b.accessor(np.asarray(mesh.tangents, np.float32), "VEC4", _FLOAT, _ARRAY_BUFFER)
    if mesh.uvs is not None:
        attrs["TEXCOORD_0"] = b.accessor(mesh.uvs.astype(np.float32), "VEC2", _FLOAT, _ARRAY_BUFFER)
    if mesh.vertex_colors is not None:
        col = np.clip(mesh.vertex_colors, 0, 1).astype(np.float32)
        attrs["COLOR_0"] = b.accessor(col, "VEC4", _FLOAT, _ARRAY_BUFFER)

    images: list[dict] = []
    textures: list[dict] = []
    seen: dict[int, int] = {}

    def tex_index(img: np.ndarray) -> int:
        if id(img) not in seen:
            view = b.view(encode(img, texture_format))
            images.append({"bufferView": view, "mimeType": MIME_TYPES[texture_format]})
            tex = {"sampler": 0}
            if texture_format == "webp":
                tex["extensions"] = {"EXT_texture_webp": {"source": len(images) - 1}}
            else:
                tex["source"] = len(images) - 1
            textures.append(tex)
            seen[id(img)] = len(textures) - 1
        return seen[id(img)]

    fmat = mesh.material_of_faces()
    faces = np.asarray(mesh.faces)
    index_type = (np.uint16, _UINT16) if mesh.num_vertices < 65535 else (np.uint32, _UINT32)
    primitives, materials, mat_index = [], [], {}
    for k in np.unique(fmat):
        idx = faces[fmat == k].reshape(-1).astype(index_type[0])
        prim = {"attributes": attrs, "mode": 4,
                "indices": b.accessor(idx, "SCALAR", index_type[1], _ELEMENT_ARRAY_BUFFER)}
        if k >= 0:
            if k not in mat_index:
                mat_index[k] = len(materials)
                materials.append(_material_json(mesh.materials[k], tex_index))
            prim["material"] = mat_index[k]
        primitives.append(prim)

    doc: dict = {
        "asset": {"version": "2.0", "generator": generator},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": "mesh"}],
        "meshes": [{"name": "mesh", "primitives": primitives}],
        "accessors": b.accessors,
        "bufferViews": b.views,
        "buffers": [{"byteLength": len(b.blob) + (-len(b.blob) % 4)}],
    }
    if materials:
        doc["materials"] = materials
    if textures:
        doc["textures"], doc["images"] = textures, images
        # LINEAR / LINEAR_MIPMAP_LINEAR, REPEAT
        doc["samplers"] = [{"magFilter": 9729, "minFilter": 9987, "wrapS": 10497, "wrapT": 10497}]
    if texture_format == "webp" and textures:
        doc["extensionsUsed"] = doc["extensionsRequired"] = ["EXT_texture_webp"]
    js = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    js += b" " * (-len(js) % 4)
    blob = bytes(b.blob) + b"\0" * (-len(b.blob) % 4)
    total = 12 + 8 + len(js) + 8 + len(blob)
    return (struct.pack("<4sII", b"glTF", 2, total) + struct.pack("<II", len(js), 0x4E4F534A) + js
            + struct.pack("<II", len(blob), 0x004E4942) + blob)


def write_glb(path: str | os.PathLike, mesh: TriangleMesh, *, texture_format: str = "png",
              generator: str = "trellis2-blender", encode: ImageEncoder = encode_image) -> None:
    """Write ``mesh`` as a binary glTF 2.0 file, atomically (temp file + ``os.replace``).

    Writes POSITION, NORMAL (renormalised), TANGENT, TEXCOORD_0, COLOR_0 (RGBA float) when
    present, and per material: baseColorTexture (RGB/RGBA), metallicRoughnessTexture (G =
    roughness, B = metallic), normalTexture, factors, alphaMode, alphaCutoff (MASK) and doubleSided.

    Raises:
        MeshError: the mesh is invalid (nothing is written).
        ValueError: unknown ``texture_format``.
    """
    try:
        data = build_glb(mesh, texture_format=texture_format, generator=generator, encode=encode)
    except (KeyError, IndexError) as exc:  # pragma: no cover - defensive
        raise MeshError(f"cannot export the mesh: {exc}") from exc
    write_atomic(path, data)
