"""The normal map baked from the dense surface onto the decimated mesh, and its tangent frame."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from backend.pipeline.api import ExportOptions
from backend.pipeline.export import export_generated, rasterize_uv
from backend.pipeline.export.normal_map import DenseSurface, bake_normal_map
from backend.pipeline.export.tangents import vertex_tangents
from tests.fixtures.meshes import uv_sphere

# Decoded normals vs the dense sphere's (99th percentile of texels): 8-bit quantisation alone is up
# to ~0.3 degrees, the dense sphere's facets (64 rings) and the PNG's rounding after dilation add a
# little more (measured: median 0.18, 99th percentile 0.33, max 0.72 degrees).
NORMAL_TOLERANCE_DEG = 1.0


def _grid(n: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A flat ``n x n`` vertex grid on z = 0 over [0, 1]^2 and its triangles (counter-clockwise, +Z)."""
    x, y = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n), indexing="xy")
    verts = np.stack([x.ravel(), y.ravel(), np.zeros(n * n)], 1)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    return verts, np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])


@pytest.mark.parametrize("mirrored", [False, True])
def test_tangent_points_along_u_and_w_says_whether_the_uv_map_mirrors(mirrored):
    verts, faces = _grid()
    # glTF UVs: v runs down the image, so "up the image" (t = 1 - v) is +y here.
    uvs = np.stack([1 - verts[:, 0] if mirrored else verts[:, 0], 1 - verts[:, 1]], 1)
    normals = np.tile([0.0, 0.0, 1.0], (len(verts), 1))
    tangents = vertex_tangents(verts, faces, uvs, normals)
    expected_t = [-1.0, 0.0, 0.0] if mirrored else [1.0, 0.0, 0.0]
    np.testing.assert_allclose(tangents[:, :3], np.tile(expected_t, (len(verts), 1)), atol=1e-6)
    # glTF: bitangent = w * cross(normal, tangent) must be +y (the direction of increasing t).
    bitangent = tangents[:, 3:] * np.cross(normals, tangents[:, :3])
    np.testing.assert_allclose(bitangent, np.tile([0.0, 1.0, 0.0], (len(verts), 1)), atol=1e-6)


def test_tangents_are_orthogonal_to_curved_normals():
    m = uv_sphere(radius=0.4, rings=12, segments=24)
    normals = m.vertices / np.linalg.norm(m.vertices, axis=1, keepdims=True)
    uvs = np.random.default_rng(0).random((len(m.vertices), 2))
    t = vertex_tangents(m.vertices, m.faces, uvs, normals)
    np.testing.assert_allclose(np.linalg.norm(t[:, :3], axis=1), 1.0, atol=1e-5)
    assert np.abs((t[:, :3] * normals).sum(1)).max() < 1e-5
    assert set(np.unique(t[:, 3])) <= {-1.0, 1.0}


def _read_glb(path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    (json_len,) = struct.unpack_from("<I", data, 12)
    doc = json.loads(data[20:20 + json_len])
    bin_start = 20 + json_len + 8
    return doc, data[bin_start:]


def _accessor(doc: dict, blob: bytes, index: int) -> np.ndarray:
    acc = doc["accessors"][index]
    view = doc["bufferViews"][acc["bufferView"]]
    dtype = {5126: np.float32, 5123: np.uint16, 5125: np.uint32}[acc["componentType"]]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[acc["type"]]
    raw = blob[view["byteOffset"]:view["byteOffset"] + view["byteLength"]]
    return np.frombuffer(raw, dtype).reshape(acc["count"], width)


def _image(doc: dict, blob: bytes, texture: int) -> np.ndarray:
    view = doc["bufferViews"][doc["images"][doc["textures"][texture]["source"]]["bufferView"]]
    start = view["byteOffset"]
    return np.asarray(Image.open(io.BytesIO(blob[start:start + view["byteLength"]])))


def _flat_grey(points: np.ndarray) -> np.ndarray:
    out = np.full((len(points), 6), 0.5)
    out[:, 5] = 1.0
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip((_unit(a) * _unit(b)).sum(-1), -1.0, 1.0)))


@pytest.mark.slow
def test_hard_decimated_sphere_gets_the_dense_normals_back(tmp_path):
    size = 256
    dense = uv_sphere(radius=0.4, rings=64, segments=128)  # ~16k faces, centred on the origin
    opts = ExportOptions(texture_size=size, faces=120, unwrap="xatlas")
    res = export_generated(dense.vertices, dense.faces, _flat_grey, tmp_path, "ball", opts)
    assert res.faces <= 120

    doc, blob = _read_glb(res.glb)
    prim = doc["meshes"][0]["primitives"][0]
    material = doc["materials"][prim["material"]]
    assert "normalTexture" in material
    attrs = prim["attributes"]
    pos = _accessor(doc, blob, attrs["POSITION"]).astype(np.float64)
    nrm = _accessor(doc, blob, attrs["NORMAL"]).astype(np.float64)
    tan = _accessor(doc, blob, attrs["TANGENT"]).astype(np.float64)
    uvs = _accessor(doc, blob, attrs["TEXCOORD_0"]).astype(np.float64)
    faces = _accessor(doc, blob, prim["indices"]).reshape(-1, 3).astype(np.int64)
    normal_img = _image(doc, blob, material["normalTexture"]["index"]).astype(np.float64)
    assert normal_img.shape == (size, size, 3)

    # The file's tangents point along increasing u, as the plain per-face UV derivative says (up to
    # the averaging over a vertex's faces, which turn by up to ~30 degrees on a 120-face sphere; a
    # swapped or mirrored frame would be 90 or 180 degrees off).
    e1, e2 = pos[faces[:, 1]] - pos[faces[:, 0]], pos[faces[:, 2]] - pos[faces[:, 0]]
    d1, d2 = uvs[faces[:, 1]] - uvs[faces[:, 0]], uvs[faces[:, 2]] - uvs[faces[:, 0]]
    det = d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1]
    dp_du = (e1 * d2[:, 1:] - e2 * d1[:, 1:]) / det[:, None]
    face_n = _unit(nrm[faces].sum(1))
    dp_du -= face_n * (dp_du * face_n).sum(1, keepdims=True)
    corner_t = tan[faces][:, :, :3]  # [F, 3, 3]
    assert _angles_deg(corner_t, dp_du[:, None].repeat(3, 1)).max() < 45.0

    # Decode each covered texel as a glTF viewer does and compare with the dense sphere's normal
    # there (the radial direction through the texel's point).
    face_img, bary_img = (x.numpy() for x in rasterize_uv(torch.from_numpy(uvs), torch.from_numpy(faces),
                                                          size, size))
    inside = face_img >= 0
    # Texels at a chart's rim blend in the dilated fill when the PNG is filtered: use inner ones.
    inner = inside.copy()
    for shift, axis in ((1, 0), (-1, 0), (1, 1), (-1, 1)):
        inner &= np.roll(inside, shift, axis)
    f = faces[face_img[inner]]
    w = bary_img[inner].astype(np.float64)[..., None]
    point = (pos[f] * w).sum(1)
    n = _unit((nrm[f] * w).sum(1))
    tw = (tan[f] * w).sum(1)
    t = _unit(tw[:, :3] - n * (tw[:, :3] * n).sum(1, keepdims=True))
    b = np.sign(tw[:, 3:]) * np.cross(n, t)
    local = normal_img[inner] / 255.0 * 2.0 - 1.0
    decoded = local[:, :1] * t + local[:, 1:2] * b + local[:, 2:] * n
    radial = _unit(point)
    baked_error = _angles_deg(decoded, radial)
    flat_error = _angles_deg(n, radial)  # what the decimated mesh shows without the map
    assert inner.sum() > 0.2 * size * size
    # Decimation did flatten it (measured 95th percentile 5.7 degrees): the map must correct that.
    assert np.percentile(flat_error, 95) > 4 * NORMAL_TOLERANCE_DEG
    assert np.percentile(baked_error, 99) < NORMAL_TOLERANCE_DEG, np.percentile(baked_error, [50, 95, 99])

    # The direct result for Blender carries the same map.
    direct = json.loads(res.direct.read_text())
    normal_png = res.direct.parent / direct["textures"]["normal"]
    assert (np.asarray(Image.open(normal_png)) == normal_img).all()


def test_no_normal_map_when_turned_off_or_nothing_was_decimated(tmp_path):
    dense = uv_sphere(radius=0.4, rings=16, segments=32)
    off = ExportOptions(texture_size=64, faces=200, unwrap="fast", bake_normal_map=False)
    kept = ExportOptions(texture_size=64, faces=10_000, unwrap="fast")
    for name, opts in (("off", off), ("kept", kept)):
        res = export_generated(dense.vertices, dense.faces, _flat_grey, tmp_path, name, opts)
        doc, _ = _read_glb(res.glb)
        assert "normalTexture" not in doc["materials"][0]
        assert "TANGENT" not in doc["meshes"][0]["primitives"][0]["attributes"]
        assert "normal" not in json.loads(res.direct.read_text())["textures"]


def test_a_map_with_no_covered_texel_is_flat():
    verts, faces = _grid()
    normals = np.tile([0.0, 0.0, 1.0], (len(verts), 1))
    tangents = vertex_tangents(verts, faces, verts[:, :2], normals)
    empty = np.full((8, 8), -1)
    out = bake_normal_map(faces, normals, tangents, empty, np.zeros((8, 8, 3), np.float32),
                          DenseSurface.from_mesh(verts, faces), np.zeros((0, 3)), np.zeros(0, np.int64))
    assert out.dtype == np.uint8 and (out == [128, 128, 255]).all()
