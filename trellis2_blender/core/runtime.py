"""The one backend session of this Blender process (the models stay loaded between jobs)."""

from __future__ import annotations

import threading

from .session import BackendSession, BackendSettings

_session: BackendSession | None = None


def current() -> BackendSession | None:
    return _session


def session_for(settings: BackendSettings) -> BackendSession:
    """The running session when its settings match; otherwise a new one (the old one is stopped)."""
    global _session
    if _session is not None and _session.settings != settings:
        if _session.busy:
            return _session  # settings apply after the running job; never stop it underneath
        _session.stop()
        _session = None
    if _session is None:
        _session = BackendSession(settings)
    return _session


def shutdown(wait: bool = True) -> None:
    """Stop the session. ``wait=False`` returns at once and lets a helper thread wait for the
    backend to exit (up to the client's stop timeout), so Blender's UI never blocks on it."""
    global _session
    session, _session = _session, None
    if session is None:
        return
    if wait:
        session.stop()
    else:
        threading.Thread(target=session.stop, name="trellis2-backend-stop", daemon=True).start()
