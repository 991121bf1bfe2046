"""A test-only generator that writes down what reached it, chosen with
``--generator tests.server.recording_generator:RecordingGenerator``.

It behaves as :class:`tests.server.fake_generator.FakeGenerator` and also writes the pipeline
request it was given to ``<output_dir>/request.json`` and the load settings to
``<model_dir>/load_spec.json``, so a test can compare what a front end sent with what the
pipeline got.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from backend.pipeline import api
from backend.server.generators import LoadSpec
from tests.server.fake_generator import FakeGenerator

REQUEST_FILE = "request.json"
LOAD_SPEC_FILE = "load_spec.json"


def _write(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataclasses.asdict(value), default=str))  # Path -> str


class RecordingGenerator(FakeGenerator):
    def __init__(self, spec: LoadSpec) -> None:
        super().__init__(spec)
        _write(spec.paths.model_dir / LOAD_SPEC_FILE, spec)

    def generate(self, request: api.GenerateRequest, on_progress: api.ProgressCallback,
                 cancel: api.CancelToken) -> api.JobResult:
        _write(request.output_dir / REQUEST_FILE, request)
        return super().generate(request, on_progress, cancel)

    def retexture(self, request: api.RetextureRequest, on_progress: api.ProgressCallback,
                  cancel: api.CancelToken) -> api.JobResult:
        _write(request.output_dir / REQUEST_FILE, request)
        return super().retexture(request, on_progress, cancel)
