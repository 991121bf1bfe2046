"""The batch inside the extension: ``blender -c trellis2`` is registered when the extension is
installed and enabled, answers ``--help`` with the generate command's flags, runs a manifest with
a retexture item, and goes away when the extension is disabled."""

from __future__ import annotations

import json

import pytest

from tests.blender.addon_script import SETUP
from tests.blender.runner import run_bpy

pytestmark = pytest.mark.blender

# Recorded before the extension is installed: what it registers with Blender's command line.
RECORD = """
import bpy
registered, unregistered = {}, []
real_register, real_unregister = bpy.utils.register_cli_command, bpy.utils.unregister_cli_command

def register_cli_command(name, execute):
    handle = real_register(name, execute)
    registered[name] = (execute, handle)
    return handle

def unregister_cli_command(handle):
    unregistered.append(next(n for n, (_, h) in registered.items() if h is handle))
    return real_unregister(handle)

bpy.utils.register_cli_command = register_cli_command
bpy.utils.unregister_cli_command = unregister_cli_command
"""

RUN = """
import contextlib, io
execute = registered["trellis2"][0]
help_text = io.StringIO()
with contextlib.redirect_stdout(help_text):
    help_code = execute(["--help"])
out = Path(ARGS["out"])
code = execute(["--input", ARGS["manifest"], "--output", str(out), "--format", "blend",
                "--backend-python", ARGS["python"], "--model", ARGS["model"], "--rembg", "solid"])
report = json.loads((out / "report.json").read_text())
addon_utils.disable(PKG)
emit({"commands": sorted(registered), "help_code": help_code, "help": help_text.getvalue(),
      "code": code, "items": [(r["name"], r["status"], r.get("mesh")) for r in report["items"]],
      "outputs": [sorted(r["outputs"]) for r in report["items"]], "unregistered": unregistered})
"""


def test_blender_command_runs_generate_and_retexture_items(tmp_path, bpy_python, extension_zip, inputs,
                                                           fake_backend_python, model_dir):
    mesh = tmp_path / "old chair.glb"
    mesh.write_bytes(b"glTF")  # the fake generator only checks that the mesh exists
    manifest = tmp_path / "jobs.json"
    manifest.write_text(json.dumps({"items": [
        {"image": str(inputs["opaque"]), "name": "pot", "seed": 3},
        {"mesh": mesh.name, "image": str(inputs["opaque"]), "name": "chair_walnut", "resolution": 512}]}))
    args = {"zip": str(extension_zip), "python": str(fake_backend_python), "model": str(model_dir),
            "jobs": str(tmp_path / "jobs"), "manifest": str(manifest), "out": str(tmp_path / "out")}
    run = run_bpy(RECORD + SETUP + RUN, tmp_path, python=bpy_python, args=(json.dumps(args),))
    assert run.returncode == 0, run.describe()
    res = run.result
    assert res["commands"] == ["trellis2"]
    assert res["help_code"] == 0 and "usage: blender -c trellis2" in res["help"]
    for flag in ("--pipeline", "--offline", "--rembg", "--rembg-model", "--image-encoder", "--ss-decoder",
                 "--commercial-safe", "--faces", "--texture-size", "--seed", "--model", "--device"):
        assert flag in res["help"], flag
    assert res["code"] == 0, run.describe()
    assert res["items"] == [["pot", "ok", None], ["chair_walnut", "ok", str(tmp_path / "old chair.glb")]]
    assert res["outputs"] == [["blend"], ["blend"]]
    assert res["unregistered"] == ["trellis2"]
