"""The export's fast paths give the same bits as the plain formulations they replaced.

Each reference below is the earlier implementation, kept verbatim in spirit: dense whole-image
dilation in torch, the ``[M, 3, 3]`` texel-point reduction. The fast versions must match them
exactly (not within a tolerance) on a realistic atlas, so any change of summation order or
neighbourhood shows up here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from backend.pipeline.export import dilate, rasterize_uv
from backend.pipeline.export.bake import bake_points, texel_points
from backend.pipeline.export.material import to_u8
from backend.pipeline.export.uv import fast_unwrap
from tests.fixtures.meshes import uv_sphere


def _dense_dilate(image: np.ndarray, mask: np.ndarray, rings: int = 4) -> np.ndarray:
    """Whole-image dilation: every ring sums the 3x3 neighbourhood of all texels (torch, float32)."""
    if mask.all() or not mask.any():
        return image.copy()
    known = torch.from_numpy(np.ascontiguousarray(mask))
    img = torch.from_numpy(np.ascontiguousarray(image, np.float32))
    img = torch.where(known[..., None], img, 0.0)
    for _ in range(rings):
        x = torch.cat([img, known[..., None].float()], -1)
        h, w = x.shape[:2]
        p = torch.nn.functional.pad(x, (0, 0, 1, 1, 1, 1))
        rows = p[:, :w] + p[:, 1:w + 1] + p[:, 2:w + 2]
        sums = rows[:h] + rows[1:h + 1] + rows[2:h + 2]
        total, count = sums[..., :-1], sums[..., -1:]
        grow = ~known & (count[..., 0] > 0)
        if not grow.any():
            break
        img = torch.where(grow[..., None], total / count.clamp(min=1.0), img)
        known = known | grow
    out, known_np = img.numpy(), known.numpy()
    if not known_np.all():
        _, (ri, ci) = ndimage.distance_transform_edt(~known_np, return_indices=True)
        out = out[ri, ci]
    return out.astype(image.dtype)


def _texel_points_reference(vertices, faces, face_img, bary_img):
    mask = face_img >= 0
    f = faces[face_img[mask]]
    w = bary_img[mask].astype(np.float64)
    return (vertices[f] * w[..., None]).sum(1), mask


@pytest.fixture(scope="module")
def atlas():
    """A noisy sphere's fast-unwrapped atlas at 256^2: many charts, gaps of a few texels, borders."""
    m = uv_sphere(rings=40, segments=80)
    v = m.vertices + np.random.default_rng(3).normal(0, 0.002, m.vertices.shape)
    uw = fast_unwrap(v, m.faces, texture_size=256)
    face, bary = rasterize_uv(torch.from_numpy(uw.uvs), torch.from_numpy(uw.faces), 256, 256)
    return v[uw.vmap], uw.faces, face.numpy(), bary.numpy()


@pytest.mark.parametrize("rings", [0, 1, 4, 9])
def test_dilation_matches_the_dense_version_bit_for_bit_on_an_atlas(atlas, rings):
    _, _, face, _ = atlas
    mask = face >= 0
    assert 0.2 < mask.mean() < 0.9
    img = np.random.default_rng(rings).random((*mask.shape, 6)).astype(np.float32)
    img[~mask] = np.nan  # values outside the mask must never be read
    ref = _dense_dilate(img, mask, rings)
    out = dilate(img, mask, rings)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert np.array_equal(out.view(np.uint32), ref.view(np.uint32))
    assert np.array_equal(out[mask], img[mask])


def test_dilation_matches_the_dense_version_on_random_masks_and_borders(rng):
    for trial in range(60):
        h, w = (int(x) for x in rng.integers(1, 40, 2))
        c, rings = int(rng.integers(1, 5)), int(rng.integers(0, 6))
        dtype = np.float32 if trial % 2 else np.float64
        img = rng.normal(size=(h, w, c)).astype(dtype)
        mask = rng.random((h, w)) < rng.random() * 0.4
        if trial % 3 == 0:  # a full border row/column: rings run into the image edge
            mask[0] = mask[:, -1] = True
        out, ref = dilate(img, mask, rings), _dense_dilate(img, mask, rings)
        assert out.dtype == ref.dtype and np.array_equal(out, ref), (trial, h, w, rings)


def test_texel_points_match_the_plain_reduction_bit_for_bit(atlas):
    v, faces, face, bary = atlas
    pts, mask = texel_points(v, faces, face, bary)
    ref, ref_mask = _texel_points_reference(v, faces, face, bary)
    assert pts.flags.c_contiguous and pts.dtype == np.float64
    assert np.array_equal(mask, ref_mask) and np.array_equal(pts, ref)
    pts32, _ = texel_points(v.astype(np.float32), faces, face, bary)  # float32 vertices promote alike
    assert np.array_equal(pts32, _texel_points_reference(v.astype(np.float32), faces, face, bary)[0])
    empty = np.full_like(face, -1)
    assert texel_points(v, faces, empty, bary)[0].shape == (0, 3)


def test_bake_points_fill_matches_scatter_then_dense_dilation(atlas):
    _, _, face, _ = atlas
    mask = face >= 0
    vals = np.random.default_rng(5).random((int(mask.sum()), 6)).astype(np.float32)
    tex, out_mask = bake_points(np.zeros((len(vals), 3)), mask, lambda p: vals)
    ref = np.zeros((*mask.shape, 6), np.float32)
    ref[mask] = vals
    assert out_mask is mask and np.array_equal(tex, _dense_dilate(ref, mask))
    none = np.zeros_like(mask)
    assert not bake_points(np.zeros((0, 3)), none, lambda p: np.zeros((0, 6)))[0].any()


def test_to_u8_matches_the_one_expression_form(rng):
    x = rng.random((64, 64, 6)) * 1.4 - 0.2  # out of range on both sides
    x.reshape(-1)[:4] = [0.5 / 255, 1.5 / 255, 254.5 / 255, 1.0]  # ties round to even
    for dtype in (np.float32, np.float64):
        xd = x.astype(dtype)
        assert np.array_equal(to_u8(xd), np.clip(np.rint(xd * 255.0), 0, 255).astype(np.uint8))


def _colours(points: np.ndarray) -> np.ndarray:
    """Smooth attributes by position, with alpha below one on part of the surface (BLEND)."""
    p = np.asarray(points, np.float64)
    out = np.concatenate([np.clip(p + 0.5, 0, 1), np.clip(p[:, :2] * 2 + 0.5, 0, 1),
                          np.where(p[:, 2:] > 0.2, 0.4, 1.0)], 1)
    return out.astype(np.float32)


@pytest.mark.parametrize("faces", [1_500, 100_000])  # decimated (with a normal map) and not
def test_export_files_do_not_depend_on_the_worker_threads(tmp_path, faces):
    from backend.pipeline.api import ExportOptions
    from backend.pipeline.export import export_generated

    m = uv_sphere(radius=0.4, rings=32, segments=64)
    files = {}
    for workers in (0, 3):
        opts = ExportOptions(texture_size=128, faces=faces, unwrap="fast", threads=workers)
        res = export_generated(m.vertices, m.faces, _colours, tmp_path / str(workers), "ball", opts)
        files[workers] = {p.relative_to(tmp_path / str(workers)): p.read_bytes()
                          for p in sorted((tmp_path / str(workers)).rglob("*")) if p.is_file()}
        assert res.alpha_mode == "BLEND"
    assert files[0].keys() == files[3].keys() and len(files[0]) >= 4
    assert all(files[0][k] == files[3][k] for k in files[0])
    # result.json (compared above) holds the QA report: the one made beside the bake equals the
    # one made in line.
    doc = json.loads(files[3][next(k for k in files[3] if k.name == "result.json")])
    assert doc["qa"]["triangles"] == res.faces and doc["qa"]["shells"] >= 1


def test_negative_export_threads_are_refused_naming_the_setting():
    from backend.pipeline.api import ExportOptions, PipelineError

    with pytest.raises(PipelineError, match="export threads") as err:
        ExportOptions(threads=-1)
    assert "ExportOptions.threads" in str(err.value.hint)
