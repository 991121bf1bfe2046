"""Commercial-safe mode: never nvdiffrast, never RMBG-2.0 / BiRefNet; the CLI flag and the runtime."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.__main__ import main
from backend.pipeline.api import ExportOptions, GenerateRequest
from backend.pipeline.errors import PipelineError
from backend.pipeline.generator import Trellis2Generator
from backend.pipeline.licences import commercial_safe_export
from backend.pipeline.rembg import BiRefNetRemover, SolidBackgroundRemover
from backend.pipeline.runtime import Runtime
from tests.fixtures import images


def test_auto_rasterizer_becomes_ours_and_nvdiffrast_is_refused():
    assert commercial_safe_export(ExportOptions(rasterizer="auto")).rasterizer == "ours"
    with pytest.raises(PipelineError, match="non-commercial") as info:
        commercial_safe_export(ExportOptions(rasterizer="nvdiffrast"))
    assert "--rasterizer ours" in str(info.value) and "--commercial-safe" in str(info.value)


def test_generator_applies_the_mode_to_every_job(tmp_path):
    safe = Trellis2Generator(Runtime(model=str(tmp_path), device="cpu", commercial_safe=True),
                             remover=SolidBackgroundRemover())
    assert safe._licence_checked(ExportOptions()).rasterizer == "ours"
    assert Trellis2Generator(Runtime(model=str(tmp_path), device="cpu"))._licence_checked(
        ExportOptions()).rasterizer == "auto"
    safe.remover = BiRefNetRemover(model=None)  # never run: the licence check comes first
    request = GenerateRequest(images=(Path("x.png"),), output_dir=tmp_path)
    with pytest.raises(PipelineError, match="RMBG-2.0 / BiRefNet"):
        safe.generate(request)


def test_cli_flag_refuses_model_based_background_removal(tmp_path, capsys):
    img = images.rgba_transparent(tmp_path / "a.png")
    rc = main(["generate", str(img), "-o", str(tmp_path / "out"), "--commercial-safe", "--rembg", "birefnet",
               "--rembg-model", str(tmp_path), "--model", "mini", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "commercial-safe mode is on" in err and "--rembg solid" in err
