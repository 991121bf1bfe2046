"""The code-made fixtures are what their names say (other tests rely on it)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.fixtures import images, meshes


def _edge_use(faces: np.ndarray) -> Counter:
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    return Counter(map(tuple, edges.tolist()))


def _directed_edges_unique(faces: np.ndarray) -> bool:
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return len({tuple(e) for e in directed.tolist()}) == len(directed)


@pytest.mark.parametrize("name", sorted(meshes.ALL_SHAPES))
def test_shapes_are_valid_and_inside_the_unit_cube(name):
    mesh = meshes.ALL_SHAPES[name]().validate()
    lo, hi = mesh.bounds()
    assert (lo >= -0.5).all() and (hi <= 0.5).all()


@pytest.mark.parametrize("make", [meshes.uv_sphere, meshes.box, meshes.shell_in_shell])
def test_closed_shapes_are_watertight_and_consistently_oriented(make):
    faces = make().faces
    assert set(_edge_use(faces).values()) == {2}
    assert _directed_edges_unique(faces)  # each edge is walked once in each direction


def test_closed_shapes_have_outward_normals():
    for mesh in (meshes.uv_sphere(), meshes.box(subdivisions=3)):
        v, f = mesh.vertices, mesh.faces
        tri = v[f]
        signed_volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6
        assert signed_volume > 0


def test_open_sheet_has_one_boundary_loop_of_the_expected_length():
    sheet = meshes.open_sheet(resolution=10)
    boundary = [e for e, n in _edge_use(sheet.faces).items() if n == 1]
    assert len(boundary) == 4 * 10


def test_nonmanifold_fan_has_exactly_one_edge_shared_by_three_quads():
    uses = _edge_use(meshes.nonmanifold_fan().faces)
    assert [e for e, n in uses.items() if n == 3] == [(0, 1)]


def test_textured_box_carries_uvs_material_and_a_transparent_region():
    mesh = meshes.textured_box().validate()
    (mat,) = mesh.materials
    assert mesh.uvs is not None and mesh.uvs.min() == 0 and mesh.uvs.max() == 1
    assert mat.alpha_mode == "BLEND"
    alpha = mat.base_color_texture[..., 3]
    assert alpha.min() == 0 and alpha.max() == 255
    assert set(np.unique(mat.metallic_roughness_texture[..., 2])) == {0, 255}


def test_images_have_the_advertised_modes(tmp_path):
    expected = {"rgba_transparent": "RGBA", "rgb_on_white": "RGB", "greyscale": "L",
                "sixteen_bit": "I;16", "exif_rotated": "RGB"}
    for name, make in images.ALL_IMAGES.items():
        with Image.open(make(tmp_path / f"{name}.{'jpg' if name == 'exif_rotated' else 'png'}")) as img:
            assert img.mode == expected[name], name


def test_exif_rotated_image_shows_red_on_top_once_oriented(tmp_path):
    with Image.open(images.exif_rotated(tmp_path / "r.jpg")) as img:
        assert img.size == (120, 80)
        upright = np.asarray(ImageOps.exif_transpose(img))
    assert upright.shape[:2] == (120, 80)
    top, bottom = upright[:40].mean((0, 1)), upright[-40:].mean((0, 1))
    assert top[0] > 150 > top[2] and bottom[2] > 150 > bottom[0]
