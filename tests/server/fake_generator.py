"""A test-only generator, chosen with ``--generator tests.server.fake_generator:FakeGenerator``.

It honours the :class:`backend.pipeline.api.Generator` contract without torch: it reports
progress step by step, checks the cancel token every step, and writes small files. The
request's ``name`` picks a behaviour:

- ``None`` or any other name: succeed (``shape.steps`` steps, default 4, 10 ms each);
- ``"slow"``: 50 ms per step (for cancel and kill tests);
- ``"boom"``: raise a RuntimeError after the first step;
- ``"oom"``: raise an exception named ``OutOfMemoryError`` (as torch's is);
- ``"noisy"``: print to stdout and write straight to file descriptor 1 (must not reach the protocol);
- ``"exit"``: end the process at once with exit code 3 (a crash).

After loading, the server calls :meth:`FakeGenerator.warm_up`, which fails when the model folder
holds a ``warm_up_fails`` file.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from backend.pipeline import api
from backend.server.generators import LoadSpec

SCRATCH_BYTES = 8 << 20  # allocated and freed by every job, so leaks would show in RSS


class OutOfMemoryError(RuntimeError):
    """Named like torch.OutOfMemoryError, which the server recognises by name."""


class FakeGenerator:
    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        marker = spec.paths.model_dir / "fail_to_load"
        if marker.exists():
            raise RuntimeError(f"cannot load: {marker.read_text()}")

    def warm_up(self) -> bool:
        """Like the pipeline's: True after "compiling"; a ``warm_up_fails`` file in the model folder
        makes it raise with that file's text."""
        marker = self.spec.paths.model_dir / "warm_up_fails"
        if marker.exists():
            raise RuntimeError(marker.read_text())
        return True

    def generate(self, request: api.GenerateRequest, on_progress: api.ProgressCallback,
                 cancel: api.CancelToken) -> api.JobResult:
        name = request.name or Path(request.images[0]).stem
        self._steps(request.name, request.shape.steps or 4, on_progress, cancel)
        return self._write(request.output_dir, name, f"generated from {len(request.images)} image(s)")

    def retexture(self, request: api.RetextureRequest, on_progress: api.ProgressCallback,
                  cancel: api.CancelToken) -> api.JobResult:
        name = request.name or Path(request.mesh).stem + "_retextured"
        self._steps(request.name, request.texture.steps or 4, on_progress, cancel)
        return self._write(request.output_dir, name, f"retextured {request.mesh} from {request.image}")

    def _steps(self, behaviour: str | None, steps: int, on_progress: api.ProgressCallback,
               cancel: api.CancelToken) -> None:
        scratch = bytearray(SCRATCH_BYTES)
        delay = 0.05 if behaviour == "slow" else 0.01
        for step in range(1, steps + 1):
            cancel.check()
            time.sleep(delay)
            scratch[step % SCRATCH_BYTES] = 1
            on_progress(api.Progress("shape", step, steps, step / steps * 0.9))
            if behaviour == "boom":
                raise RuntimeError("boom")
            if behaviour == "oom":
                raise OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
            if behaviour == "noisy":
                print("stray print from a library")  # noqa: T201
                sys.stdout.flush()
                os.write(1, b"stray bytes on fd 1\n")
            if behaviour == "exit":
                os._exit(3)
        on_progress(api.Progress("export", 1, 1, 1.0, "writing files"))

    def _write(self, output_dir: Path, name: str, note: str) -> api.JobResult:
        folder = output_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        glb = output_dir / f"{name}.glb"
        glb.write_bytes(b"glTF" + b"\0" * 16)
        direct = folder / "result.json"
        direct.write_text(json.dumps({"name": name, "note": note}))
        extra = {"model_dir": str(self.spec.paths.model_dir), "low_vram": self.spec.low_vram}
        asset = api.AssetResult(name=name, glb=glb, direct=direct, faces=12, vertices=8, texture_size=64,
                                extra=extra)
        return api.JobResult(assets=[asset], seconds_per_stage={"shape": 0.01},
                             peak_memory_bytes=SCRATCH_BYTES)
