"""A fake generator for the real backend server (``--generator tests.blender.fake_generator:factory``).

It speaks the pipeline's Generator protocol, so the server, the client and the add-on
run for real; only the model is replaced. What it does depends on the image's file name:

- ``*crash*``: reports a little progress, then the whole process exits (a dying backend);
- ``*slow*``: many slow steps, so there is time to cancel;
- anything else: a few quick steps.

An image that PIL cannot read fails like the pipeline does (``ValueError``). An image with
any transparent pixel produces a transparent base color, so alpha wiring can be checked.
Each job writes a sphere mesh, its textures and ``result.json`` (tests.blender.fake_results).
A ``<name>.started`` file appears in the output folder once the first step was reported.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from backend.pipeline.api import AssetResult, JobResult, Progress
from tests.blender.fake_results import write_result

STAGES = ("sparse_structure", "shape", "texture")


class FakeGenerator:
    def __init__(self, spec) -> None:
        self.spec = spec

    def _steps(self, name: str, out: Path, on_progress, cancel) -> dict[str, float]:
        slow = "slow" in name
        crash = "crash" in name
        steps = 40 if slow else 3
        seconds = {}
        for s_index, stage in enumerate(STAGES):
            t0 = time.monotonic()
            for step in range(1, steps + 1):
                cancel.check()
                time.sleep(0.15 if slow else 0.01)
                fraction = (s_index + step / steps) / len(STAGES)
                on_progress(Progress(stage=stage, step=step, total=steps, fraction=fraction))
                marker = out / f"{name}.started"
                if not marker.exists():
                    marker.write_text("1")
                if crash and step == 2:
                    os._exit(7)
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
        name = request.name or image.stem
        transparent = self._is_transparent(image)
        out = Path(request.output_dir)
        seconds = self._steps(name, out, on_progress, cancel)
        result = write_result(out / name, name, transparent=transparent,
                              texture_size=min(request.export.texture_size, 64))
        return JobResult(assets=[AssetResult(name=name, direct=result, faces=0, vertices=0,
                                             texture_size=64,
                                             alpha_mode="BLEND" if transparent else "OPAQUE",
                                             extra={"seed": request.seed})],
                         seconds_per_stage=seconds)

    def retexture(self, request, on_progress, cancel) -> JobResult:
        with np.load(request.mesh) as npz:
            if npz["faces"].ndim != 2 or npz["uvs"].shape[0] != npz["positions"].shape[0]:
                raise ValueError("bad retexture mesh")
        name = request.name or Path(request.image).stem
        transparent = self._is_transparent(request.image)
        out = Path(request.output_dir)
        seconds = self._steps(name, out, on_progress, cancel)
        result = write_result(out / name, name, transparent=transparent, mesh=False)
        return JobResult(assets=[AssetResult(name=name, direct=result)], seconds_per_stage=seconds)


def factory(spec) -> FakeGenerator:
    return FakeGenerator(spec)
