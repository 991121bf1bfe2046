"""Abandonable third-party calls: cancel and time limits stop the child; errors come back typed."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from backend.pipeline.api import Cancelled, CancelToken
from backend.pipeline.errors import InputError
from backend.pipeline.export.uv import unwrap
from backend.pipeline.isolation import StageTimeout, run_isolated
from tests.fixtures.meshes import box


def hang_forever(pid_file: str) -> None:
    with open(pid_file, "w") as fh:
        fh.write(str(os.getpid()))
    while True:
        time.sleep(0.01)


def allocate(gib: float) -> int:
    return len(bytearray(int(gib * 2**30)))


def fail(message: str) -> None:
    raise ValueError(message)


def add(a: int, b: int) -> int:
    return a + b


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_the_result_and_the_errors_of_the_call_come_back():
    assert run_isolated(add, 2, 3, what="adding", timeout_s=60) == 5
    with pytest.raises(ValueError, match="bad value"):
        run_isolated(fail, "bad value", what="failing", timeout_s=60)


def test_cancel_stops_a_call_that_never_returns(tmp_path):
    cancel = CancelToken()
    pid_file = tmp_path / "pid"

    def cancel_once_running():
        while not pid_file.exists() or not pid_file.read_text():
            time.sleep(0.01)
        cancel.cancel()

    threading.Thread(target=cancel_once_running, daemon=True).start()
    with pytest.raises(Cancelled):
        run_isolated(hang_forever, str(pid_file), what="hanging", timeout_s=600, cancel=cancel)
    assert _gone(int(pid_file.read_text()))


def test_a_call_past_its_time_limit_is_stopped(tmp_path):
    with pytest.raises(StageTimeout, match="hanging did not finish within 3 s"):
        run_isolated(hang_forever, str(tmp_path / "pid"), what="hanging", timeout_s=3)
    pid_file = tmp_path / "pid"  # absent if the child was still starting when time ran out
    assert not pid_file.exists() or _gone(int(pid_file.read_text()))


def test_runaway_memory_fails_in_the_child():
    with pytest.raises(InputError, match="needed more than 0.5 GiB"):
        run_isolated(allocate, 2.0, what="allocating", timeout_s=60, memory_bytes=2**29)


@pytest.mark.timeout(300)
def test_xatlas_unwraps_a_mesh_at_1e30_scale():
    mesh = box(subdivisions=2)
    unwrapped = unwrap(mesh.vertices * 1e30, mesh.faces, 256)  # xatlas charted this forever before
    assert np.isfinite(unwrapped.uvs).all() and len(unwrapped.faces) == mesh.num_faces


def test_decimation_runs_isolated_and_reaches_its_target():
    from backend.pipeline.export.mesh_ops import decimate
    from tests.fixtures.meshes import uv_sphere

    mesh = uv_sphere(rings=32, segments=64)
    cancel = CancelToken()
    v, f = decimate(mesh.vertices, mesh.faces, 1000, cancel)
    assert 500 < len(f) <= 1100 and np.isfinite(v).all() and f.max() < len(v)
    cancel.cancel()
    with pytest.raises(Cancelled):  # a cancelled job does not start the child's work
        decimate(mesh.vertices, mesh.faces, 1000, cancel)
