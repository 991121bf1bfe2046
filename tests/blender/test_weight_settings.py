"""The model-manager preferences reach the backend: Hugging Face token, local DINOv3 and
sparse-structure-decoder folders, Commercial-Safe; and "Check Access" asks the real backend.

The load test records what the add-on's own session sends in ``load`` (a recording client stands
in for the process); tests/server/test_weights_requests.py shows the server acting on those fields.
The access test runs the real server (fake generator, offline) behind ``trellis2.check_access``.
"""

from __future__ import annotations

import json

import pytest

from tests.blender.addon_script import SETUP
from tests.blender.runner import run_bpy

pytestmark = pytest.mark.blender

LOAD_FIELDS = """
import importlib
preferences = importlib.import_module(PKG + ".preferences")
session_mod = importlib.import_module(PKG + ".core.session")
logging_setup = importlib.import_module(PKG + ".logging_setup")
prefs.hf_token = "hf_secret_token_123"
prefs.image_encoder_dir = ARGS["dino"]
prefs.ss_decoder_dir = ARGS["ssdec"]
prefs.commercial_safe = True

sent = []

class RecordingClient:
    returncode = None
    alive = True

    def __init__(self, config):
        self.hello = None

    def start(self):
        self.hello = object()

    def load(self, source, **fields):
        sent.append(dict(fields, source=source))
        return "load-1"

    def poll(self):
        return []

    def kill(self):
        pass

settings = preferences.backend_settings(bpy.context)
session = session_mod.BackendSession(settings, client_factory=RecordingClient)
session.start()
deadline = time.monotonic() + 30
while not sent and time.monotonic() < deadline:
    session.pump()
    time.sleep(0.02)
logging_setup.shutdown()
log_text = logging_setup.log_file().read_text() if logging_setup.log_file().exists() else ""
emit({"sent": sent, "repr": repr(settings), "log_has_token": "hf_secret_token_123" in log_text})
"""


def test_weight_preferences_reach_the_load_request(tmp_path, bpy_python, extension_zip, model_dir,
                                                   fake_backend_python):
    dino, ssdec = tmp_path / "dinov3 copy", tmp_path / "trellis image large"
    args = {"zip": str(extension_zip), "python": str(fake_backend_python), "model": str(model_dir),
            "jobs": str(tmp_path / "jobs"), "dino": str(dino), "ssdec": str(ssdec)}
    run = run_bpy(SETUP + LOAD_FIELDS, tmp_path, python=bpy_python, args=(json.dumps(args),))
    assert run.returncode == 0, run.describe()
    (load,) = run.result["sent"]
    assert load["token"] == "hf_secret_token_123"
    assert load["image_encoder"] == str(dino) and load["sparse_structure_decoder"] == str(ssdec)
    assert load["commercial_safe"] is True
    assert "hf_secret_token_123" not in run.result["repr"] and not run.result["log_has_token"]


CHECK_ACCESS = """
prefs.image_encoder_dir = ARGS["dino"]
ret = bpy.ops.trellis2.check_access()
emit({"ret": sorted(ret)})
"""


def test_check_access_operator_asks_the_real_backend(tmp_path, bpy_python, extension_zip,
                                                    fake_backend_python):
    model = tmp_path / "release"
    model.mkdir()
    (model / "pipeline.json").write_text(json.dumps({"args": {
        "models": {"ss_decoder": "microsoft/TRELLIS-image-large/ckpts/ss_dec_conv3d_16l8_fp16"},
        "image_cond_model": {"args": {"model_name": "facebook/dinov3-vitl16-pretrain-lvd1689m"}}}}))
    dino = tmp_path / "dino"
    dino.mkdir()
    args = {"zip": str(extension_zip), "python": str(fake_backend_python), "model": str(model),
            "jobs": str(tmp_path / "jobs"), "dino": str(dino)}
    run = run_bpy(SETUP + CHECK_ACCESS, tmp_path, python=bpy_python, args=(json.dumps(args),))
    assert run.returncode == 0, run.describe()
    assert run.result["ret"] == ["FINISHED"], run.describe()
    out = run.stdout + run.stderr
    # Blender prints operator reports in background mode.
    assert "facebook/dinov3-vitl16-pretrain-lvd1689m (image features (DINOv3)): uses the local folder" in out
    assert f"({dino})" in out
    assert "microsoft/TRELLIS-image-large" in out and "online access is off" in out
