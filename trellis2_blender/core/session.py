"""The backend as the add-on sees it: start, load, run jobs, stop. No ``bpy``.

:class:`BackendSession` wraps one :class:`~.client.BackendClient`. Nothing here blocks
except :meth:`BackendSession.wait` (for the background/batch path): the handshake runs
on a helper thread, and everything else is advanced by :meth:`BackendSession.pump`,
which the UI calls from a timer on Blender's main thread.

States: ``STOPPED`` -> ``STARTING`` (process up, handshake) -> ``LOADING`` (models,
maybe downloading) -> ``READY`` (``BUSY`` while a job runs); ``ERROR`` when start,
load or the process failed. Jobs submitted before ``READY`` wait and are sent then.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .. import protocol
from .client import BackendClient, BackendConfig, BackendError
from .jobs import CANCELLED, Job

log = logging.getLogger(__name__)

STOPPED, STARTING, LOADING, READY, BUSY, ERROR = "STOPPED", "STARTING", "LOADING", "READY", "BUSY", "ERROR"


@dataclass(frozen=True)
class BackendSettings:
    """Everything needed to start the backend and load the models (copied from preferences)."""

    python: str
    backend_root: str
    log_path: str
    model_source: str  # protocol.Load.source: a repo id, a folder or protocol.BUNDLED_MINI_MODEL
    device: str = "auto"
    low_vram: bool = False
    offline: bool = False
    cache_dir: str | None = None
    background_removal: str = protocol.DEFAULT_BACKGROUND_REMOVAL  # protocol.BACKGROUND_REMOVAL_MODES
    background_remover: str | None = None  # a local RMBG-2.0 / BiRefNet folder (rmbg only)
    image_encoder: str | None = None  # a local DINOv3 folder
    sparse_structure_decoder: str | None = None  # a local microsoft/TRELLIS-image-large folder
    commercial_safe: bool = False
    token: str | None = field(default=None, repr=False)  # Hugging Face token: never printed or logged

    def weight_fields(self) -> dict[str, object]:
        """The weight-related fields of ``load`` and ``check_access`` (protocol field -> value)."""
        return {"offline": self.offline, "cache_dir": self.cache_dir, "token": self.token,
                "background_removal": self.background_removal, "background_remover": self.background_remover,
                "image_encoder": self.image_encoder,
                "sparse_structure_decoder": self.sparse_structure_decoder}
    allow_model_code: bool = False  # protocol.Load.allow_model_code: may RMBG's own code run

    def problem(self) -> str:
        """Why the backend cannot be started with these settings ("" when it can)."""
        if not self.python:
            return ("No backend Python: click Set Up Backend, or name an existing one "
                    "(add-on preferences: Backend Python)")
        if not self.backend_root:
            return "The backend sources are missing from this installation"
        if not self.model_source:
            return "No model set (add-on preferences: Model)"
        return ""


class BackendSession:
    def __init__(self, settings: BackendSettings,
                 client_factory: Callable[[BackendConfig], BackendClient] = BackendClient) -> None:
        self.settings = settings
        self._client_factory = client_factory
        self.client: BackendClient | None = None
        self.state = STOPPED
        self.message = ""
        self.percent = 0.0
        self._starter: threading.Thread | None = None
        self._start_error: str | None = None
        self._load_id: str | None = None
        self._jobs: dict[str, Job] = {}
        self._waiting: list[Job] = []
        self._downloads: dict[str, tuple[int, int]] = {}
        self._load_warning = ""

    @property
    def model_label(self) -> str:
        """The model source as the user chose it, in words."""
        source = self.settings.model_source
        return "bundled mini model" if source == protocol.BUNDLED_MINI_MODEL else source

    # --- lifetime ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the backend (if not running) and load the models; returns at once."""
        if self.state in (STARTING, LOADING, READY, BUSY):
            return
        problem = self.settings.problem()
        if problem:
            self._set(ERROR, problem)
            return
        config = BackendConfig(python=self.settings.python, backend_root=self.settings.backend_root,
                               log_path=self.settings.log_path, server_args=self._server_args())
        if self.client is not None:
            self.client.kill()
        self.client = self._client_factory(config)
        self._start_error = None
        self._set(STARTING, "Starting the backend")
        self._starter = threading.Thread(target=self._start_client, args=(self.client,), daemon=True,
                                         name="trellis2-backend-start")
        self._starter.start()

    def _server_args(self) -> tuple[str, ...]:
        args = ["--device", self.settings.device]
        if self.settings.offline:
            args.append("--offline")
        return tuple(args)

    def _start_client(self, client: BackendClient) -> None:
        # Helper thread: only the client is touched here; pump() looks at the outcome.
        try:
            client.start()
        except (BackendError, OSError) as exc:
            self._start_error = str(exc)

    def stop(self) -> None:
        """Stop the backend; running and waiting jobs end as cancelled."""
        if self._starter is not None:
            self._starter.join(timeout=30)
            self._starter = None
        if self.client is not None:
            try:
                self.client.stop()
            except Exception:  # noqa: BLE001 - stopping must not fail
                log.exception("stopping the backend")
                self.client.kill()
            self.client.poll()
        for job in [*self._jobs.values(), *self._waiting]:
            if not job.finished:
                job.state = CANCELLED
        self._jobs.clear()
        self._waiting.clear()
        self._load_id = None
        self._set(STOPPED, "")

    @property
    def busy(self) -> bool:
        return any(not job.finished for job in [*self._jobs.values(), *self._waiting])

    # --- jobs ----------------------------------------------------------------------------

    def submit(self, job: Job) -> Job:
        """Queue ``job``; it is sent as soon as the models are loaded. Starts the backend if needed."""
        self._waiting.append(job)
        if self.state in (STOPPED, ERROR):
            self.start()
        self._send_waiting()
        return job

    def cancel(self, job: Job) -> None:
        job.cancel_requested = True
        if job in self._waiting:
            self._waiting.remove(job)
            job.state = CANCELLED
            return
        if job.id and not job.finished and self.client is not None and self.client.alive:
            try:
                self.client.cancel(job.id)
            except BackendError:
                pass

    def _send_waiting(self) -> None:
        if self.state not in (READY, BUSY):
            if self.state == ERROR:
                for job in self._waiting:
                    job.fail("backend_unavailable", self.message)
                self._waiting.clear()
            return
        while self._waiting:
            job = self._waiting.pop(0)
            spec = job.spec
            try:
                if spec.kind == "generate":
                    job.id = self.client.generate(spec.images, spec.output_dir, **spec.request_fields())
                else:
                    job.id = self.client.retexture(spec.mesh, spec.image, spec.output_dir,
                                                   **spec.request_fields())
            except (BackendError, protocol.ProtocolError) as exc:
                job.fail("backend_died" if isinstance(exc, BackendError) else "invalid_request", str(exc))
                continue
            self._jobs[job.id] = job

    # --- events --------------------------------------------------------------------------

    def pump(self) -> list[protocol.Message]:
        """Advance start-up, route the backend's events to their jobs; never blocks."""
        if self.state == STARTING:
            if self._starter is not None and self._starter.is_alive():
                return []
            self._starter = None
            if self._start_error is not None or self.client is None or self.client.hello is None:
                self._set(ERROR, self._start_error or "The backend failed to start")
                self._send_waiting()
                return []
            self._set(LOADING, f"Loading {self.model_label}")
            self._load_warning = ""
            try:
                self._load_id = self.client.load(self.settings.model_source, low_vram=self.settings.low_vram,
                                                 commercial_safe=self.settings.commercial_safe,
                                                 allow_model_code=self.settings.allow_model_code,
                                                 **self.settings.weight_fields())
            except BackendError as exc:
                self._set(ERROR, str(exc))
        if self.client is None or self.state == STOPPED:
            return []
        events = self.client.poll()
        for event in events:
            self._route(event)
        if self.state in (READY, BUSY) and not self.client.alive:
            self._set(ERROR, f"The backend stopped unexpectedly (exit code {self.client.returncode})")
        self._send_waiting()
        if self.state in (READY, BUSY):
            self.state = BUSY if any(not j.finished for j in self._jobs.values()) else READY
        self._jobs = {jid: job for jid, job in self._jobs.items() if not job.finished}
        return events

    def _route(self, event: protocol.Message) -> None:
        job_id = getattr(event, "job", None)
        if isinstance(event, protocol.Log):
            level = logging.WARNING if event.level in ("warning", "error") else logging.INFO
            log.log(level, "backend: %s", event.message)
        if job_id is not None and job_id == self._load_id:
            self._route_load(event)
        elif job_id in self._jobs:
            job = self._jobs[job_id]
            job.handle(event)
            if isinstance(event, protocol.Error) and event.code == "backend_died":
                self._set(ERROR, event.message)

    def _route_load(self, event: protocol.Message) -> None:
        if isinstance(event, protocol.Download):
            # Keyed by repo and file: the backend reports a repo's running total with file "".
            self._downloads[f"{event.repo}/{event.file}"] = (event.bytes, event.total)
            done = sum(b for b, _ in self._downloads.values())
            total = sum(t for _, t in self._downloads.values())
            self.percent = 100.0 * done / total if total else 0.0
            self.message = (f"Downloading {event.repo}{': ' + event.file if event.file else ''} "
                            f"({done / 1e9:.2f} of {total / 1e9:.2f} GB)")
        elif isinstance(event, protocol.Log) and event.level == "warning":
            self._load_warning = event.message  # e.g. the bundled mini model standing in for the official
        elif isinstance(event, protocol.Error):
            hint = f" ({event.hint})" if event.hint else ""
            self._set(ERROR, f"{event.message}{hint}")
        elif isinstance(event, protocol.Done):
            self._load_id = None
            if event.status == "ok":
                note = f": {self._load_warning}" if self._load_warning else ""
                self._set(READY, f"Ready ({self.model_label}){note}")
                self.percent = 100.0
            elif self.state != ERROR:
                self._set(ERROR, f"Loading the models ended: {event.status}")

    def _set(self, state: str, message: str) -> None:
        if state != self.state or message != self.message:
            log.info("backend %s: %s", state.lower(), message)
        self.state, self.message = state, message

    # --- blocking use (background mode, batch) ------------------------------------------

    def wait_loaded(self, timeout: float | None = None, poll_s: float = 0.05) -> str:
        """Pump while the backend starts and loads (at most ``timeout`` seconds); returns the state
        it reached: READY, ERROR, or still STARTING/LOADING when the time ran out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.state in (STARTING, LOADING) and (deadline is None or time.monotonic() < deadline):
            self.pump()
            if self.state in (STARTING, LOADING):
                time.sleep(poll_s)
        return self.state

    def wait(self, job: Job, timeout: float | None = None, poll_s: float = 0.05,
             on_tick: Callable[[Job], None] | None = None) -> Job:
        """Pump until ``job`` is finished. KeyboardInterrupt cancels the job, then keeps waiting."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not job.finished:
            try:
                self.pump()
                if on_tick is not None:
                    on_tick(job)
                if job.finished:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    self.cancel(job)
                    deadline = None if job.finished else time.monotonic() + 30
                    if job.finished:
                        break
                time.sleep(poll_s)
            except KeyboardInterrupt:
                log.info("interrupted: cancelling the job")
                self.cancel(job)
        return job
