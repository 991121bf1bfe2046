"""glTF 2.0 reader (.glb and .gltf with embedded, data-URI or external buffers and images).

The default scene's node hierarchy is flattened (node transforms applied to positions
and normals); every triangle primitive becomes a run of faces with its material in
``face_materials``. Supported: modes TRIANGLES / TRIANGLE_STRIP / TRIANGLE_FAN,
TEXCOORD_0, NORMAL, COLOR_0, pbrMetallicRoughness (+ EXT_texture_webp), alphaMode,
alphaCutoff, doubleSided. Sparse accessors and Draco are rejected with a MeshError.
"""

from __future__ import annotations

import base64
import json
import logging
import struct
from pathlib import Path
from urllib.parse import unquote

import numpy as np

from backend.geometry import MeshError, PbrMaterial, TriangleMesh

from .images import decode_image

log = logging.getLogger(__name__)

_COMPONENT = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16,
              5125: np.uint32, 5126: np.float32}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}
# Node instances the default scene may expand to: a node shared by several parents is shown
# once per path, so a small DAG can stand for exponentially many instances.
MAX_NODE_INSTANCES = 100_000
MAX_VERTICES = 1 << 26  # over all mesh instances of the scene, after expansion


def referenced_file(folder: Path, reference: str, source: Path, what: str, shown: str | None = None) -> Path:
    """The file ``reference`` (relative to ``folder``, or absolute) names, which must lie inside ``folder``.

    ``source`` is the mesh file that holds the reference and ``what`` says what it is (e.g.
    "glTF buffer URI"); both, with ``shown`` (the reference as written, default ``reference``),
    go into the :class:`MeshError` raised for a reference that leaves ``folder`` (``..``, an
    absolute path, a symbolic link pointing elsewhere) or is not a usable path. Keeps a mesh
    from pulling arbitrary files of the machine (``/etc/passwd``) into its geometry or textures.
    """
    shown = reference if shown is None else shown
    try:
        root = folder.resolve()
        target = (folder / reference).resolve()
    except (OSError, ValueError, RuntimeError) as exc:
        raise MeshError(f"{source}: {what} {shown!r} is not a usable path ({exc})") from None
    if not target.is_relative_to(root):
        raise MeshError(f"{source}: {what} {shown!r} points outside the mesh's folder {root}; "
                        "files a mesh refers to must lie in its folder or below it")
    return target


class _Gltf:
    """The parsed JSON plus resolved buffers; reads accessors and images.

    ``base`` is the folder external URIs are relative to (and must stay inside); ``source``
    the file being read, named in errors.
    """

    def __init__(self, doc: dict, bin_chunk: bytes | None, base: Path, source: Path | None = None) -> None:
        self.doc, self.base = doc, base
        self.source = source if source is not None else base
        self.buffers = [self._buffer(b, bin_chunk) for b in doc.get("buffers", [])]
        self._images: dict[int, np.ndarray] = {}

    def _uri(self, uri: str) -> bytes:
        if uri.startswith("data:"):
            head, _, payload = uri.partition(",")
            return base64.b64decode(payload) if head.endswith(";base64") else unquote(payload).encode()
        path = referenced_file(self.base, unquote(uri), self.source, "glTF URI", shown=uri)
        try:
            return path.read_bytes()
        except OSError as exc:
            raise MeshError(f"cannot read external glTF resource {path}: {exc}") from exc

    def _buffer(self, buf: dict, bin_chunk: bytes | None) -> bytes:
        if "uri" in buf:
            return self._uri(buf["uri"])
        if bin_chunk is None:
            raise MeshError("a glTF buffer has no uri and the file has no BIN chunk")
        return bin_chunk

    def view_bytes(self, index: int) -> tuple[bytes, int, int | None]:
        view = _item(self.doc, "bufferViews", index, self.source)
        if not isinstance(view.get("buffer"), int) or not 0 <= view["buffer"] < len(self.buffers):
            raise MeshError(f"{self.source}: glTF bufferView {index} names a buffer that does not exist")
        data = self.buffers[view["buffer"]]
        off = view.get("byteOffset", 0)
        return data[off: off + view["byteLength"]], 0, view.get("byteStride")

    def accessor(self, index: int) -> np.ndarray:
        """[count, width] (or [count] for SCALAR) array; normalized integers become floats."""
        acc = _item(self.doc, "accessors", index, self.source)
        if "sparse" in acc:
            raise MeshError("sparse glTF accessors are not supported")
        if acc.get("componentType") not in _COMPONENT:
            raise MeshError(f"{self.source}: glTF accessor {index} has an unknown componentType "
                            f"{acc.get('componentType')!r} (known: {sorted(_COMPONENT)})")
        if acc.get("type") not in _WIDTH:
            raise MeshError(f"{self.source}: glTF accessor {index} has an unknown type {acc.get('type')!r}")
        dtype = np.dtype(_COMPONENT[acc["componentType"]]).newbyteorder("<")
        width, count = _WIDTH[acc["type"]], acc.get("count")
        if not isinstance(count, int) or not 0 <= count <= MAX_VERTICES:
            raise MeshError(f"{self.source}: glTF accessor {index} has an invalid count {count!r}")
        if "bufferView" not in acc:
            out = np.zeros((count, width), dtype=dtype)
        else:
            data, _, stride = self.view_bytes(acc["bufferView"])
            off = acc.get("byteOffset", 0)
            item = dtype.itemsize * width
            stride = stride or item
            need = off + stride * (count - 1) + item if count else 0
            if need > len(data):
                raise MeshError(f"glTF accessor {index} reads past the end of its buffer view")
            raw = np.frombuffer(data, dtype=np.uint8, count=max(need - off, 0), offset=off) if count else b""
            if count == 0:
                out = np.zeros((0, width), dtype=dtype)
            elif stride == item:
                out = np.frombuffer(raw.tobytes(), dtype=dtype).reshape(count, width)
            else:
                rows = np.lib.stride_tricks.as_strided(raw, shape=(count, item), strides=(stride, 1))
                out = np.frombuffer(rows.copy().tobytes(), dtype=dtype).reshape(count, width)
        if acc.get("normalized") and dtype.kind in "iu":
            out = np.maximum(out.astype(np.float64) / np.iinfo(dtype).max, -1.0)
        return out[:, 0] if width == 1 else out

    def image(self, texture_index: int) -> np.ndarray:
        tex = self.doc["textures"][texture_index]
        src = tex.get("source")
        src = tex.get("extensions", {}).get("EXT_texture_webp", {}).get("source", src)
        if src is None:
            raise MeshError(f"glTF texture {texture_index} has no image source")
        if src not in self._images:
            img = self.doc["images"][src]
            data = self.view_bytes(img["bufferView"])[0] if "bufferView" in img else self._uri(img["uri"])
            self._images[src] = decode_image(data, f"glTF image {src}")
        return self._images[src]


def _item(doc: dict, key: str, index: object, source: Path) -> dict:
    """``doc[key][index]``, or a :class:`MeshError` naming the missing or malformed entry."""
    items = doc.get(key)
    if not isinstance(items, list) or not isinstance(index, int) or not 0 <= index < len(items):
        have = len(items) if isinstance(items, list) else 0
        raise MeshError(f"{source}: glTF refers to {key}[{index!r}], but the file has {have} {key}")
    if not isinstance(items[index], dict):
        raise MeshError(f"{source}: glTF {key}[{index}] is not an object")
    return items[index]


def _node_matrix(node: dict) -> np.ndarray:
    if "matrix" in node:
        return np.asarray(node["matrix"], dtype=np.float64).reshape(4, 4).T  # column-major in the file
    x, y, z, w = node.get("rotation", (0, 0, 0, 1))
    rot = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])
    m = np.eye(4)
    m[:3, :3] = rot * np.asarray(node.get("scale", (1, 1, 1)))[None, :]
    m[:3, 3] = node.get("translation", (0, 0, 0))
    return m


def _mesh_instances(doc: dict, source: Path) -> list[tuple[int, np.ndarray]]:
    """(mesh index, world matrix) for every node that shows a mesh in the default scene."""
    scenes = doc.get("scenes")
    if not scenes:
        return [(i, np.eye(4)) for i in range(len(doc.get("meshes", [])))]
    roots = _item(doc, "scenes", doc.get("scene", 0), source).get("nodes", [])
    out, stack, visited = [], [(r, np.eye(4), 0) for r in roots], 0
    while stack:
        idx, parent, depth = stack.pop()
        if depth > 256:
            raise MeshError(f"{source}: glTF node hierarchy is too deep (cycle?)")
        visited += 1
        if visited > MAX_NODE_INSTANCES:
            raise MeshError(f"{source}: the glTF node hierarchy expands to more than {MAX_NODE_INSTANCES} "
                            "node instances (nodes shared by several parents)")
        node = _item(doc, "nodes", idx, source)
        world = parent @ _node_matrix(node)
        if "mesh" in node:
            out.append((node["mesh"], world))
        stack.extend((c, world, depth + 1) for c in node.get("children", []))
    return out


def _triangles(indices: np.ndarray, mode: int) -> np.ndarray:
    if mode == 4:
        return indices[: len(indices) // 3 * 3].reshape(-1, 3)
    if mode == 5:
        k = np.arange(len(indices) - 2)
        tri = np.stack([indices[k], indices[k + 1], indices[k + 2]], 1)
        odd = k % 2 == 1
        tri[odd] = tri[odd][:, [1, 0, 2]]
        return tri
    if mode == 6:
        k = np.arange(1, len(indices) - 1)
        return np.stack([np.full_like(k, indices[0]), indices[k], indices[k + 1]], 1)
    raise ValueError(mode)


def _material(g: _Gltf, index: int) -> PbrMaterial:
    m = g.doc["materials"][index]
    pbr = m.get("pbrMetallicRoughness", {})
    base = mr = None
    if "baseColorTexture" in pbr:
        base = g.image(pbr["baseColorTexture"]["index"])
    if "metallicRoughnessTexture" in pbr:
        mr = g.image(pbr["metallicRoughnessTexture"]["index"])
    return PbrMaterial(
        name=m.get("name", f"material_{index}"),
        base_color_factor=tuple(float(x) for x in pbr.get("baseColorFactor", (1, 1, 1, 1))),
        metallic_factor=float(pbr.get("metallicFactor", 1.0)),
        roughness_factor=float(pbr.get("roughnessFactor", 1.0)),
        base_color_texture=base,
        metallic_roughness_texture=mr,
        alpha_mode=m.get("alphaMode", "OPAQUE"),
        alpha_cutoff=float(m.get("alphaCutoff", 0.5)),
        double_sided=bool(m.get("doubleSided", False)),
    )


def _parse_container(path: Path) -> tuple[dict, bytes | None]:
    data = path.read_bytes()
    if data[:4] != b"glTF":
        return _json_document(path, data, "glTF JSON file"), None
    if len(data) < 20:
        raise MeshError(f"{path}: truncated GLB header")
    _, version, length = struct.unpack_from("<4sII", data, 0)
    if version != 2:
        raise MeshError(f"{path}: GLB version {version} is not supported (need 2)")
    if length > len(data):
        raise MeshError(f"{path}: the GLB is truncated (header says {length} bytes, "
                        f"the file has {len(data)})")
    pos, doc, bin_chunk = 12, None, None
    while pos + 8 <= length:
        clen, ctype = struct.unpack_from("<II", data, pos)
        if pos + 8 + clen > length:
            raise MeshError(f"{path}: a GLB chunk runs past the end of the file (truncated GLB)")
        chunk = data[pos + 8: pos + 8 + clen]
        if ctype == 0x4E4F534A:
            doc = _json_document(path, chunk, "GLB JSON chunk")
        elif ctype == 0x004E4942 and bin_chunk is None:
            bin_chunk = chunk
        pos += 8 + clen
    if doc is None:
        raise MeshError(f"{path}: GLB has no JSON chunk")
    return doc, bin_chunk


def _json_document(path: Path, data: bytes, what: str) -> dict:
    """The JSON object in ``data`` (UTF-8), or a :class:`MeshError` saying why it is not one."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise MeshError(f"{path}: the {what} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise MeshError(f"{path}: the {what} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise MeshError(f"{path}: the {what} must hold a JSON object, got {type(doc).__name__}")
    return doc


def read_gltf(path: str | Path) -> TriangleMesh:
    """Read a .glb/.gltf file into one :class:`TriangleMesh` (all primitives of the scene)."""
    path = Path(path)
    doc, bin_chunk = _parse_container(path)
    required = set(doc.get("extensionsRequired", [])) - {"EXT_texture_webp"}
    if required:
        raise MeshError(f"{path}: required glTF extensions not supported: {sorted(required)}")
    g = _Gltf(doc, bin_chunk, path.parent, path)
    parts: list[dict] = []
    mat_map: dict[int | None, int] = {}
    materials: list[PbrMaterial] = []
    if not isinstance(doc.get("meshes"), list) or not doc["meshes"]:
        raise MeshError(f"{path}: the glTF file has no meshes")
    vertices = 0
    for mesh_index, world in _mesh_instances(doc, path):
        for prim in _item(doc, "meshes", mesh_index, path).get("primitives", []):
            mode = prim.get("mode", 4)
            if mode not in (4, 5, 6):
                log.warning("skipping a glTF primitive with mode %d (not triangles)", mode)
                continue
            attrs = prim["attributes"]
            if "POSITION" not in attrs:
                raise MeshError(f"{path}: a primitive of mesh {mesh_index} has no POSITION attribute")
            pos = g.accessor(attrs["POSITION"]).astype(np.float64)
            vertices += len(pos)
            if vertices > MAX_VERTICES:
                raise MeshError(f"{path}: the scene has more than {MAX_VERTICES} vertices once its "
                                "node instances are expanded")
            idx = g.accessor(prim["indices"]).astype(np.int64) if "indices" in prim else np.arange(len(pos))
            part = {"v": pos @ world[:3, :3].T + world[:3, 3], "f": _triangles(idx, mode)}
            if "NORMAL" in attrs:
                n = g.accessor(attrs["NORMAL"]).astype(np.float64) @ np.linalg.pinv(world[:3, :3])
                part["n"] = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-30)
            if "TEXCOORD_0" in attrs:
                part["uv"] = g.accessor(attrs["TEXCOORD_0"]).astype(np.float64)
            if "COLOR_0" in attrs:
                c = g.accessor(attrs["COLOR_0"]).astype(np.float64)
                part["c"] = np.concatenate([c, np.ones((len(c), 1))], 1) if c.shape[1] == 3 else c
            key = prim.get("material")
            if key not in mat_map:
                mat_map[key] = len(materials)
                materials.append(PbrMaterial(name="default") if key is None else _material(g, key))
            part["m"] = mat_map[key]
            if np.linalg.det(world[:3, :3]) < 0:
                part["f"] = part["f"][:, ::-1]
            parts.append(part)
    if not parts:
        raise MeshError(f"{path}: no triangle geometry in the default scene")
    return _merge(parts, materials).validate()


def _merge(parts: list[dict], materials: list[PbrMaterial]) -> TriangleMesh:
    offsets = np.cumsum([0] + [len(p["v"]) for p in parts])

    def gather(key: str, width: int, fill: float):
        if not any(key in p for p in parts):
            return None
        return np.concatenate([p.get(key, np.full((len(p["v"]), width), fill)) for p in parts])

    faces = np.concatenate([p["f"] + o for p, o in zip(parts, offsets)])
    return TriangleMesh(
        vertices=np.concatenate([p["v"] for p in parts]),
        faces=faces,
        uvs=gather("uv", 2, 0.0),
        normals=gather("n", 3, 0.0),
        vertex_colors=gather("c", 4, 1.0),
        materials=materials,
        face_materials=np.concatenate([np.full(len(p["f"]), p["m"], dtype=np.int64) for p in parts]),
    )
