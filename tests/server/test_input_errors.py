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


def test_a_job_that_fails_on_its_input_leaves_no_output_folder(harness, tmp_path):
    image = images.rgba_transparent(tmp_path / "in.png")
    out = tmp_path / "jobs" / "r2"
    line = protocol.encode(protocol.Retexture(id="r2", mesh=str(image), image=str(image),
                                              output_dir=str(out)))
    assert _error(harness.send(line)).code == "invalid_input"
    assert not (tmp_path / "jobs").exists()


@pytest.mark.parametrize("where", ["file", "below_file"])
def test_an_output_dir_that_cannot_take_files_is_refused_up_front(harness, tmp_path, where):
    image = images.rgba_transparent(tmp_path / "in.png")
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    out = blocker if where == "file" else blocker / "sub"
    line = protocol.encode(protocol.Generate(id="g2", images=[str(image)], output_dir=str(out)))
    error = _error(harness.send(line))
    assert error.code == "invalid_request" and "is a file, not a folder" in error.message


def test_a_source_name_too_long_for_the_file_system_is_an_io_error(harness):
    line = protocol.encode(protocol.Load(id="l1", source="é" * 200, offline=True))
    error = _error(harness.send(line))
    assert error.code == "io_error" and "too long" in error.message


def test_a_home_folder_that_does_not_exist_is_model_unavailable(harness):
    line = protocol.encode(protocol.Load(id="l2", source="~no-such-user-here/model", offline=True))
    error = _error(harness.send(line))  # found by scripts/fuzz_long.py: was "internal"
    assert error.code == "model_unavailable" and "~no-such-user-here/model" in error.message
