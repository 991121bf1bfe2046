"""The add-on's logger: full details go to a rotating file, short messages go to ``report``."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

LOGGER_NAME = __package__ or "trellis2_blender"
log = logging.getLogger(LOGGER_NAME)

_handler: logging.Handler | None = None


def log_file() -> Path:
    from . import paths

    return paths.user_dir("logs") / "addon.log"


def configure() -> None:
    """Attach the file handler once (called from ``register``)."""
    global _handler
    if _handler is not None:
        return
    try:
        handler: logging.Handler = logging.handlers.RotatingFileHandler(
            log_file(), maxBytes=2_000_000, backupCount=2, encoding="utf-8")
    except OSError:
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    _handler = handler


def shutdown() -> None:
    global _handler
    if _handler is not None:
        log.removeHandler(_handler)
        _handler.close()
        _handler = None


# Protocol log levels -> the report type Blender shows.
REPORT_TYPES = {"debug": "DEBUG", "info": "INFO", "warning": "WARNING", "error": "ERROR", "fatal": "ERROR"}


def report_type(level: str) -> str:
    return REPORT_TYPES.get(level.lower(), "INFO")
