"""A torch-free generator for the fuzz suite: it reads its inputs with the product's readers.

``generate`` decodes and preprocesses every image exactly as the pipeline does
(:func:`backend.pipeline.image.load_and_preprocess`); ``retexture`` reads the mesh with
:func:`backend.meshio.read_mesh` and the image likewise. So malformed inputs sent through
``serve`` meet the real readers and the real error classification, without model weights.
The result is a small, complete result folder plus GLB, written the way the exporter
writes them (see ``write_result``), under the request's name (or the input's stem).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from backend.fileio import write_atomic
from backend.pipeline import api
from backend.server.generators import LoadSpec


def write_result(output_dir: Path, name: str, note: str) -> api.AssetResult:
    """``<name>.glb`` and ``<name>/result.json`` (naming ``<name>.npz``) into ``output_dir``."""
    from backend.meshio import build_glb
    from tests.fixtures.mesh_files import triangle_mesh

    api.check_output_name(name)
    folder = output_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    glb = write_atomic(output_dir / f"{name}.glb", build_glb(triangle_mesh()))
    write_atomic(folder / f"{name}.npz", lambda fh: np.savez(fh, positions=np.zeros((3, 3), np.float32)))
    direct = write_atomic(folder / "result.json",
                          json.dumps({"name": name, "mesh": f"{name}.npz", "note": note}).encode())
    return api.AssetResult(name=name, glb=glb, direct=direct, faces=1, vertices=3)


class ReadingGenerator:
    """Chosen with ``--generator tests.fuzz.reading_generator:ReadingGenerator``."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec

    def generate(self, request: api.GenerateRequest, on_progress: api.ProgressCallback,
                 cancel: api.CancelToken) -> api.JobResult:
        from backend.pipeline.image import load_and_preprocess

        assets = []
        for path in request.images:
            cancel.check()
            load_and_preprocess(path)
            on_progress(api.Progress("preprocess", 1, 1, 0.5))
            name = request.name or Path(path).stem
            assets.append(write_result(request.output_dir, name, f"generated from {Path(path).name}"))
        return api.JobResult(assets=assets, seconds_per_stage={"preprocess": 0.0})

    def retexture(self, request: api.RetextureRequest, on_progress: api.ProgressCallback,
                  cancel: api.CancelToken) -> api.JobResult:
        from backend.geometry import MeshError
        from backend.meshio import read_mesh
        from backend.pipeline.errors import InputError
        from backend.pipeline.image import load_and_preprocess

        try:
            read_mesh(request.mesh)
        except MeshError as exc:  # as Trellis2Generator.retexture reports it
            raise InputError(f"{Path(request.mesh).name}: {exc}") from exc
        cancel.check()
        load_and_preprocess(request.image)
        on_progress(api.Progress("preprocess", 1, 1, 0.5))
        name = request.name or Path(request.mesh).stem + "_retextured"
        asset = write_result(request.output_dir, name, f"retextured {Path(request.mesh).name}")
        return api.JobResult(assets=[asset], seconds_per_stage={"preprocess": 0.0})
