"""Broken mesh files end in one MeshError naming the file and the cause, never another exception."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from backend.geometry import MeshError
from backend.meshio import build_glb, read_mesh
from tests.fixtures.mesh_files import (
    TRIANGLE_OBJ,
    glb_bytes,
    ply_header,
    triangle_glb_parts,
    triangle_mesh,
    triangle_ply,
)


def _doc_with(change) -> bytes:
    doc, binary = triangle_glb_parts()
    doc = copy.deepcopy(doc)
    change(doc)
    return glb_bytes(doc, binary)


def _dag(doc: dict, levels: int = 40) -> None:
    """Each node shows the next one twice: 2**levels instances of the mesh."""
    doc["nodes"] = [{"children": [i + 1, i + 1]} for i in range(levels)] + [{"mesh": 0}]
    doc["scenes"] = [{"nodes": [0]}]
    doc["scene"] = 0


CASES = {
    "vt_out_of_range.obj": (TRIANGLE_OBJ.replace("f 1/1/1 2/2/1 3/3/1", "f 1/9/1 2/2/1 3/3/1"),
                            "texture coordinate"),
    "vn_out_of_range.obj": (TRIANGLE_OBJ.replace("f 1/1/1 2/2/1 3/3/1", "f 1/1/7 2/2/1 3/3/1"), "normal"),
    "nan_uv.obj": (TRIANGLE_OBJ.replace("vt 0 0\n", "vt nan inf\n"), "NaN or infinite uvs"),
    "truncated.ply": (triangle_ply()[:-20], "truncated"),
    "unknown_type.ply": (ply_header(vertex_props=("float x", "quux y", "float z")) + bytes(60),
                         "unknown PLY property type 'quux'"),
    "no_xyz.ply": (ply_header("ascii", ("float a",)) + b"0\n0\n0\n3 0 1 2\n", "no x, y and z"),
    "huge_count.ply": (ply_header("ascii", vertices=10**12) + b"0 0 0\n", "truncated"),
    # a negative corner count made no progress through 2**40 announced faces (found by fuzz_long)
    "negative_corners.ply": (ply_header("ascii", (), vertices=0, faces=2**40) + b"-1 5 7\n", "truncated"),
    "huge_face_count.ply": (ply_header(faces=2**40) + bytes(36) + b"\x03" + bytes(12), "truncated"),
    "cut.glb": (build_glb(triangle_mesh())[:40], "truncated"),
    "no_meshes.glb": (_doc_with(lambda d: d.pop("meshes")), "no meshes"),
    "bad_mesh_index.glb": (_doc_with(lambda d: d["nodes"][0].update(mesh=7)), "meshes[7]"),
    "bad_component_type.glb": (_doc_with(lambda d: d["accessors"][0].update(componentType=9999)),
                               "componentType 9999"),
    "non_utf8_json.glb": (glb_bytes(None, json_bytes=b"\xff\xfe{}"), "not UTF-8"),
    "list_json.glb": (glb_bytes([1, 2, 3]), "must hold a JSON object, got list"),
    "list_json.gltf": (b"[1, 2]", "must hold a JSON object, got list"),
    "dag.glb": (_doc_with(_dag), "node instances"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_file_is_a_clear_mesh_error(tmp_path, name):
    data, cause = CASES[name]
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    with pytest.raises(MeshError) as info:
        read_mesh(path)
    assert str(path) in str(info.value)
    assert cause in str(info.value)


def test_the_good_files_the_cases_start_from_are_read(tmp_path):
    for name, data in (("t.obj", TRIANGLE_OBJ.encode()), ("t.ply", triangle_ply()),
                       ("t.glb", glb_bytes(*triangle_glb_parts()))):
        (tmp_path / name).write_bytes(data)
        mesh = read_mesh(tmp_path / name)
        assert mesh.num_faces == 1
        np.testing.assert_allclose(np.sort(np.abs(mesh.vertices).sum(1)), [0, 1, 1], atol=1e-6)
