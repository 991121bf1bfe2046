"""Rasterizer vs brute force, closest points, dilation, and a full generated-asset export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from backend.geometry.topology import drop_bad_faces
from backend.pipeline.api import ExportOptions
from backend.pipeline.export import SurfaceProjector, dilate, export_generated, rasterize_uv
from backend.pipeline.export.bake import closest_point_on_triangles
from backend.pipeline.export.material import pack_textures
from backend.pipeline.export.mesh_ops import weld
from backend.pipeline.export.uv import _shelf_pack, fast_unwrap
from tests.fixtures.meshes import uv_sphere


def _brute_force(uvs, faces, h, w):
    face = np.full((h, w), -1)
    bary = np.zeros((h, w, 3))
    for fi, (a, b, c) in enumerate(faces):
        pa, pb, pc = uvs[a] * [w, h], uvs[b] * [w, h], uvs[c] * [w, h]
        m = np.array([[pa[0] - pc[0], pb[0] - pc[0]], [pa[1] - pc[1], pb[1] - pc[1]]])
        if abs(np.linalg.det(m)) < 1e-12:
            continue
        for i in range(h):
            for j in range(w):
                l0, l1 = np.linalg.solve(m, np.array([j + 0.5, i + 0.5]) - pc)
                if min(l0, l1, 1 - l0 - l1) >= 0:
                    face[i, j] = fi
                    bary[i, j] = (l0, l1, 1 - l0 - l1)
    return face, bary


def test_rasterizer_matches_brute_force(rng):
    uvs = rng.random((30, 2))
    faces = rng.integers(0, 30, (12, 3))
    h, w = 23, 31
    face, bary = rasterize_uv(torch.tensor(uvs), torch.tensor(faces), h, w, chunk_texels=97)
    ref_face, ref_bary = _brute_force(uvs, faces, h, w)
    assert (face.numpy() == ref_face).all()
    np.testing.assert_allclose(bary.numpy(), ref_bary, atol=1e-6)
    assert (ref_face >= 0).sum() > 50  # the test covers something


def test_rasterizer_covers_a_full_quad_exactly_once():
    uvs = torch.tensor([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    face, bary = rasterize_uv(uvs, faces, 16, 16)
    assert (face >= 0).all()
    assert torch.allclose(bary.sum(-1), torch.ones(16, 16))
    # Position reconstructed from barycentrics equals the texel centre.
    pts = (uvs[faces[face]] * bary[..., None].double()).sum(-2)
    jj, ii = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="xy")
    assert torch.allclose(pts, torch.stack([(jj + 0.5) / 16, (ii + 0.5) / 16], -1).double(), atol=1e-6)


@pytest.mark.gpu
def test_nvdiffrast_rasterizer_agrees_with_ours_on_a_packed_atlas():
    pytest.importorskip("nvdiffrast.torch")
    from backend.pipeline.export.raster import nvdiffrast_available, rasterize_uv_nvdiffrast

    assert nvdiffrast_available(), "nvdiffrast is installed but its plugin does not load (see the log)"
    m = uv_sphere(rings=32, segments=64)
    uw = fast_unwrap(m.vertices, m.faces, texture_size=512)
    uvs, faces = torch.from_numpy(uw.uvs), torch.from_numpy(uw.faces)
    ours, _ = rasterize_uv(uvs.cuda(), faces.cuda(), 512, 512)
    theirs, bary = rasterize_uv_nvdiffrast(uvs, faces, 512, 512)
    covered = (ours >= 0).sum().item()
    # Texel centres exactly on shared edges may go to either face; nothing else may differ.
    assert covered > 0.3 * 512 * 512
    assert (ours != theirs).sum().item() < 0.01 * covered
    assert torch.allclose(bary[theirs >= 0].sum(-1), torch.ones(1, device=bary.device), atol=1e-5)


def test_closest_point_on_triangle_against_dense_sampling(rng):
    a, b, c = rng.normal(size=(3, 3))
    p = rng.normal(size=(200, 3)) * 2
    got = closest_point_on_triangles(p, *(np.broadcast_to(v, p.shape) for v in (a, b, c)))
    s, t = np.meshgrid(np.linspace(0, 1, 301), np.linspace(0, 1, 301))
    keep = s + t <= 1
    samples = a + np.outer(s[keep], b - a) + np.outer(t[keep], c - a)  # [S, 3]
    best = np.sqrt(((p[:, None] - samples[None]) ** 2).sum(-1)).min(1)
    d = np.linalg.norm(got - p, axis=1)
    assert (d <= best + 1e-9).all() and (d >= best - 0.02).all()


def test_projector_moves_points_onto_the_sphere():
    m = uv_sphere(radius=0.4)
    proj = SurfaceProjector(m.vertices, m.faces)
    dirs = np.random.default_rng(1).normal(size=(500, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    out = proj.project(dirs * 0.41)
    r = np.linalg.norm(out, axis=1)
    assert np.abs(r - 0.4).max() < 0.004  # on the polygonal sphere (chord error ~ 0.4 (1 - cos(pi/64)))


def test_dilation_fills_from_the_nearest_covered_texel():
    img = np.zeros((9, 9, 1), np.float32)
    mask = np.zeros((9, 9), bool)
    img[2, 2], mask[2, 2] = 1.0, True
    img[6, 6], mask[6, 6] = 5.0, True
    out = dilate(img, mask, rings=1)
    assert out[2, 2, 0] == 1.0 and out[6, 6, 0] == 5.0
    assert out[1, 1, 0] == 1.0 and out[7, 7, 0] == 5.0  # first ring: neighbour average
    assert out[0, 0, 0] == 1.0 and out[8, 8, 0] == 5.0  # beyond: nearest texel
    assert np.isfinite(out).all()


def test_dilation_rings_match_a_plain_numpy_reference(rng):
    h, w, c = 37, 23, 4
    img = rng.random((h, w, c)).astype(np.float32)
    mask = rng.random((h, w)) < 0.15
    ref, known = np.where(mask[..., None], img, 0).astype(np.float64), mask.copy()
    for _ in range(2):  # two rings: each unknown texel with known neighbours takes their mean
        new, grown = ref.copy(), known.copy()
        for i in range(h):
            for j in range(w):
                if known[i, j]:
                    continue
                nb = [(y, x) for y in range(i - 1, i + 2) for x in range(j - 1, j + 2)
                      if 0 <= y < h and 0 <= x < w and known[y, x]]
                if nb:
                    new[i, j] = np.mean([ref[y, x] for y, x in nb], axis=0)
                    grown[i, j] = True
        ref, known = new, grown
    out = dilate(img, mask, rings=2)
    np.testing.assert_allclose(out[known], ref[known], rtol=1e-6, atol=1e-6)
    assert np.isfinite(out).all() and out.dtype == np.float32


def test_weld_merges_coincident_vertices_and_drops_collapsed_and_repeated_faces(rng):
    n = 400
    v = rng.integers(0, 5, (n, 3)) * 0.1 + rng.normal(0, 1e-10, (n, 3))  # 125 distinct points
    f = rng.integers(0, n, (900, 3))
    wv, wf = weld(v, f)
    # Brute force: a vertex's group is its rounded position; a face survives if its three
    # groups differ and no earlier face had the same group set.
    key = [tuple(np.round(p, 7)) for p in v]
    seen, expect = set(), []
    for face in f:
        g = [key[i] for i in face]
        if len(set(g)) == 3 and frozenset(g) not in seen:
            seen.add(frozenset(g))
            expect.append(g)
    assert len(wv) == len(set(key))
    assert [[tuple(np.round(wv[i], 7)) for i in face] for face in wf] == expect
    first = {}
    for i, k in enumerate(key):
        first.setdefault(k, v[i])
    assert all((first[tuple(np.round(p, 7))] == p).all() for p in wv)  # first original position kept
    assert drop_bad_faces(np.zeros((0, 3), np.int64)).shape == (0, 3)


def test_fast_unwrap_charts_do_not_overlap():
    m = uv_sphere(rings=24, segments=48)
    uw = fast_unwrap(m.vertices, m.faces, texture_size=256)
    assert uw.uvs.min() >= 0 and uw.uvs.max() <= 1
    assert (m.vertices[uw.vmap][uw.faces] == m.vertices[m.faces]).all()  # same triangles
    face, _ = rasterize_uv(torch.from_numpy(uw.uvs), torch.from_numpy(uw.faces), 256, 256)
    # Every face's UV area is positive (no mirrored or collapsed triangles) ...
    t = uw.uvs[uw.faces].astype(np.float64)
    e1, e2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    assert (np.abs(area) > 0).all()
    # ... and UV-space coverage equals the summed triangle areas (no overlaps), within raster error.
    assert abs((face >= 0).float().mean().item() - np.abs(area).sum() / 2) < 0.02


def test_alpha_mode_follows_the_alpha_map():
    attrs = np.full((8, 8, 6), 0.5, np.float32)
    attrs[..., 5] = 1.0
    mask = np.ones((8, 8), bool)
    opaque = pack_textures(attrs, mask)
    assert opaque.alpha_mode == "OPAQUE" and opaque.base_color.shape == (8, 8, 3)
    attrs[:4, :, 5] = 0.2
    blend = pack_textures(attrs, mask)
    assert blend.alpha_mode == "BLEND" and blend.base_color.shape == (8, 8, 4)
    assert blend.base_color[0, 0, 3] == 51 and blend.metallic_roughness[0, 0].tolist() == [0, 128, 128]
    assert pack_textures(attrs, mask, "MASK").alpha_mode == "MASK"


def _colour_field(points):
    """Attributes by position: red grows with x, metallic 0.25, roughness 0.75, alpha by z."""
    out = np.zeros((len(points), 6), np.float32)
    out[:, 0] = np.clip(points[:, 0] + 0.5, 0, 1)
    out[:, 1] = 0.5
    out[:, 2] = 0.1
    out[:, 3] = 0.25
    out[:, 4] = 0.75
    out[:, 5] = np.where(points[:, 2] > 0.2, 0.3, 1.0)
    return out


@pytest.mark.parametrize("unwrap, fmt", [("fast", "png"), ("xatlas", "webp")])
def test_export_generated_writes_glb_and_direct_result(tmp_path, unwrap, fmt):
    from backend.meshio import read_gltf

    m = uv_sphere(radius=0.4, rings=32, segments=64)
    opts = ExportOptions(texture_size=128, faces=1500, unwrap=unwrap, texture_format=fmt)
    res = export_generated(m.vertices, m.faces, _colour_field, tmp_path, "ball", opts)
    assert res.faces <= 1500 and res.alpha_mode == "BLEND"
    glb = read_gltf(res.glb)
    mat = glb.materials[0]
    assert mat.alpha_mode == "BLEND" and mat.base_color_texture.shape == (128, 128, 4)
    assert mat.metallic_roughness_texture is not None
    # Y-up in the file: the sphere's +Z pole (transparent region) is at +Y.
    top = glb.vertices[:, 1].argmax()
    uv = glb.uvs[top]
    tex = mat.base_color_texture
    texel = tex[min(int(uv[1] * 128), 127), min(int(uv[0] * 128), 127)]
    assert abs(int(texel[3]) - 77) <= 3  # alpha 0.3
    mr = mat.metallic_roughness_texture
    assert abs(int(np.median(mr[..., 2])) - 64) <= 1 and abs(int(np.median(mr[..., 1])) - 191) <= 1
    # Red follows x across the surface (baked through the UVs).
    v_x = glb.vertices[:, 0]
    for idx in (v_x.argmin(), v_x.argmax()):
        u, v = glb.uvs[idx]
        r = tex[min(int(v * 128), 127), min(int(u * 128), 127), 0]
        assert abs(int(r) - (v_x[idx] + 0.5) * 255) < 20
    used_webp = b"EXT_texture_webp" in res.glb.read_bytes()[:4096]
    assert used_webp == (fmt == "webp")
    doc = json.loads(res.direct.read_text())
    assert doc["alpha_mode"] == "BLEND" and doc["mesh"] == "ball.npz"
    arrays = np.load(res.direct.parent / "ball.npz")
    assert arrays["positions"].shape[0] == glb.num_vertices
    # Direct result is Z-up with v measured from the bottom.
    np.testing.assert_allclose(arrays["positions"][:, 2], glb.vertices[:, 1], atol=1e-6)
    np.testing.assert_allclose(arrays["uvs"][:, 1], 1 - glb.uvs[:, 1], atol=1e-6)


def _boxes_overlap(offsets: np.ndarray, boxes: np.ndarray) -> bool:
    """True if any two axis-aligned boxes (corner, size) intersect (sweep over x)."""
    order = np.argsort(offsets[:, 0])
    lo, hi = offsets[order], offsets[order] + boxes[order]
    for i in range(len(lo)):
        j = i + 1
        while j < len(lo) and lo[j, 0] < hi[i, 0]:
            if lo[j, 1] < hi[i, 1] and lo[i, 1] < hi[j, 1]:
                return True
            j += 1
    return False


@pytest.mark.parametrize("count", [1, 37, 800])
def test_shelf_pack_places_every_chart_inside_without_overlap(count):
    rng = np.random.default_rng(count)
    size = rng.random((count, 2)) * rng.choice([0.01, 1.0], size=(count, 1))  # mixed tiny and large
    offsets, scale = _shelf_pack(size, 256, padding=2, fill=1.0)
    extent = np.ceil(size * scale)  # the texels each chart covers, padding excluded
    assert scale > 0
    assert (offsets >= 2).all() and (offsets + extent <= 256 - 2).all()
    assert not _boxes_overlap(offsets - 2.5, extent + 5)  # padded boxes are disjoint


def test_shelf_pack_lowers_padding_for_many_charts_and_refuses_impossible_counts(caplog):
    size = np.full((5_000, 2), 1e-3)  # 5k charts: 5x5-texel boxes do not fit 256^2 (51^2), 3x3 do (85^2)
    with caplog.at_level("WARNING"):
        offsets, scale = _shelf_pack(size, 256, padding=2, fill=1.0)
    assert "using 1 px" in caplog.text
    assert not _boxes_overlap(offsets - 1.5, np.ceil(size * scale) + 3)
    with pytest.raises(ValueError, match="cannot pack 70000 UV charts into a 256 px texture"):
        _shelf_pack(np.full((70_000, 2), 1e-3), 256, padding=2, fill=1.0)  # > 256^2 texels


def test_fast_unwrap_of_a_noisy_surface_finishes_inside_the_texture():
    m = uv_sphere(rings=40, segments=80)
    rng = np.random.default_rng(3)
    v = m.vertices + rng.normal(0, 0.02, m.vertices.shape)  # normals point anywhere: many charts
    uw = fast_unwrap(v, m.faces, texture_size=256)
    assert uw.uvs.min() >= 0 and uw.uvs.max() <= 1
    assert (v[uw.vmap][uw.faces] == v[m.faces]).all()
