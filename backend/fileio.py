"""Atomic file writes: a temporary file in the target folder, then ``os.replace``.

A reader never sees a half-written file, and a failure leaves the old file (or
nothing) in place. The result gets the permissions a plain ``open()`` would give
(``0o666`` minus the umask), not ``mkstemp``'s private ``0o600``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, data: bytes | Callable[[BinaryIO], None]) -> Path:
    """Write ``data`` (bytes, or a function that writes to a binary file) to ``path`` atomically."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            if isinstance(data, bytes | bytearray):
                fh.write(data)
            else:
                data(fh)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def output_folder_problem(folder: str | os.PathLike) -> str | None:
    """Why results cannot be written into ``folder``, or None when they can.

    ``folder`` itself need not exist (it is created when the results are written): the check
    finds its nearest existing ancestor, which must be a folder in which a file can be created
    (probed with a temporary file, so read-only mounts and permissions count as the write
    would). Nothing is left behind and no folder is created.
    """
    try:
        existing = Path(folder)
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            return f"{existing} is a file, not a folder"
        with tempfile.TemporaryFile(dir=existing, prefix=".write-check-"):
            pass
    except ValueError as exc:  # an embedded NUL character
        return f"not a usable path ({exc})"
    except OSError as exc:
        return f"cannot write into {getattr(exc, 'filename', None) or folder}: {exc.strerror or exc}"
    return None
