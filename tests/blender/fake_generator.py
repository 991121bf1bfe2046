"""A fake generator for the real backend server (``--generator tests.blender.fake_generator:factory``).

It speaks the pipeline's Generator protocol, so the server, the client and the batch script
run for real; only the model is replaced. The batch-script tests use it to check their
bookkeeping (report, exit code, re-runs, per-item settings) in a second or two per item; the
operator tests run the real generator on the tiny checkpoint instead. A retexture writes the
same sphere result (the batch's retexture items only need its bookkeeping).

An image that PIL cannot read fails like the pipeline does (``ValueError``). An image with
any transparent pixel produces a transparent base color (alpha mode BLEND), any other OPAQUE.
Each job reports a few progress steps, then writes a sphere mesh, its textures and
``result.json`` (tests.blender.fake_results) per sample (``num_samples`` of them, named
``<name>_<k>`` when more than one), and ``<name>.glb`` of the sphere when the export asks for
one. It also writes ``received_request.json`` into the output folder: the GenerateRequest or
RetextureRequest exactly as the server handed it over, so a test can prove that a value set in
Blender's panel reached the backend.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from backend.geometry.mesh import TriangleMesh
from backend.meshio import write_glb
from backend.pipeline.api import AssetResult, JobResult, Progress
from tests.blender.fake_results import sphere_arrays, write_result

STAGES = ("sparse_structure", "shape", "texture")


class FakeGenerator:
    def __init__(self, spec) -> None:
        self.spec = spec

    def _steps(self, on_progress, cancel) -> dict[str, float]:
        steps = 3
        seconds = {}
        for s_index, stage in enumerate(STAGES):
            t0 = time.monotonic()
            for step in range(1, steps + 1):
                cancel.check()
                time.sleep(0.01)
                on_progress(Progress(stage=stage, step=step, total=steps,
                                     fraction=(s_index + step / steps) / len(STAGES)))
            seconds[stage] = time.monotonic() - t0
        return seconds

    @staticmethod
    def _is_transparent(path: Path) -> bool:
        try:
            with Image.open(path) as img:
                img.load()
                if img.mode not in ("RGBA", "LA", "PA"):
                    return False
                return int(np.asarray(img.getchannel("A")).min()) < 255
        except OSError as exc:
            raise ValueError(f"cannot read image {path.name}: {exc}") from None

    def generate(self, request, on_progress, cancel) -> JobResult:
        image = request.images[0]
        base = request.name or image.stem
        transparent = self._is_transparent(image)
        out = Path(request.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        received = json.dumps(dataclasses.asdict(request), default=str, indent=2)
        (out / "received_request.json").write_text(received)
        seconds = self._steps(on_progress, cancel)
        assets = [_asset(request, out, base if request.num_samples == 1 else f"{base}_{k}",
                         transparent=transparent, fields={"seed": request.seed, "sample": k})
                  for k in range(request.num_samples)]
        return JobResult(assets=assets, seconds_per_stage=seconds)


    def retexture(self, request, on_progress, cancel) -> JobResult:
        if not Path(request.mesh).is_file():
            raise ValueError(f"cannot read mesh {Path(request.mesh).name}")
        name = request.name or Path(request.mesh).stem
        Path(request.output_dir).mkdir(parents=True, exist_ok=True)
        received = json.dumps(dataclasses.asdict(request), default=str, indent=2)
        (Path(request.output_dir) / "received_request.json").write_text(received)
        seconds = self._steps(on_progress, cancel)
        asset = _asset(request, Path(request.output_dir), name, transparent=False,
                       fields={"seed": request.seed})
        return JobResult(assets=[asset], seconds_per_stage=seconds)


def _asset(request, out: Path, name: str, *, transparent: bool, fields: dict) -> AssetResult:
    """The sphere as a direct result folder, plus ``<name>.glb`` when the request asks for a GLB."""
    result = write_result(out / name, name, transparent=transparent,
                          texture_size=min(request.export.texture_size, 64), fields=fields)
    glb = None
    if request.export.write_glb:
        positions, faces, uvs, normals = sphere_arrays()
        glb = out / f"{name}.glb"
        write_glb(glb, TriangleMesh(vertices=positions, faces=faces, uvs=uvs, normals=normals))
    return AssetResult(name=name, glb=glb, direct=result, faces=0, vertices=0, texture_size=64,
                       alpha_mode="BLEND" if transparent else "OPAQUE", extra=fields)


def factory(spec) -> FakeGenerator:
    return FakeGenerator(spec)
