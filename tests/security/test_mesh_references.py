"""Files a mesh refers to (glTF buffers and images, OBJ material libraries and their textures)
must lie inside the mesh's folder; ``data:`` URIs stay allowed."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from backend.geometry import MeshError
from backend.meshio import read_mesh

TRIANGLE = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=np.float32).tobytes()


def _gltf(folder: Path, uri: str) -> Path:
    doc = {"asset": {"version": "2.0"}, "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
           "meshes": [{"primitives": [{"attributes": {"POSITION": 0}}]}],
           "buffers": [{"uri": uri, "byteLength": len(TRIANGLE)}],
           "bufferViews": [{"buffer": 0, "byteLength": len(TRIANGLE)}],
           "accessors": [{"bufferView": 0, "componentType": 5126, "count": 3, "type": "VEC3",
                          "min": [0, 0, 0], "max": [1, 1, 0]}]}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "m.gltf"
    path.write_text(json.dumps(doc))
    return path


def test_gltf_buffer_inside_the_folder_and_data_uri_are_read(tmp_path: Path) -> None:
    (tmp_path / "mesh" / "sub").mkdir(parents=True)
    (tmp_path / "mesh" / "sub" / "b.bin").write_bytes(TRIANGLE)
    assert read_mesh(_gltf(tmp_path / "mesh", "sub/b.bin")).num_faces == 1
    data = "data:application/octet-stream;base64," + base64.b64encode(TRIANGLE).decode()
    assert read_mesh(_gltf(tmp_path / "mesh2", data)).num_faces == 1


@pytest.mark.parametrize("kind", ["relative", "absolute", "percent"])
def test_gltf_buffer_outside_the_folder_is_refused(tmp_path: Path, kind: str) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(TRIANGLE)
    uri = {"relative": "../secret.bin", "absolute": str(secret), "percent": "..%2Fsecret.bin"}[kind]
    path = _gltf(tmp_path / "mesh", uri)
    with pytest.raises(MeshError) as info:
        read_mesh(path)
    assert uri in str(info.value) and str(path) in str(info.value)


def test_gltf_image_outside_the_folder_is_refused(tmp_path: Path) -> None:
    path = _gltf(tmp_path / "mesh", "data:application/octet-stream;base64,"
                 + base64.b64encode(TRIANGLE).decode())
    doc = json.loads(path.read_text())
    doc["images"] = [{"uri": "../../../../../../etc/passwd"}]
    doc["textures"] = [{"source": 0}]
    doc["materials"] = [{"pbrMetallicRoughness": {"baseColorTexture": {"index": 0}}}]
    doc["meshes"][0]["primitives"][0]["material"] = 0
    path.write_text(json.dumps(doc))
    with pytest.raises(MeshError, match="etc/passwd"):
        read_mesh(path)


def _obj(folder: Path, mtllib: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "m.obj"
    path.write_text(f"mtllib {mtllib}\nv 0 0 0\nv 1 0 0\nv 0 1 0\nusemtl red\nf 1 2 3\n")
    return path


@pytest.mark.parametrize("kind", ["relative", "absolute"])
def test_obj_mtllib_outside_the_folder_is_refused(tmp_path: Path, kind: str) -> None:
    secret = tmp_path / "secret.mtl"
    secret.write_text("newmtl red\nKd 1 0 0\n")
    mtllib = "../secret.mtl" if kind == "relative" else str(secret)
    path = _obj(tmp_path / "mesh", mtllib)
    with pytest.raises(MeshError) as info:
        read_mesh(path)
    assert mtllib in str(info.value) and str(path) in str(info.value)


def test_obj_texture_outside_the_folder_is_refused(tmp_path: Path) -> None:
    path = _obj(tmp_path / "mesh", "m.mtl")
    (tmp_path / "mesh" / "m.mtl").write_text("newmtl red\nKd 1 0 0\nmap_Kd ../../secret.png\n")
    with pytest.raises(MeshError, match="secret.png"):
        read_mesh(path)


def test_obj_mtllib_inside_the_folder_is_read(tmp_path: Path) -> None:
    path = _obj(tmp_path / "mesh", "m.mtl")
    (tmp_path / "mesh" / "m.mtl").write_text("newmtl red\nKd 1 0 0\n")
    mesh = read_mesh(path)
    assert mesh.materials[0].base_color_factor[:3] == (1.0, 0.0, 0.0)
