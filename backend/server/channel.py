"""The protocol's byte streams: stdout claimed for messages, stdin read in bounded lines."""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import BinaryIO

from backend import protocol

log = logging.getLogger(__name__)


def claim_stdout() -> BinaryIO:
    """Keep the real stdout for the protocol and point fd 1 (and ``sys.stdout``) at stderr.

    After this, stray output from libraries (``print``, tqdm, compiler chatter written
    straight to fd 1) lands in the log instead of corrupting the message stream.
    """
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(protocol_fd, "wb", buffering=0)


class Writer:
    """Writes whole messages, one per line, from any thread."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self.broken = False

    def send(self, message: protocol.Message) -> bool:
        """Send one message; False (and ``broken``) once the client has gone away."""
        try:
            line = protocol.encode(message)
        except (ValueError, TypeError):  # ProtocolError (too large) included; a bug must not kill a thread
            log.exception("could not encode %s", message.TYPE)
            job = getattr(message, "job", None)
            line = protocol.encode(protocol.Error(
                job=job if isinstance(job, str) else None, code="internal",
                message=f"the server could not encode a {message.TYPE} message", hint="see the backend log"))
        with self._lock:
            if self.broken:
                return False
            try:
                self._stream.write(line)
                self._stream.flush()
            except (BrokenPipeError, ValueError, OSError):
                self.broken = True
                return False
        return True


class OversizedLine(Exception):
    """A line longer than :data:`protocol.MAX_LINE_BYTES`; it has been skipped."""

    def __init__(self, size: int) -> None:
        super().__init__(f"message too large ({size} bytes or more; the limit is {protocol.MAX_LINE_BYTES})")
        self.size = size


def read_lines(stream: BinaryIO, limit: int = protocol.MAX_LINE_BYTES):
    """Yield each line (without the newline) or an :class:`OversizedLine`; stops at EOF.

    Memory stays bounded: an oversized line is read in ``limit``-sized pieces and dropped.
    A last line without its newline (the client died mid-write) is yielded as it is, so it
    gets an error reply like any other truncated message.
    """
    while True:
        line = stream.readline(limit)
        if not line:
            return
        if line.endswith(b"\n"):
            yield line[:-1]
            continue
        if len(line) < limit:  # EOF without a newline
            yield line
            return
        skipped = len(line)
        while True:
            rest = stream.readline(limit)
            skipped += len(rest)
            if not rest or rest.endswith(b"\n"):
                break
        yield OversizedLine(skipped)
        if not rest:
            return
