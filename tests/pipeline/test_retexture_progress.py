"""Retexture's long mesh encode reports its parts, so a CPU run does not sit on one step for minutes."""

from __future__ import annotations

import pytest

from backend.ovoxel.encode import ENCODE_STEPS
from backend.pipeline.api import RetextureRequest
from backend.pipeline.generator import Trellis2Generator
from backend.pipeline.runtime import Runtime
from tests.fixtures import images
from tests.pipeline.test_generate import EXPORT, FAST, _textured_box_glb


@pytest.mark.slow
def test_mesh_encode_reports_each_part(tmp_path, tiny_checkpoint):
    _textured_box_glb(tmp_path / "box.glb")
    img = images.rgba_transparent(tmp_path / "ref.png")
    seen = []
    gen = Trellis2Generator(Runtime(model=str(tiny_checkpoint), device="cpu", offline=True))
    gen.retexture(RetextureRequest(mesh=tmp_path / "box.glb", image=img, output_dir=tmp_path / "out",
                                   resolution=64, texture=FAST, export=EXPORT), on_progress=seen.append)
    parts = [(p.step, p.total, p.message) for p in seen if p.stage == "shape" and p.total > 1]
    steps = len(ENCODE_STEPS) + 1
    assert parts == [(i, steps, words) for i, words in enumerate([*ENCODE_STEPS, "encoding the voxels"])]
