"""Damaged O-Voxel files and failed writes: one clear error (exit 2), never a traceback or a wrapped value."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backend.__main__ import main
from backend.meshio import write_glb
from backend.ovoxel import OVoxel, OVoxelError, save_ovoxel
from backend.ovoxel.io import read_ovoxel_file
from tests.fixtures.meshes import box

ROOT = Path(__file__).resolve().parents[2]


def _small_ovoxel() -> OVoxel:
    coords = np.array([[1, 2, 3], [4, 5, 6]], np.int32)
    return OVoxel(resolution=64, coords=coords, dual_vertices=np.full((2, 3), 0.5, np.float32),
                  intersected=np.zeros((2, 3), bool), aabb=np.array([[-0.5] * 3, [0.5] * 3]))


@pytest.mark.parametrize("cut", ["empty", "half", "tail"])
def test_decode_of_a_truncated_npz_is_one_clear_error(tmp_path, caplog, cut):
    save_ovoxel(tmp_path / "good.npz", _small_ovoxel())
    data = (tmp_path / "good.npz").read_bytes()
    damaged = {"empty": b"", "half": data[: len(data) // 2], "tail": data[:-30]}[cut]
    (tmp_path / "bad.npz").write_bytes(damaged)
    with caplog.at_level(logging.ERROR):
        code = main(["ovoxel", "decode", str(tmp_path / "bad.npz"), str(tmp_path / "out.glb")])
    assert code == 2
    assert "bad.npz" in caplog.text and "npz" in caplog.text
    assert not (tmp_path / "out.glb").exists()


def test_coordinates_beyond_int32_are_refused_not_wrapped(tmp_path):
    save_ovoxel(tmp_path / "good.npz", _small_ovoxel())
    arrays = dict(np.load(tmp_path / "good.npz"))
    arrays["coords"] = arrays["coords"].astype(np.int64) + (1 << 32)  # wraps back to the same int32 values
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    (tmp_path / "wrapped.npz").write_bytes(buffer.getvalue())
    with pytest.raises(OVoxelError, match=r"coords must lie in \[0, 64\)"):
        read_ovoxel_file(tmp_path / "wrapped.npz")


# The child fills the "disk": writes past 64 KiB fail with EFBIG (SIGXFSZ ignored), as ENOSPC would.
_FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))
from backend.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def test_full_disk_during_encode_is_reported_and_keeps_the_old_file(tmp_path):
    mesh_path = tmp_path / "box.glb"
    write_glb(mesh_path, box(subdivisions=8))
    out = tmp_path / "box.npz"
    old = b"the earlier result"
    out.write_bytes(old)
    proc = subprocess.run([sys.executable, "-c", _FULL_DISK, "ovoxel", "encode", str(mesh_path), str(out),
                           "--resolution", "128"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"cannot write {str(out)!r}" in proc.stderr and "File too large" in proc.stderr
    assert out.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["box.glb", "box.npz"]  # no temp file left


# the "encrypted" and "strong encryption" flag bits, an unknown compression method
@pytest.mark.parametrize("flag_byte", [0x01, 0x41, 0x08])
def test_zip_entries_python_cannot_open_are_one_clear_error(tmp_path, flag_byte):
    save_ovoxel(tmp_path / "good.npz", _small_ovoxel())
    data = bytearray((tmp_path / "good.npz").read_bytes())
    central = data.find(b"PK\x01\x02")  # the first central-directory entry, which zipfile trusts
    if flag_byte in (0x01, 0x41):
        data[central + 8] |= flag_byte  # general-purpose flags (found by scripts/fuzz_long.py)
    else:
        data[central + 10] = 0x63  # compression method 99 (AES)
    (tmp_path / "odd.npz").write_bytes(bytes(data))
    with pytest.raises(OVoxelError, match="odd.npz"):
        read_ovoxel_file(tmp_path / "odd.npz")
