"""Fixtures: a real ``python -m backend serve`` child driven through the client, with the fake generator."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from trellis2_blender.core.client import BackendClient, BackendConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
FAKE = "tests.server.fake_generator:FakeGenerator"


def make_client(tmp_path: Path, generator: str = FAKE, *extra: str) -> BackendClient:
    """A client for a backend with ``generator``, offline, on the CPU, logging into ``tmp_path``."""
    args = ("--generator", generator, "--device", "cpu", "--offline",
            "--cache-dir", str(tmp_path / "hf"), *extra)
    return BackendClient(BackendConfig(python=sys.executable, backend_root=str(REPO_ROOT),
                                       log_path=str(tmp_path / "logs" / "backend.log"), server_args=args,
                                       handshake_timeout_s=60, stop_timeout_s=10))


@pytest.fixture
def backend(tmp_path: Path):
    """A started backend (fake generator) with models loaded from an empty local folder."""
    client = make_client(tmp_path)
    client.start()
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    events = client.wait(client.load(str(model_dir)), timeout=30)
    assert events[-1].status == "ok", events
    yield client
    client.stop(timeout=10)
    client.kill()


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "input.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n")  # the fake generator only checks that it exists
    return path
