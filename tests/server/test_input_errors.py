"""Unusable input files reach the client as ``invalid_input`` with the reader's message, not ``internal``."""

from __future__ import annotations

import pytest

from backend import protocol
from tests.fixtures import images
from tests.fixtures.mesh_files import glb_bytes
from tests.fuzz.harness import ServiceHarness


@pytest.fixture
def harness(tmp_path):
    h = ServiceHarness(tmp_path)
    yield h
    h.close()


def _error(events) -> protocol.Error:
    (error,) = [e for e in events if isinstance(e, protocol.Error)]
    assert isinstance(events[-1], protocol.Done) and events[-1].status == "error"
    return error


def test_malformed_mesh_is_invalid_input_naming_the_file(harness, tmp_path):
    image = images.rgba_transparent(tmp_path / "in.png")
    mesh = tmp_path / "broken.glb"
    mesh.write_bytes(glb_bytes([1, 2, 3]))
    line = protocol.encode(protocol.Retexture(id="r1", mesh=str(mesh), image=str(image),
                                              output_dir=str(tmp_path / "out")))
    error = _error(harness.send(line))
    assert error.code == "invalid_input"
    assert "broken.glb" in error.message and "JSON object" in error.message


def test_corrupt_image_is_invalid_input(harness, tmp_path):
    image = tmp_path / "junk.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    line = protocol.encode(protocol.Generate(id="g1", images=[str(image)], output_dir=str(tmp_path / "out")))
    error = _error(harness.send(line))
    assert error.code == "invalid_input" and "junk.png" in error.message
