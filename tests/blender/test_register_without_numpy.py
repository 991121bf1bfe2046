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
emit({"ret": sorted(ret), "enabled": PKG in bpy.context.preferences.addons,
      "panel": hasattr(bpy.types, "VIEW3D_PT_trellis2"),
      "generate_poll": bpy.ops.trellis2.generate.poll(),
      "numpy_loaded": sys.modules.get("numpy") is not None})
"""


def test_registers_without_numpy(tmp_path, bpy_python, extension_zip):
    run = run_bpy("import json\n" + NO_NUMPY, tmp_path, python=bpy_python,
                  args=(json.dumps({"zip": str(extension_zip), "python": str(PYTHON)}),))
    assert run.returncode == 0, run.describe()
    res = run.result
    assert res["ret"] == ["FINISHED"] and res["enabled"] and res["panel"], run.describe()
    assert res["generate_poll"] is False  # no picture chosen yet: the button explains why
    assert res["numpy_loaded"] is False
