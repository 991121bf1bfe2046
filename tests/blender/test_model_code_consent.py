"""The preference "Run RMBG Model Code" reaches the backend's ``load`` as ``allow_model_code``.

In a ``bpy`` child, the add-on's own session starts the real backend server (fake generator)
with RMBG background removal from a local folder. Without the consent the server refuses the
load before anything of that folder runs; with it, the load goes through.
"""

from __future__ import annotations

import json

import pytest

from tests.blender.addon_script import SETUP
from tests.blender.runner import run_bpy

pytestmark = pytest.mark.blender

LOAD = """
import importlib
preferences = importlib.import_module(PKG + ".preferences")
session_mod = importlib.import_module(PKG + ".core.session")
prefs.background_removal = "RMBG"
prefs.background_model = ARGS["rmbg"]
out = {}
for allowed in (False, True):
    prefs.allow_model_code = allowed
    settings = preferences.backend_settings(bpy.context, offline=True)
    session = session_mod.BackendSession(settings)
    session.start()
    session.wait_loaded(timeout=90)
    out[str(allowed)] = {"sent": settings.allow_model_code, "state": session.state,
                         "message": session.message}
    session.stop()
emit(out)
"""


def test_model_code_consent_reaches_the_backend(tmp_path, bpy_python, extension_zip, fake_backend_python,
                                                model_dir):
    rmbg = tmp_path / "rmbg"
    rmbg.mkdir()
    (rmbg / "config.json").write_text("{}")
    args = {"zip": str(extension_zip), "python": str(fake_backend_python), "model": str(model_dir),
            "jobs": str(tmp_path / "jobs"), "rmbg": str(rmbg)}
    run = run_bpy(SETUP + LOAD, tmp_path, python=bpy_python, args=(json.dumps(args),))
    assert run.returncode == 0, run.describe()
    refused, allowed = run.result["False"], run.result["True"]
    assert refused["sent"] is False and refused["state"] == "ERROR", refused
    assert "Run RMBG Model Code" in refused["message"], refused
    assert allowed["sent"] is True and allowed["state"] == "READY", allowed
