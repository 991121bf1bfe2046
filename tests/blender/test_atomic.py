"""The add-on's atomic writes (it cannot import the backend's): whole files with ordinary permissions."""

from __future__ import annotations

import os
import stat

import pytest

from trellis2_blender.core.atomic import write_bytes


def test_a_written_file_is_whole_and_readable_by_others(tmp_path):
    mask = os.umask(0o022)
    try:
        write_bytes(tmp_path / "report.json", b"{}")
    finally:
        os.umask(mask)
    path = tmp_path / "report.json"
    assert path.read_bytes() == b"{}" and stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.bin"
    write_bytes(path, b"old")
    with pytest.raises(TypeError):
        write_bytes(path, "not bytes")  # fails inside the write, after the temporary file exists
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["a.bin"]
