"""The add-on's blocking wait for the backend to load (background mode, tests): it returns the state
the backend reached, and returns at once when the backend cannot start."""

from __future__ import annotations

from tests.server.test_wire_fields import _session
from trellis2_blender.core.session import ERROR, READY, STARTING, BackendSession, BackendSettings


def test_wait_loaded_reaches_ready_with_the_real_server(tmp_path):
    session = _session(tmp_path)
    try:
        session.start()
        assert session.state == STARTING
        assert session.wait_loaded(timeout=60) == READY
        assert session.state == READY
    finally:
        session.stop()


def test_wait_loaded_returns_the_error_of_a_backend_that_cannot_start(tmp_path):
    session = BackendSession(BackendSettings(python="", backend_root="", log_path=str(tmp_path / "log"),
                                             model_source=""))
    session.start()
    assert session.wait_loaded(timeout=5) == ERROR
    assert "Backend Python" in session.message
