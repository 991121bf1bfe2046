"""The PBR volume of textured_box() read back at the surface through the trilinear lookup.

Tolerance: the checker cells are 8 texels (0.075 world units = 19 voxels at 256) wide;
points at least 3 voxels from a cell border or box edge see a single texel colour in
all 8 trilinear neighbours, so only uint8 quantisation (1/255) and float error remain:
asserted max error 0.02 on every channel.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.ovoxel import mesh_to_ovoxel, sample_attributes
from tests.fixtures.meshes import checker_texture, textured_box

RES = 256
HALF = 0.3


@pytest.fixture(scope="module")
def volume():
    return mesh_to_ovoxel(textured_box(), RES)


def _expected(uv: np.ndarray) -> np.ndarray:
    tex = checker_texture().astype(np.float64) / 255
    col = tex[(uv[:, 1] * 64).astype(int), (uv[:, 0] * 64).astype(int)]
    metal = (uv[:, 0] < 0.5).astype(float)
    return np.concatenate([col[:, :3], metal[:, None], np.full((len(uv), 1), 64 / 255), col[:, 3:4]], 1)


def _face_points(rng, n: int = 3000):
    """Points on the +x side; that side's UV is u = (y + h) / 2h, v = 1 - (z + h) / 2h."""
    margin = 3.0 / RES
    yz = rng.uniform(-HALF + margin, HALF - margin, size=(n, 2))
    uv = np.stack([(yz[:, 0] + HALF) / (2 * HALF), 1 - (yz[:, 1] + HALF) / (2 * HALF)], 1)
    cell = uv * 8  # 8 checker cells
    keep = (np.abs(cell - np.round(cell)) * (2 * HALF / 8) > margin).all(axis=1)
    pts = np.stack([np.full(n, HALF), yz[:, 0], yz[:, 1]], 1)
    return pts[keep], uv[keep]


def test_surface_attributes_match_material(volume, rng):
    pts, uv = _face_points(rng)
    got = sample_attributes(volume.coords, volume.attributes, RES, pts)
    err = np.abs(got - _expected(uv))
    assert err.max() < 0.02, err.max(axis=0)


def test_torch_lookup_matches_numpy(volume, rng):
    pts, _ = _face_points(rng, 500)
    a = sample_attributes(volume.coords, volume.attributes, RES, pts)
    b = sample_attributes(torch.from_numpy(volume.coords), torch.from_numpy(volume.attributes), RES,
                          torch.from_numpy(pts.astype(np.float32)))
    np.testing.assert_allclose(b.numpy(), a, atol=1e-5)


def test_lookup_renormalises_and_ignores_missing():
    coords = np.array([[10, 10, 10]], dtype=np.int32)
    attrs = np.array([[0.2, 0.4, 0.6, 1.0, 0.5, 1.0]], dtype=np.float32)
    near = (np.array([[10.9, 10.2, 10.5], [10.5, 10.5, 10.5]]) + 0.0) / 64 - 0.5
    far = np.array([[0.4, 0.4, 0.4]])
    got = sample_attributes(coords, attrs, 64, np.concatenate([near, far]))
    np.testing.assert_allclose(got[:2], np.repeat(attrs, 2, 0), atol=1e-6)
    assert (got[2] == 0).all()


def test_shape_and_material_voxel_sets_are_identical(volume):
    shape_only = mesh_to_ovoxel(textured_box(), RES, attributes=False)
    np.testing.assert_array_equal(shape_only.coords, volume.coords)


def test_alpha_modes():
    mesh = textured_box()
    mesh.materials[0].alpha_mode = "OPAQUE"
    assert (mesh_to_ovoxel(mesh, 64).attributes[:, 5] == 1).all()
    mesh.materials[0].alpha_mode = "MASK"
    a = mesh_to_ovoxel(mesh, 64).attributes[:, 5]
    # each sample is stepped at the cutoff; only voxels straddling the hole's border average
    assert 0 in a and 1 in a and np.isin(a, (0.0, 1.0)).mean() > 0.9
