"""The ``generate`` / ``retexture`` commands through the backend dispatcher."""

from __future__ import annotations

import numpy as np
import pytest

from backend import protocol
from backend.__main__ import main
from backend.geometry import TriangleMesh
from backend.meshio import read_gltf, write_glb
from tests.fixtures import images
from tests.pipeline.test_generate import _textured_box_glb


def test_generate_offline_without_model_exits_with_a_hint(tmp_path, capsys):
    img = images.rgba_transparent(tmp_path / "a.png")
    rc = main(["generate", str(img), "-o", str(tmp_path / "out"), "--offline",
               "--model", str(tmp_path / "no")])
    err = capsys.readouterr().err
    assert rc == 2 and "does not exist" in err and "--model" in err


def test_generate_into_a_file_fails_before_any_model_is_loaded(tmp_path, capsys):
    img = images.rgba_transparent(tmp_path / "a.png")
    (tmp_path / "taken").write_text("a file, not a folder")
    for out in (tmp_path / "taken", tmp_path / "taken" / "sub"):
        rc = main(["generate", str(img), "-o", str(out), "--offline", "--model", str(tmp_path / "no")])
        err = capsys.readouterr().err
        assert rc == 2 and "-o/--output" in err and "is a file, not a folder" in err
        assert "--model" not in err  # the destination was checked before the model


@pytest.mark.parametrize("flag, value, named", [
    ("--faces", protocol.MIN_FACES - 1, "face target"),
    ("--texture-size", protocol.MAX_TEXTURE_SIZE + 1, "texture size"),
    ("--texture-size", protocol.MIN_TEXTURE_SIZE - 1, "texture size"),
    ("--samples", protocol.MAX_SAMPLES + 1, "variations"),
    ("--samples", 0, "variations"),
])
def test_values_outside_the_contracts_limits_are_one_clear_error(tmp_path, capsys, flag, value, named):
    """The command line takes the limits the server applies (one definition, ``backend/protocol.py``)
    and reports a value outside them as a one-line error, before any model is loaded."""
    img = images.rgba_transparent(tmp_path / "a.png")
    rc = main(["generate", str(img), "-o", str(tmp_path / "out"), flag, str(value), "--offline",
               "--model", str(tmp_path / "no")])
    err = capsys.readouterr().err
    assert rc == 2 and named in err and flag in err and "Traceback" not in err, err


def test_retexture_command_writes_glb_and_summary(tmp_path, capsys, tiny_checkpoint):
    src = _textured_box_glb(tmp_path / "box.glb")
    img = images.rgba_transparent(tmp_path / "ref.png")
    rc = main(["retexture", str(tmp_path / "box.glb"), str(img), "-o", str(tmp_path / "out"),
               "--model", str(tiny_checkpoint), "--offline", "--device", "cpu", "--resolution", "64",
               "--steps", "2", "--texture-size", "64", "--rasterizer", "ours"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "summary:" in err and "texture" in err and "peak memory" in err and "[####" in err
    out = read_gltf(tmp_path / "out" / "box.glb")
    assert out.num_vertices == src.num_vertices
    assert (tmp_path / "out" / "box" / "result.json").is_file()


def test_retexture_of_a_flat_mesh_is_one_clear_error(tmp_path, capsys, tiny_checkpoint):
    flat = TriangleMesh(np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0]]), np.array([[0, 1, 2]]))
    write_glb(tmp_path / "line.glb", flat)
    img = images.rgba_transparent(tmp_path / "ref.png")
    rc = main(["retexture", str(tmp_path / "line.glb"), str(img), "-o", str(tmp_path / "out"),
               "--model", str(tiny_checkpoint), "--offline", "--device", "cpu", "--resolution", "64",
               "--steps", "1", "--texture-size", "64", "--rasterizer", "ours"])
    err = capsys.readouterr().err
    assert rc == 2 and "error: line.glb:" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "line.glb").exists()
