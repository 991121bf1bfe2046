"""Hypothesis strategies for hostile inputs: mesh files, O-Voxel files, images and protocol lines.

Each file strategy draws ``(file name, bytes)``; the file is written into an input folder that
has a ``secret`` file next to it (one level up), which references in the generated files try
to reach (``../secret.bin``, absolute paths, ``/etc/passwd``). Most cases start from a valid
file and break it in one or a few places, so they get past the first checks of a reader.
"""

from __future__ import annotations

import copy
import io
import json
import struct

import numpy as np
from hypothesis import strategies as st
from PIL import Image

from tests.fixtures.mesh_files import TRIANGLE_OBJ, glb_bytes, ply_header, triangle_glb_parts, triangle_ply

SECRET_NAME = "secret.bin"  # lies next to the input folder: reading it is an escape
REFERENCES = ("../" + SECRET_NAME, "/etc/passwd", "sub/../../" + SECRET_NAME, "%2e%2e/" + SECRET_NAME,
              "missing.bin", "data:application/octet-stream;base64,AAAA", "data:,abc", "", ".", "/")

numbers = st.one_of(
    st.integers(-3, 3), st.integers(-(2**63), 2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e30, -1e30, 1e-30, 0.0, 2**31, 2**32 + 1]))
json_scalars = st.one_of(st.none(), st.booleans(), numbers.filter(lambda x: not isinstance(x, float) or
                                                                   np.isfinite(x)),
                         st.text(max_size=12), st.sampled_from(REFERENCES))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


@st.composite
def byte_damage(draw, data: bytes) -> bytes:
    """``data`` truncated, with bytes flipped, or with a run of bytes inserted."""
    kind = draw(st.sampled_from(["truncate", "flip", "insert", "none"]))
    if kind == "truncate" or not data:
        return data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    if kind == "flip":
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
        return bytes(out)
    if kind == "insert":
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.binary(min_size=1, max_size=64)) + data[at:]
    return data


def _number_text(draw) -> str:
    value = draw(numbers)
    return repr(value) if not isinstance(value, float) else str(value)


@st.composite
def obj_files(draw) -> tuple[str, bytes]:
    lines = TRIANGLE_OBJ.splitlines()
    for _ in range(draw(st.integers(0, 6))):
        tag = draw(st.sampled_from(["v", "vt", "vn", "f", "mtllib", "usemtl", "junk", "drop"]))
        if tag == "drop" and lines:
            lines.pop(draw(st.integers(0, len(lines) - 1)))
            continue
        if tag in ("v", "vt", "vn"):
            line = tag + " " + " ".join(_number_text(draw) for _ in range(draw(st.integers(0, 7))))
        elif tag == "f":
            corner = st.tuples(st.integers(-5, 9), st.one_of(st.none(), st.integers(-5, 9)),
                               st.one_of(st.none(), st.integers(-5, 9)))
            corners = draw(st.lists(corner, min_size=0, max_size=6))
            line = "f " + " ".join("/".join("" if x is None else str(x) for x in c) for c in corners)
        elif tag == "mtllib":
            line = "mtllib " + draw(st.sampled_from(REFERENCES + ("mat.mtl",)))
        elif tag == "usemtl":
            line = "usemtl " + draw(st.text(max_size=8))
        else:
            line = draw(st.text(max_size=30))
        lines.insert(draw(st.integers(0, len(lines))), line)
    data = ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")
    return "mesh.obj", draw(byte_damage(data))


PLY_TYPES = ("float", "double", "uchar", "int", "short", "uint", "float32", "quux", "list uchar int")


@st.composite
def ply_files(draw) -> tuple[str, bytes]:
    if draw(st.booleans()):
        return "mesh.ply", draw(byte_damage(triangle_ply()))
    fmt = draw(st.sampled_from(["ascii", "binary_little_endian", "binary_big_endian", "binary_weird"]))
    names = draw(st.lists(st.sampled_from(["x", "y", "z", "nx", "u", "v", "red", "alpha", "x"]),
                          min_size=0, max_size=6))
    props = tuple(f"{draw(st.sampled_from(PLY_TYPES))} {n}" for n in names)
    vertices = draw(st.one_of(st.integers(0, 5), st.sampled_from([10**9, 2**31, 2**63])))
    faces = draw(st.one_of(st.integers(0, 3), st.sampled_from([10**9, 2**40])))
    header = ply_header(fmt, props, vertices, faces)
    if fmt == "ascii":
        body = " ".join(_number_text(draw) for _ in range(draw(st.integers(0, 30)))).encode()
    else:
        body = draw(st.binary(max_size=200))
    return "mesh.ply", header + body


def _paths(doc) -> list[tuple]:
    """Every (container, key) pair of a JSON document, to replace one value."""
    out = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append((doc, k))
            out += _paths(v)
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.append((doc, i))
            out += _paths(v)
    return out


@st.composite
def gltf_documents(draw) -> tuple[dict, bytes]:
    doc, binary = triangle_glb_parts()
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(0, 4))):
        action = draw(st.sampled_from(["replace", "delete", "uri", "dag", "image"]))
        if action == "uri":
            buffers = doc.get("buffers")
            usable = isinstance(buffers, list) and buffers and isinstance(buffers[0], dict)
            first = buffers[0] if usable else {}
            doc["buffers"] = [{**first, "uri": draw(st.sampled_from(REFERENCES))}]
        elif action == "image":
            doc["images"] = [{"uri": draw(st.sampled_from(REFERENCES))}]
            doc["textures"] = [{"source": 0}]
            doc["materials"] = [{"pbrMetallicRoughness": {"baseColorTexture": {"index": 0}}}]
            try:
                doc["meshes"][0]["primitives"][0]["material"] = 0
            except (KeyError, IndexError, TypeError):  # an earlier mutation removed the primitive
                pass
        elif action == "dag":
            levels = draw(st.integers(1, 40))
            doc["nodes"] = [{"children": [i + 1, i + 1]} for i in range(levels)] + [{"mesh": 0}]
            doc["scenes"], doc["scene"] = [{"nodes": [0]}], 0
        else:
            paths = _paths(doc)
            container, key = paths[draw(st.integers(0, len(paths) - 1))]
            if action == "delete":
                del container[key]
            else:
                container[key] = draw(json_values)
    return doc, binary


@st.composite
def gltf_files(draw) -> tuple[str, bytes]:
    doc, binary = draw(gltf_documents())
    if draw(st.booleans()):
        return "mesh.glb", draw(byte_damage(glb_bytes(doc, binary)))
    buffers = doc.get("buffers")
    if isinstance(buffers, list) and buffers and isinstance(buffers[0], dict) and "uri" not in buffers[0]:
        buffers[0]["uri"] = "data:application/octet-stream;base64," + __import__("base64").b64encode(
            binary).decode()
    return "mesh.gltf", draw(byte_damage(json.dumps(doc).encode()))


mesh_files = st.one_of(obj_files(), ply_files(), gltf_files())


def _good_ovoxel_arrays() -> dict[str, np.ndarray]:
    from backend.ovoxel.io import FORMAT_NAME, FORMAT_VERSION

    return {"format": np.array(FORMAT_NAME), "version": np.array(FORMAT_VERSION, np.int64),
            "resolution": np.array(64, np.int64), "aabb": np.array([[-0.5] * 3, [0.5] * 3]),
            "coords": np.array([[1, 2, 3], [4, 5, 6]], np.int32),
            "dual_vertices": np.full((2, 3), 0.5, np.float32), "intersected": np.array([1, 6], np.uint8)}


array_values = st.one_of(
    st.sampled_from([np.array(3), np.array("ovoxel"), np.array([]), np.zeros((2, 3), np.int64) + 2**32,
                     np.full((2, 3), np.nan, np.float32), np.array([[0, 0, 0], [-1, 5, 70]]),
                     np.zeros((5, 2)), np.array([1.5, 2.5]), np.array(["a", "b"]), np.zeros((0, 3)),
                     np.array(2**40), np.array(-1), np.ones((2, 3), bool)]),
    st.integers(-(2**31), 2**31).map(np.array))


@st.composite
def ovoxel_files(draw) -> tuple[str, bytes]:
    arrays = _good_ovoxel_arrays()
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(sorted(arrays) + ["attributes", "attr_layout", "source_center",
                                                      "source_scale", "source_up", "split_weight"]))
        if draw(st.booleans()) and key in arrays:
            del arrays[key]
        else:
            arrays[key] = draw(array_values)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays) if draw(st.booleans()) else np.savez_compressed(buffer, **arrays)
    return "voxels.npz", draw(byte_damage(buffer.getvalue()))


IMAGE_MODES = ("L", "LA", "RGB", "RGBA", "P", "I;16", "1", "F", "I", "CMYK")
IMAGE_FORMATS = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP", "tif": "TIFF", "gif": "GIF", "bmp": "BMP"}


@st.composite
def image_files(draw) -> tuple[str, bytes]:
    w, h = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    mode = draw(st.sampled_from(IMAGE_MODES))
    seed = draw(st.integers(0, 2**32 - 1))
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 4), dtype=np.uint8)
    if draw(st.booleans()):  # a transparent border around an opaque middle, as real inputs have
        pixels[..., 3] = 0
        pixels[h // 4: h - h // 4, w // 4: w - w // 4, 3] = draw(st.sampled_from([255, 254, 204, 1]))
    img = Image.fromarray(pixels, "RGBA")
    try:
        img = img.convert(mode)
    except ValueError:
        img = img.convert("RGB")
    suffix = draw(st.sampled_from(sorted(IMAGE_FORMATS)))
    buffer = io.BytesIO()
    try:
        img.save(buffer, format=IMAGE_FORMATS[suffix])
    except (OSError, ValueError, KeyError):  # a mode the format cannot store
        buffer = io.BytesIO()
        img.convert("RGBA" if suffix in ("png", "webp", "tif") else "RGB").save(buffer, IMAGE_FORMATS[suffix])
    data = buffer.getvalue()
    if draw(st.integers(0, 9)) == 0:  # a header announcing a huge picture
        data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(
            ">IIBBBBB", draw(st.integers(0, 2**31)), draw(st.integers(0, 2**31)), 8, 6, 0, 0, 0) + b"\0" * 4
        suffix = "png"
    return f"picture.{suffix}", draw(byte_damage(data))


# --- protocol lines --------------------------------------------------------------------------

hostile_text = st.one_of(st.text(max_size=20), st.sampled_from(
    ["\ud800", "a\udfffb", "../../X", "/abs/name", "..", ".", "", "con:", "x" * 300, "a\x00b", "é" * 150]))


@st.composite
def protocol_lines(draw, files: dict[str, str], out_dir: str) -> bytes:
    """One line to ``serve``: random bytes, random JSON, or a request with hostile values.

    ``files`` maps roles (``image``, ``mesh``, ``bad_image``, ``bad_mesh``, ``outside``) to
    paths the requests may name; ``out_dir`` is the folder jobs may write into.
    """
    kind = draw(st.sampled_from(["bytes", "json", "request", "request", "request"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300)).replace(b"\n", b" ")
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    plain_id = st.text("abcdefghij0123456789-", min_size=1, max_size=12)
    request_id = draw(plain_id if draw(st.integers(0, 9)) < 7 else st.one_of(hostile_text, json_scalars))
    kind = draw(st.sampled_from(["generate", "retexture", "status", "cancel", "hello", "load", "bogus"]))
    path = st.one_of(st.sampled_from(sorted(files.values())), hostile_text)
    output = st.one_of(st.just(out_dir), st.sampled_from([out_dir + "/sub", out_dir + "/../escape",
                                                          "relative/out", files["image"], ""]), hostile_text)
    body: dict = {"type": kind, "id": request_id}
    if kind == "generate":
        body.update(images=draw(st.lists(path, max_size=3)), output_dir=draw(output))
    elif kind == "retexture":
        body.update(mesh=draw(path), image=draw(path), output_dir=draw(output))
    elif kind == "cancel":
        body.update(job=draw(st.one_of(st.text(max_size=5), json_scalars)))
    elif kind == "hello":
        body.update(version=draw(st.one_of(st.integers(0, 3), json_scalars)))
    elif kind == "load":
        body.update(source=draw(st.one_of(st.sampled_from(sorted(files.values())), hostile_text)),
                    offline=True)
    if kind in ("generate", "retexture") and draw(st.booleans()):
        body["name"] = draw(st.one_of(hostile_text, st.sampled_from(["keep", "object", "a b.c"])))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):  # a stray or retyped field
        body[draw(st.sampled_from(["export", "seed", "texture", "num_samples", "extra", "type"]))] = \
            draw(json_values)
    return json.dumps(body, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
