"""The one backend session of this Blender process (the models stay loaded between jobs)."""

from __future__ import annotations

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


def shutdown() -> None:
    global _session
    if _session is not None:
        _session.stop()
        _session = None
