"""The add-on's model source preference reaches the backend's ``load``.

In a ``bpy`` child, the preferences choose the model source; the add-on's own session starts the
real backend server (with the fake generator, and a bundled mini release folder given to it by
``--bundled-release``) and loads. The server's ``status`` then says what it loaded:

* "Bundled mini model" sends ``protocol.BUNDLED_MINI_MODEL`` and the server loads the bundled folder;
* "TRELLIS.2-4B (official)" while offline with an empty weights cache: the server stands the bundled
  model in, and the add-on's ready message carries the server's warning.
"""

from __future__ import annotations

import json
import stat

import pytest

from tests.blender.addon_script import SETUP
from tests.blender.runner import PYTHON, REPO, run_bpy

pytestmark = pytest.mark.blender

LOAD = """
import importlib
preferences = importlib.import_module(PKG + ".preferences")
session_mod = importlib.import_module(PKG + ".core.session")
protocol = importlib.import_module(PKG + ".protocol")
prefs.use_own_cache = True  # an empty weights cache in the private user folder
out = {}
for kind in ("BUNDLED_MINI", "OFFICIAL"):
    prefs.model_kind = kind
    settings = preferences.backend_settings(bpy.context, offline=True)
    session = session_mod.BackendSession(settings)
    session.start()
    session.wait_loaded(timeout=90)
    status = [e for e in session.client.wait(session.client.status(), 30)
              if isinstance(e, protocol.StatusReply)]
    out[kind] = {"source": settings.model_source, "state": session.state, "message": session.message,
                 "loaded": status[0].loaded if status else None}
    session.stop()
out["mini_name"] = protocol.BUNDLED_MINI_MODEL
emit(out)
"""


def test_model_source_preference_reaches_the_backend_load(tmp_path, bpy_python, extension_zip, model_dir):
    bundled = tmp_path / "mini_release"
    bundled.mkdir()
    (bundled / "pipeline.json").write_text('{"name": "Trellis2ImageTo3DPipeline", "args": {}}')
    python = tmp_path / "python"
    python.write_text(
        "#!/bin/sh\n"
        f'export PYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{REPO}"\n'
        f'exec "{PYTHON}" "$@" --generator tests.blender.fake_generator:factory '
        f'--bundled-release "{bundled}"\n')
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    args = {"zip": str(extension_zip), "python": str(python), "model": str(model_dir),
            "jobs": str(tmp_path / "jobs")}
    run = run_bpy(SETUP + LOAD, tmp_path, python=bpy_python, args=(json.dumps(args),))
    assert run.returncode == 0, run.describe()
    out = run.result
    mini = out["BUNDLED_MINI"]
    assert mini["source"] == out["mini_name"] and mini["state"] == "READY", mini
    assert mini["loaded"] == out["mini_name"] and "bundled mini model" in mini["message"]
    official = out["OFFICIAL"]
    assert official["source"] == "microsoft/TRELLIS.2-4B" and official["state"] == "READY", official
    assert official["loaded"] == out["mini_name"]
    assert "official TRELLIS.2 weights unavailable" in official["message"]
