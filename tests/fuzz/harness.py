"""An in-process ``serve``: the real :class:`Service` with the :class:`ReadingGenerator`.

Lines go in through :meth:`Service.handle_line`, as the reader thread hands them over; the
events come back decoded. :meth:`ServiceHarness.send` waits until the service is idle again,
so each line's events can be told apart.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from backend import protocol
from backend.server import channel
from backend.server.generators import LoadSpec
from backend.server.service import ServerConfig, Service
from tests.fuzz.reading_generator import ReadingGenerator


class _Capture:
    """A binary stream that keeps every written line."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self._lock = threading.Lock()

    def write(self, data: bytes) -> int:
        with self._lock:
            self.lines.extend(data.splitlines())
        return len(data)

    def flush(self) -> None:
        pass


class ServiceHarness:
    """A started service whose models are "loaded" from an empty local folder under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._out = _Capture()
        config = ServerConfig(generator="tests.fuzz.reading_generator:ReadingGenerator", device="cpu",
                              cache_dir=root / "hf", offline=True, bundled_release=None)
        self.service = Service(config, channel.Writer(self._out), self._factory)
        self.service._worker.start()
        (root / "model").mkdir(parents=True, exist_ok=True)
        events = self.send(protocol.encode(protocol.Load(id="harness-load", source=str(root / "model"))))
        if not events or not isinstance(events[-1], protocol.Done) or events[-1].status != "ok":
            raise RuntimeError(f"the harness could not load its generator: {events}")

    @staticmethod
    def _factory(spec: LoadSpec) -> ReadingGenerator:
        return ReadingGenerator(spec)

    def idle(self) -> bool:
        status = self.service._status("harness-idle")
        return status.running is None and not status.queued

    def send(self, line: bytes, timeout_s: float = 30.0) -> list[protocol.Message]:
        """Hand over one line (a trailing newline is stripped) and return the events it caused.

        Raises:
            TimeoutError: the service is still busy after ``timeout_s`` (a hang).
        """
        line = line[:-1] if line.endswith(b"\n") else line
        try:
            message = protocol.decode_request(line)
        except protocol.ProtocolError:
            message = None  # answered at once by handle_line
        if isinstance(message, protocol.Shutdown):
            raise ValueError("the harness keeps its service running; test shutdown on a real server")
        start = len(self._out.lines)
        self.service.handle_line(line)
        deadline = time.monotonic() + timeout_s
        # the worker marks itself idle just before it sends the job's done
        while not self.idle() or (message is not None and not self._done_since(start, message.id)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no done within {timeout_s} s after {line[:200]!r}")
            time.sleep(0.002)
        return [protocol.decode_event(raw) for raw in self._out.lines[start:]]

    def _done_since(self, start: int, job: str) -> bool:
        return any(isinstance(e, protocol.Done) and e.job == job
                   for e in (protocol.decode_event(raw) for raw in self._out.lines[start:]))

    def close(self) -> None:
        self.service._stop()
        self.service._worker.join(10)
