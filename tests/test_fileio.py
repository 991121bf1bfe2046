"""Atomic writes: complete file or nothing, with ordinary permissions."""

from __future__ import annotations

import os
import stat

import pytest

from backend.fileio import write_atomic


def test_writes_bytes_and_callables_with_umask_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        a = write_atomic(tmp_path / "a.bin", b"abc")
        b = write_atomic(tmp_path / "b.bin", lambda fh: fh.write(b"xyz"))
    finally:
        os.umask(mask)
    assert a.read_bytes() == b"abc" and b.read_bytes() == b"xyz"
    assert stat.S_IMODE(a.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin"]


def test_a_failing_writer_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = write_atomic(tmp_path / "keep.bin", b"old")

    def broken(fh):
        fh.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(target, broken)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.bin"]
