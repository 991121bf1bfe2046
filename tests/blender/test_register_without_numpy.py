"""The add-on registers on a Blender without numpy (some Linux distributions' builds have none)."""

from __future__ import annotations

import json

import pytest

from tests.blender.runner import PYTHON, run_bpy

pytestmark = pytest.mark.blender

NO_NUMPY = """
import sys
import bpy
ARGS = json.loads(sys.argv[-1])
for name in [m for m in sys.modules if m == "numpy" or m.startswith("numpy.")]:
    del sys.modules[name]
sys.modules["numpy"] = None  # "import numpy" now fails, as on a Blender that has none
ret = bpy.ops.extensions.package_install_files(filepath=ARGS["zip"], repo="user_default",
                                               enable_on_install=True)
PKG = "bl_ext.user_default.trellis2_blender"
result = {"ret": sorted(ret), "enabled": PKG in bpy.context.preferences.addons,
          "panel": hasattr(bpy.types, "VIEW3D_PT_trellis2"),
          "generate_poll": bpy.ops.trellis2.generate.poll(),
          "numpy_loaded": sys.modules.get("numpy") is not None}
# Generate with everything set: it must refuse before a job runs (importing its result needs numpy),
# not after the backend has worked for a minute. The "backend" exits at once, so a job that was
# submitted anyway fails fast instead of hanging the test.
import os
from pathlib import Path
prefs = bpy.context.preferences.addons[PKG].preferences
prefs.backend_python = "/bin/false"
prefs.output_dir = ARGS["jobs"]
bpy.context.scene.trellis2.image_path = ARGS["image"]
try:
    answer = sorted(bpy.ops.trellis2.generate())
except RuntimeError as exc:
    answer = str(exc)
jobs = Path(ARGS["jobs"])
emit({**result, "generate": answer, "job_folders": sorted(os.listdir(jobs)) if jobs.is_dir() else []})
"""


def test_registers_without_numpy(tmp_path, bpy_python, extension_zip, inputs):
    args = {"zip": str(extension_zip), "python": str(PYTHON), "jobs": str(tmp_path / "jobs"),
            "image": str(inputs["transparent"])}
    run = run_bpy("import json\n" + NO_NUMPY, tmp_path, python=bpy_python, args=(json.dumps(args),))
    assert run.returncode == 0, run.describe()
    res = run.result
    assert res["ret"] == ["FINISHED"] and res["enabled"] and res["panel"], run.describe()
    assert res["generate_poll"] is False  # no picture chosen yet: the button explains why
    assert res["numpy_loaded"] is False
    # Generate says what is missing before any job runs: no job folder, no backend started.
    assert "numpy" in res["generate"] and res["job_folders"] == [], res
