"""The server's ``load`` with the bundled mini model: chosen by name, or standing in for unavailable
official weights (one warning event), recorded in the factory's LoadSpec; in-process, no torch.

The bundled release folder is passed explicitly through ``ServerConfig.bundled_release``.
"""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

import pytest

from backend import protocol
from backend.pipeline import weights
from backend.pipeline.model_source import BUNDLED_MINI, LOCAL
from backend.server import channel
from backend.server.service import ServerConfig, Service


class _Output(io.RawIOBase):
    """A thread-safe sink for the service's event lines."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        with self.lock:
            self.data += bytes(b)
        return len(b)

    def events(self) -> list[protocol.Message]:
        with self.lock:
            return [protocol.decode_event(line) for line in bytes(self.data).splitlines()]


def _load(config: ServerConfig, source: str) -> tuple[list[protocol.Message], list]:
    """Run one ``load`` of ``source`` (then a ``status``) through a real Service; returns its
    events and the LoadSpecs the generator factory was given."""
    specs = []

    def factory(spec):
        specs.append(spec)
        return object()

    out = _Output()
    service = Service(config, channel.Writer(out), factory)  # type: ignore[arg-type]
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as stdin, os.fdopen(write_fd, "wb", buffering=0) as requests:
        server = threading.Thread(target=service.serve, args=(stdin,), daemon=True)
        server.start()
        requests.write(protocol.encode(protocol.Load(id="load-1", source=source)))
        deadline = time.monotonic() + 30
        while not any(isinstance(e, protocol.Done) and e.job == "load-1" for e in out.events()):
            assert time.monotonic() < deadline, out.events()
            time.sleep(0.01)
        requests.write(protocol.encode(protocol.Status(id="status-1")))
        requests.write(protocol.encode(protocol.Shutdown(id="bye")))
        server.join(30)
    return out.events(), specs


@pytest.fixture
def bundled(tmp_path: Path) -> Path:
    folder = tmp_path / "mini_release"
    folder.mkdir()
    (folder / "pipeline.json").write_text('{"name": "Trellis2ImageTo3DPipeline", "args": {}}')
    return folder


def _config(tmp_path: Path, bundled: Path | None) -> ServerConfig:
    return ServerConfig(generator="test", device="cpu", cache_dir=tmp_path / "empty-hf-cache", offline=True,
                        bundled_release=bundled)


def _done(events, job: str) -> str:
    return next(e.status for e in events if isinstance(e, protocol.Done) and e.job == job)


def test_the_bundled_model_by_name(tmp_path: Path, bundled: Path) -> None:
    events, specs = _load(_config(tmp_path, bundled), protocol.BUNDLED_MINI_MODEL)
    assert _done(events, "load-1") == "ok", events
    (spec,) = specs
    assert spec.paths.model_dir == bundled.resolve()
    assert spec.provenance.as_json() == {"source": BUNDLED_MINI, "path": str(bundled.resolve())}
    assert not [e for e in events if isinstance(e, protocol.Log) and e.level == "warning"]
    (status,) = [e for e in events if isinstance(e, protocol.StatusReply)]
    assert status.loaded == protocol.BUNDLED_MINI_MODEL


def test_unavailable_official_weights_fall_back_with_one_warning(tmp_path: Path, bundled: Path) -> None:
    events, specs = _load(_config(tmp_path, bundled), weights.TRELLIS2_REPO)
    assert _done(events, "load-1") == "ok", events
    (warning,) = [e for e in events if isinstance(e, protocol.Log) and e.level == "warning"]
    assert "official TRELLIS.2 weights unavailable" in warning.message and "offline" in warning.message
    assert "bundled mini model" in warning.message
    assert specs[0].provenance.source == BUNDLED_MINI
    (status,) = [e for e in events if isinstance(e, protocol.StatusReply)]
    assert status.loaded == protocol.BUNDLED_MINI_MODEL


def test_without_the_bundled_release_errors_stay(tmp_path: Path) -> None:
    missing = tmp_path / "no_mini"
    events, specs = _load(_config(tmp_path, missing), weights.TRELLIS2_REPO)
    (error,) = [e for e in events if isinstance(e, protocol.Error)]
    assert error.code == "model_unavailable" and "offline" in error.message and not specs
    events, specs = _load(_config(tmp_path, missing), protocol.BUNDLED_MINI_MODEL)
    (error,) = [e for e in events if isinstance(e, protocol.Error)]
    assert error.code == "model_unavailable" and "not part of this installation" in error.message
    assert "add-on preferences: Model Source" in error.hint and not specs


def test_a_local_folder_is_recorded_as_local(tmp_path: Path, bundled: Path) -> None:
    folder = tmp_path / "my_model"
    folder.mkdir()
    events, specs = _load(_config(tmp_path, bundled), str(folder))
    assert _done(events, "load-1") == "ok", events
    assert specs[0].provenance.as_json() == {"source": LOCAL, "path": str(folder.resolve())}
