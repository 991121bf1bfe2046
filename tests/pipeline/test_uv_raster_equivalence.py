"""The UV rasterizer's row spans give the same texels, in the same order, as whole bounding boxes.

The reference below is the earlier rasterizer: every texel centre in each triangle's bounding
box is a candidate for the edge-function test. The current one only enumerates, per texel
row, the centres within the triangle's span (plus a slack). Output must match exactly (face
ids and barycentric bits), which also checks that overlapping triangles still resolve to the
later face: on a packed atlas, on random triangles from sub-texel to texture size, on needles
and slivers, on edges that run through texel centres, and with UVs outside [0, 1].

The reference runs in one thread: its assignment with repeated targets (texel centres on
shared edges) left the winner to thread timing, which the current one resolves as "later
face wins" in any thread count.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.pipeline.export import raster
from backend.pipeline.export.raster import rasterize_uv
from backend.pipeline.export.uv import fast_unwrap
from tests.fixtures.meshes import uv_sphere


def _reference_rasterize(uvs, faces, height, width):
    p = uvs.double() * torch.tensor([width, height], dtype=torch.float64)
    tri = p[faces.long()]
    j0 = torch.ceil(tri[..., 0].amin(1) - 0.5).clamp(0, width - 1).long()
    j1 = torch.floor(tri[..., 0].amax(1) - 0.5).clamp(-1, width - 1).long()
    i0 = torch.ceil(tri[..., 1].amin(1) - 0.5).clamp(0, height - 1).long()
    i1 = torch.floor(tri[..., 1].amax(1) - 0.5).clamp(-1, height - 1).long()
    nx, ny = (j1 - j0 + 1).clamp_min(0), (i1 - i0 + 1).clamp_min(0)
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    area2 = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    count = torch.where(area2.abs() > 1e-12, nx * ny, torch.zeros_like(nx))
    face_img = torch.full((height * width,), -1, dtype=torch.int64)
    bary_img = torch.zeros((height * width, 3), dtype=torch.float32)
    f = torch.repeat_interleave(torch.arange(len(count)), count)
    offsets = torch.cumsum(count, 0) - count
    local = torch.arange(len(f)) - torch.repeat_interleave(offsets, count)
    jj = j0[f] + local % nx[f]
    ii = i0[f] + torch.div(local, nx[f], rounding_mode="floor")
    px = torch.stack([jj + 0.5, ii + 0.5], -1).double()
    t = tri[f]

    def edge(a, b):
        return (b[:, 0] - a[:, 0]) * (px[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (px[:, 0] - a[:, 0])

    a2 = area2[f]
    w0 = edge(t[:, 1], t[:, 2]) / a2
    w1 = edge(t[:, 2], t[:, 0]) / a2
    w2 = 1.0 - w0 - w1
    inside = (w0 >= -1e-9) & (w1 >= -1e-9) & (w2 >= -1e-9)
    flat = (ii * width + jj)[inside]
    face_img[flat] = f[inside]
    bary_img[flat] = torch.stack([w0, w1, w2], -1)[inside].float()
    return face_img.view(height, width), bary_img.view(height, width, 3)


def _assert_same(uvs: np.ndarray, faces: np.ndarray, height: int, width: int, **kwargs) -> torch.Tensor:
    u = torch.from_numpy(np.ascontiguousarray(uvs, np.float32))
    f = torch.from_numpy(np.asarray(faces, np.int64))
    face, bary = rasterize_uv(u, f, height, width, **kwargs)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref_face, ref_bary = _reference_rasterize(u, f, height, width)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(face, ref_face)
    assert torch.equal(bary.view(torch.int32), ref_bary.view(torch.int32))
    return face


def test_row_spans_match_bounding_boxes_on_a_packed_atlas():
    m = uv_sphere(rings=40, segments=80)
    v = m.vertices + np.random.default_rng(3).normal(0, 0.002, m.vertices.shape)
    uw = fast_unwrap(v, m.faces, texture_size=256)
    face = _assert_same(uw.uvs, uw.faces, 256, 256)
    assert 0.2 < (face >= 0).float().mean() < 0.9
    _assert_same(uw.uvs, uw.faces, 256, 256, chunk_texels=997)  # many chunks, rows split across none


@pytest.mark.parametrize("scale", [0.5, 3.0, 40.0, 400.0])  # triangle size in texels
def test_row_spans_match_bounding_boxes_on_random_overlapping_triangles(rng, scale):
    n, size = 3000, 128
    centre = rng.uniform(-0.1, 1.1, (n, 1, 2))  # some partly or wholly outside the texture
    uvs = (centre + rng.normal(0, scale / size, (n, 3, 2))).reshape(-1, 2)
    faces = np.arange(3 * n).reshape(-1, 3)
    face = _assert_same(uvs, faces, size, size + 37)
    assert (face >= 0).any()


def test_row_spans_match_on_needles_slivers_and_edges_through_texel_centres(rng):
    size = 64
    centres = (rng.integers(0, size, (400, 2)) + 0.5) / size  # exactly on texel centres
    tris = []
    for c in centres:
        d = rng.choice([0.0, 0.5, 1.0, 3.0, 17.0], 2) / size
        tris.append([c, c + [d[0], 0], c + [0, d[1]]])  # right angle, axis-aligned legs on centres
        tris.append([c, c + [d[0] + 1 / size, 0], c + [d[0], 0]])  # flat: no area
        tris.append([c, c + [30 / size, 1e-7], c + [30 / size, -1e-7]])  # needle along a row
        tris.append([c, c + [1e-6, 25 / size], c + [31 / size, 25 / size + 2e-6]])  # sliver
        tris.append([c + [0, 0.3 / size], c + [9 / size, 0.3 / size], c + [-4 / size, 6 / size]])
    uvs = np.asarray(tris, np.float64).reshape(-1, 2)
    faces = np.arange(len(uvs)).reshape(-1, 3)
    faces[1::2] = faces[1::2, ::-1]  # both windings
    face = _assert_same(uvs, faces, size, size)
    assert (face >= 0).sum() > 1000


def test_shared_texels_go_to_the_later_face_in_any_thread_count(rng):
    n, size = 20_000, 64  # many triangles on few texels: most texels are covered many times
    uvs = rng.uniform(0, 1, (n, 1, 2)) + rng.normal(0, 4 / size, (n, 3, 2))
    uvs = uvs.reshape(-1, 2).astype(np.float32)
    u, f = torch.from_numpy(uvs), torch.arange(3 * n).reshape(-1, 3)
    threads = torch.get_num_threads()
    try:
        results = []
        for count in (1, 2, 4):
            torch.set_num_threads(count)
            results.append(rasterize_uv(u, f, size, size))
    finally:
        torch.set_num_threads(threads)
    for face, bary in results[1:]:
        assert torch.equal(face, results[0][0]) and torch.equal(bary, results[0][1])
    assert torch.equal(results[0][0], _reference_face_serial(u, f, size))


def _reference_face_serial(u, f, size):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _reference_rasterize(u, f, size, size)[0]
    finally:
        torch.set_num_threads(threads)


def test_raster_writes_nothing_for_no_faces():
    face, bary = rasterize_uv(torch.zeros((3, 2)), torch.zeros((0, 3), dtype=torch.int64), 8, 8)
    assert (face == -1).all() and (bary == 0).all()
    assert raster.SPAN_SLACK_PX > 0
