"""Non-blocking access to the backend service. No ``bpy``, no torch: stdlib only.

:class:`BackendClient` starts ``<python> -m backend serve`` as a child process, does the
protocol handshake, sends requests and hands back the events that have arrived, without
ever blocking the caller (Blender's UI thread polls it from a timer). A reader thread turns
the child's stdout into event objects on a queue; the child's stderr goes to a log file.

When the child dies (a crash, a kill, an exit), :meth:`BackendClient.poll` reports it: each
request still waiting gets an ``error`` (code ``backend_died``) and a ``done``, so every
request sees its ``done`` exactly once. :meth:`BackendClient.restart` starts a fresh one.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import protocol

log = logging.getLogger(__name__)


class BackendError(RuntimeError):
    """The backend could not be started, or is not running."""


@dataclass(frozen=True)
class BackendConfig:
    """How to start the backend: its interpreter, the folder holding ``backend/``, the log file."""

    python: str
    backend_root: str
    log_path: str
    server_args: tuple[str, ...] = ()  # e.g. ("--device", "cuda", "--offline")
    handshake_timeout_s: float = 120.0
    stop_timeout_s: float = 15.0


@dataclass(frozen=True)
class _Exited:
    """Reader-thread sentinel: the child's stdout closed."""

    returncode: int | None


class BackendClient:
    """One backend process and the requests sent to it."""

    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self._proc: subprocess.Popen[bytes] | None = None
        self._events: queue.Queue[protocol.Message | _Exited] = queue.Queue()
        self._backlog: list[protocol.Message] = []
        self._pending: set[str] = set()
        self._ids = itertools.count(1)
        self._write_lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self.hello: protocol.HelloReply | None = None
        self.returncode: int | None = None

    # --- lifetime ------------------------------------------------------------------------

    def start(self) -> protocol.HelloReply:
        """Start the child and handshake; raises :class:`BackendError` on failure or timeout."""
        if self.alive:
            raise BackendError("the backend is already running")
        Path(self.config.log_path).parent.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH")}
        command = [self.config.python, "-m", "backend", "serve", *self.config.server_args]
        with open(self.config.log_path, "ab") as log_file:
            # Started in backend_root, which `-m` puts first on sys.path as one entry: as PYTHONPATH,
            # a folder name holding the path separator (":" or ";") would be split in two.
            self._proc = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file, env=env,
                cwd=self.config.backend_root,
                start_new_session=sys.platform != "win32",
                creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
        self.returncode = None
        self.hello = None
        self._events = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(self._proc, self._events), daemon=True,
                                        name=f"trellis2-backend-{self._proc.pid}")
        self._reader.start()
        return self._handshake()

    def restart(self) -> protocol.HelloReply:
        """Stop the child if it still runs (killing it if it must), then start a new one."""
        self.stop()
        self._backlog = self.poll()  # the old child's last events stay for the caller's next poll()
        return self.start()

    def stop(self, timeout: float | None = None) -> int | None:
        """Ask the child to shut down; kill it if it does not exit in time. Returns its exit code."""
        proc = self._proc
        if proc is None:
            return self.returncode
        timeout = self.config.stop_timeout_s if timeout is None else timeout
        if proc.poll() is None:
            try:
                self._send(protocol.Shutdown(id=self._new_id("shutdown")))
            except BackendError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("backend %s did not stop in %.0f s; killing it", proc.pid, timeout)
                proc.kill()
                proc.wait(5)
        self.returncode = proc.returncode
        if self._reader is not None:
            self._reader.join(5)  # so that poll() now returns every event the child sent
        return self.returncode

    def kill(self) -> None:
        """End the child at once (e.g. when Blender quits)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(5)
            if self._reader is not None:
                self._reader.join(5)

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def pending(self) -> frozenset[str]:
        """Ids of requests sent whose ``done`` has not been polled yet."""
        return frozenset(self._pending)

    # --- requests ------------------------------------------------------------------------

    def load(self, source: str, **fields: Any) -> str:
        """Load models from a repo id or folder (see :class:`protocol.Load`); returns the request id."""
        return self._send(protocol.Load(id=self._new_id("load"), source=source, **fields))

    def check_access(self, source: str, **fields: Any) -> str:
        """Ask which repositories ``source`` needs are readable (see :class:`protocol.CheckAccess`)."""
        return self._send(protocol.CheckAccess(id=self._new_id("access"), source=source, **fields))

    def generate(self, images: list[str], output_dir: str, **fields: Any) -> str:
        """Queue a generate job (see :class:`protocol.Generate`); returns its id."""
        return self._send(protocol.Generate(id=self._new_id("gen"), images=list(images),
                                            output_dir=output_dir, **fields))

    def retexture(self, mesh: str, image: str, output_dir: str, **fields: Any) -> str:
        """Queue a retexture job (see :class:`protocol.Retexture`); returns its id."""
        return self._send(protocol.Retexture(id=self._new_id("tex"), mesh=mesh, image=image,
                                             output_dir=output_dir, **fields))

    def cancel(self, job: str) -> str:
        return self._send(protocol.Cancel(id=self._new_id("cancel"), job=job))

    def status(self) -> str:
        return self._send(protocol.Status(id=self._new_id("status")))

    def _new_id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids)}"

    def _send(self, message: protocol.Message) -> str:
        protocol.check_request(message)  # the server's validation, on the values as they are
        line = protocol.encode(message)
        self._write(line)
        mid = message.id  # type: ignore[attr-defined]
        self._pending.add(mid)
        return mid

    def _write(self, line: bytes) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None or proc.stdin is None:
            raise BackendError("the backend is not running")
        with self._write_lock:
            try:
                proc.stdin.write(line)
                proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError) as exc:
                raise BackendError(f"the backend is not running ({exc})") from None

    # --- events --------------------------------------------------------------------------

    def poll(self) -> list[protocol.Message]:
        """Every event that has arrived since the last call; never blocks."""
        out, self._backlog = self._backlog, []
        while True:
            try:
                item = self._events.get_nowait()
            except queue.Empty:
                return out
            out.extend(self._accept(item))

    def wait(self, job: str, timeout: float) -> list[protocol.Message]:
        """Block until ``job``'s ``done`` (or ``timeout`` seconds); returns that job's events.

        Events of other requests are kept for the next :meth:`poll`. For headless use and tests;
        Blender's UI uses :meth:`poll` from a timer.
        """
        deadline = time.monotonic() + timeout
        mine: list[protocol.Message] = []
        others: list[protocol.Message] = []
        batch, self._backlog = self._backlog, []  # already accepted, in arrival order
        finished = False
        try:
            while True:
                for event in batch:
                    if finished or getattr(event, "job", None) != job:
                        others.append(event)
                        continue
                    mine.append(event)
                    finished = isinstance(event, protocol.Done)
                if finished:
                    return mine
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no done for {job} within {timeout:.1f} s")
                try:
                    batch = self._accept(self._events.get(timeout=min(remaining, 0.5)))
                except queue.Empty:
                    batch = []
        finally:
            self._backlog = others + self._backlog

    def _accept(self, item: protocol.Message | _Exited) -> list[protocol.Message]:
        """Track ``done``s; turn the exit sentinel into an error and a done per waiting request."""
        if isinstance(item, protocol.Done):
            self._pending.discard(item.job)
            return [item]
        if not isinstance(item, _Exited):
            return [item]
        self.returncode = item.returncode
        events: list[protocol.Message] = []
        for job in sorted(self._pending):
            events.append(protocol.Error(
                job=job, code="backend_died", message=f"the backend stopped (exit code {item.returncode})",
                hint=f"see the log at {self.config.log_path}; restart the backend to go on"))
            events.append(protocol.Done(job=job, status="error"))
        self._pending.clear()
        return events

    @staticmethod
    def _read(proc: subprocess.Popen[bytes], events: queue.Queue) -> None:
        """Reader thread: stdout lines -> events; at EOF, the exit sentinel."""
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                events.put(protocol.decode_event(line))
            except protocol.ProtocolError as exc:
                log.warning("backend %s sent an invalid message (%s): %.200r", proc.pid, exc, line)
        try:
            returncode = proc.wait(10)
        except subprocess.TimeoutExpired:
            returncode = None
        events.put(_Exited(returncode))

    def _handshake(self) -> protocol.HelloReply:
        hello_id = self._send(protocol.Hello(id=self._new_id("hello"), version=protocol.PROTOCOL_VERSION,
                                             client="trellis2_blender"))
        try:
            events = self.wait(hello_id, self.config.handshake_timeout_s)
        except TimeoutError:
            self.kill()
            raise BackendError(f"the backend did not answer within {self.config.handshake_timeout_s:.0f} s; "
                               f"see {self.config.log_path}") from None
        for event in events:
            if isinstance(event, protocol.HelloReply):
                self.hello = event
                return event
            if isinstance(event, protocol.Error):
                self.stop()
                raise BackendError(f"{event.code}: {event.message} {event.hint}".strip())
        raise BackendError(f"the backend failed to start (exit code {self.returncode}); "
                           f"see {self.config.log_path}")
