"""The add-on against the real backend (``python -m backend serve`` with its default generator).

While ``backend.pipeline.generator`` does not exist, Generate must end with the backend's
``pipeline_unavailable`` error and leave Blender working. Once it exists, the batch script
runs the tiny random-weight checkpoint end to end and renders a Cycles preview.
"""

from __future__ import annotations

import json

import pytest

from tests.blender.runner import PYTHON, REPO, run_python
from tests.fixtures.tiny_checkpoint import tiny_checkpoint  # noqa: F401 - a fixture

pytestmark = pytest.mark.blender

@pytest.mark.slow
def test_batch_on_the_tiny_checkpoint_with_preview(tmp_path, inputs, bpy_python, tiny_checkpoint):  # noqa: F811
    out = tmp_path / "out"
    run = run_python([str(REPO / "scripts" / "batch_generate.py"), "--input", str(inputs["transparent"]),
                      "--output", str(out), "--backend-python", str(PYTHON), "--model", str(tiny_checkpoint),
                      "--device", "cpu", "--pipeline-type", "512", "--texture-size", "64", "--faces", "2000",
                      "--preview"], python=bpy_python, user_dir=tmp_path / "u", timeout=300)
    assert run.returncode == 0, run.describe()
    (item,) = json.loads((out / "report.json").read_text())["items"]
    assert item["status"] == "ok", item
    assert (out / "leaf.glb").read_bytes()[:4] == b"glTF"
    preview = REPO / "out" / "blender" / "tiny_checkpoint_preview.png"
    preview.parent.mkdir(parents=True, exist_ok=True)
    preview.write_bytes((out / "leaf.png").read_bytes())
    assert preview.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
