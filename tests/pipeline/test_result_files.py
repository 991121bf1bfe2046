"""An asset's files are replaced as a whole or not at all; default names never replace a result."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest

from backend.geometry import TriangleMesh
from backend.meshio import read_gltf
from backend.pipeline.api import ExportOptions
from backend.pipeline.export import asset as asset_module
from backend.pipeline.export import direct as direct_module
from backend.pipeline.export.material import TextureSet, material
from backend.pipeline.export.result_files import free_name
from tests.fixtures import images
from tests.pipeline.test_generate import _generator, _request


def _write(out_dir, name: str, shade: int):
    """One small asset through the exporter's writer; ``shade`` tells the versions apart."""
    tex = TextureSet(np.full((16, 16, 3), shade, np.uint8), np.zeros((16, 16, 3), np.uint8), "OPAQUE")
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float64) * (1 + shade / 100)
    uvs = np.array([[0, 0], [1, 0], [0, 1]], np.float64)
    mesh = TriangleMesh(v, np.array([[0, 1, 2]]), uvs=uvs, normals=np.tile([0.0, 0.0, 1.0], (3, 1)),
                        materials=[material(tex, False)])
    return asset_module._write(mesh, tex, v, mesh.normals, out_dir, name, ExportOptions(texture_size=16),
                               False)


def _files(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_rewrite_replaces_the_whole_result(tmp_path):
    _write(tmp_path, "demo", 10)
    result = _write(tmp_path, "demo", 200)
    assert json.loads(result.direct.read_text())["name"] == "demo"
    assert read_gltf(result.glb).materials[0].base_color_texture[0, 0, 0] == 200
    assert sorted(_files(tmp_path)) == ["demo.glb", "demo/demo.npz", "demo/demo_base_color.png",
                                        "demo/demo_metallic_roughness.png", "demo/result.json"]


def test_disk_full_while_rewriting_keeps_the_earlier_result(tmp_path, monkeypatch):
    _write(tmp_path, "demo", 10)
    before = _files(tmp_path)
    real = direct_module.write_atomic

    def full_disk(path, data):
        if str(path).endswith(".npz"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(direct_module, "write_atomic", full_disk)
    with pytest.raises(OSError, match="No space left"):
        _write(tmp_path, "demo", 200)
    assert _files(tmp_path) == before  # the old GLB, npz and result.json, nothing half-written


def test_a_result_folder_that_cannot_be_written_leaves_no_glb(tmp_path):
    (tmp_path / "demo").write_text("a file where the result folder would go")
    with pytest.raises(NotADirectoryError, match="in the way of the result folder"):
        _write(tmp_path, "demo", 10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # no demo.glb, no staging left
    assert (tmp_path / "demo").read_text() == "a file where the result folder would go"


def test_free_name_skips_existing_results_and_names_taken_in_the_job(tmp_path):
    assert free_name(tmp_path, "obj") == "obj"
    (tmp_path / "obj.glb").write_bytes(b"")
    assert free_name(tmp_path, "obj") == "obj-2"
    (tmp_path / "obj-2").mkdir()
    assert free_name(tmp_path, "obj", {"obj-3"}) == "obj-4"


@pytest.mark.slow
def test_same_stems_in_one_generate_and_a_second_job_keep_every_result(tmp_path, tiny_checkpoint):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = images.rgba_transparent(tmp_path / "a" / "obj.png")
    second = images.rgba_transparent(tmp_path / "b" / "obj.png", size=64)
    export = ExportOptions(texture_size=64, faces=800, write_glb=False)
    gen = _generator(tiny_checkpoint, radius=0.05)
    res = gen.generate(_request(tmp_path, first, images=(first, second), export=export))
    again = gen.generate(_request(tmp_path, first, export=export))
    names = [a.name for a in res.assets + again.assets]
    assert names == ["obj", "obj-2", "obj-3"]
    for a in res.assets + again.assets:
        doc = json.loads(a.direct.read_text())
        assert doc["name"] == a.name and (a.direct.parent / doc["mesh"]).is_file()
    assert [json.loads(a.direct.read_text())["stats"] for a in res.assets][0] == \
        json.loads((tmp_path / "out" / "obj" / "result.json").read_text())["stats"]
