"""Request dispatch and the job queue.

Two threads: the reader (the caller of :meth:`Service.serve`) decodes every line from
stdin and answers ``hello``, ``status`` and ``cancel`` at once; ``load``, ``generate`` and
``retexture`` go into a FIFO queue that one worker thread runs, so the models stay loaded
between jobs and a ``cancel`` can arrive while a job runs. Every request whose id could be
read gets exactly one ``done``, last. A failing job becomes an ``error`` event; the server
goes on with the next one.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

from backend import protocol
from backend.pipeline import api, weights
from backend.pipeline import model_source as models
from backend.server import channel, device, jobs
from backend.server.generators import GeneratorFactory, LoadSpec

log = logging.getLogger(__name__)

QUEUED_REQUESTS = (protocol.Load, protocol.CheckAccess, protocol.Generate, protocol.Retexture)
BAD_MESSAGE_HINT = f"send one JSON request per line (protocol version {protocol.PROTOCOL_VERSION})"
PROGRESS_INTERVAL_S = 0.05  # at most ~20 progress events a second within one stage
CHOOSE_ANOTHER_MODEL = "choose another model (add-on preferences: Model Source)"


@dataclass(frozen=True)
class ServerConfig:
    """The service's settings, from the command line.

    ``bundled_release`` is the bundled mini release folder: loaded for ``source`` =
    ``protocol.BUNDLED_MINI_MODEL`` and in place of unavailable official weights (None: neither).
    """

    generator: str = "backend.server.generators:trellis2"
    device: str = "auto"
    cache_dir: Path | None = None
    offline: bool = False
    stop_timeout_s: float = 30.0
    bundled_release: Path | None = models.BUNDLED_MINI_RELEASE


@dataclass
class _Job:
    message: protocol.Message
    request: object = None  # the converted pipeline request (generate / retexture)
    token: api.CancelToken = field(default_factory=api.CancelToken)

    @property
    def id(self) -> str:
        return self.message.id  # type: ignore[attr-defined]


class Service:
    """The backend service: feed it stdin with :meth:`serve`; it writes events via ``writer``."""

    def __init__(self, config: ServerConfig, writer: channel.Writer, factory: GeneratorFactory) -> None:
        self.config = config
        self._writer = writer
        self._factory = factory
        self._cond = threading.Condition()
        self._queue: deque[_Job] = deque()
        self._running: _Job | None = None
        self._stopping = False
        self._shutdown_id: str | None = None
        self._generator: api.Generator | None = None
        self._loaded: str | None = None
        self._jobs_done = 0
        self._worker = threading.Thread(target=self._work, name="trellis2-jobs", daemon=True)

    # --- reader side ---------------------------------------------------------------------

    def serve(self, stream: BinaryIO) -> int:
        """Read requests until ``shutdown`` or end of input; returns the exit code."""
        self._worker.start()
        for item in channel.read_lines(stream):
            if isinstance(item, channel.OversizedLine):
                self._send(protocol.Error(job=None, code="bad_message", message=str(item),
                                          hint="send large data as files in the job folder"))
            else:
                self.handle_line(item)
            if self._stopping or self._writer.broken:
                break
        else:
            log.info("input closed; stopping")
        self._stop()
        self._worker.join(self.config.stop_timeout_s)
        if self._worker.is_alive():
            log.error("the running job did not stop within %.0f s", self.config.stop_timeout_s)
        if self._shutdown_id is not None:
            self._send(protocol.Done(job=self._shutdown_id, status="ok"))
        return 0

    def handle_line(self, raw: bytes) -> None:
        """Decode one line and act on it; never raises."""
        try:
            message = protocol.decode_request(raw)
        except protocol.ProtocolError as exc:
            job = exc.job if exc.job is not None and not self._is_active(exc.job) else None
            hint = BAD_MESSAGE_HINT if exc.code == "bad_message" else "check the request's values"
            self._send(protocol.Error(job=job, code=exc.code, message=str(exc), hint=hint))
            if job is not None:
                self._send(protocol.Done(job=job, status="error"))
            return
        try:
            self._dispatch(message)
        except Exception as exc:  # noqa: BLE001 - a bug here must not end the server
            log.exception("handling %s failed", message.TYPE)
            self._finish_with_error(message.id, "internal", f"{type(exc).__name__}: {exc}")  # type: ignore[attr-defined]

    def _dispatch(self, message: protocol.Message) -> None:
        mid = message.id  # type: ignore[attr-defined]
        if isinstance(message, QUEUED_REQUESTS):
            if self._is_active(mid):
                self._send(protocol.Error(job=None, code="bad_message", hint="give every request a new id",
                                          message=f"id {mid!r} is already in use"))
                return
            self._enqueue(message)
        elif isinstance(message, protocol.Hello):
            self._hello(message)
        elif isinstance(message, protocol.Status):
            self._send(self._status(mid))
            self._send(protocol.Done(job=mid, status="ok"))
        elif isinstance(message, protocol.Cancel):
            self._cancel(message)
        elif isinstance(message, protocol.Shutdown):
            self._shutdown_id = mid
            self._stopping = True

    def _hello(self, message: protocol.Hello) -> None:
        if message.version != protocol.PROTOCOL_VERSION:
            self._finish_with_error(
                message.id, "version_mismatch",
                f"client speaks protocol {message.version}, server speaks {protocol.PROTOCOL_VERSION}",
                "update the add-on and the backend to the same release")
            return
        self._send(protocol.HelloReply(job=message.id, version=protocol.PROTOCOL_VERSION,
                                       server="trellis2-blender backend", pid=os.getpid(),
                                       capabilities=self._capabilities()))
        self._send(protocol.Done(job=message.id, status="ok"))

    def _capabilities(self) -> dict[str, object]:
        caps: dict[str, object] = dict(device.describe(self.config.device))
        wconfig = weights.WeightsConfig(cache_dir=self.config.cache_dir, offline=True)
        caps["models"] = {repo: weights.cached_snapshot(repo, wconfig) is not None
                          for repo in (weights.TRELLIS2_REPO, weights.DINOV3_REPO, weights.RMBG_REPO)}
        caps["gated"] = {w.repo: w.licence for w in weights.WEIGHT_REPOS.values() if w.gated}
        caps["gated_notice"] = weights.gated_notice()
        caps["generator"] = self.config.generator
        caps["requests"] = sorted(protocol.REQUESTS)
        caps["max_line_bytes"] = protocol.MAX_LINE_BYTES
        return caps

    def _status(self, mid: str) -> protocol.StatusReply:
        with self._cond:
            running = self._running.id if self._running else None
            queued = [j.id for j in self._queue]
        return protocol.StatusReply(job=mid, state="busy" if running else "idle", running=running,
                                    queued=queued[: protocol.MAX_LIST_ITEMS], loaded=self._loaded,
                                    rss_bytes=device.rss_bytes(), jobs_done=self._jobs_done)

    def _enqueue(self, message: protocol.Message) -> None:
        job = _Job(message)
        try:
            if isinstance(message, protocol.Generate):
                job.request = jobs.to_generate(message)
            elif isinstance(message, protocol.Retexture):
                job.request = jobs.to_retexture(message)
        except Exception as exc:  # noqa: BLE001 - bad values are the client's error, reported as such
            failure = jobs.classify(exc)
            self._finish_with_error(job.id, failure.code, failure.message, failure.hint)
            return
        with self._cond:
            self._queue.append(job)
            self._cond.notify()

    def _cancel(self, message: protocol.Cancel) -> None:
        removed = None
        with self._cond:
            if self._running is not None and self._running.id == message.job:
                self._running.token.cancel()
                found = True
            else:
                removed = next((j for j in self._queue if j.id == message.job), None)
                if removed is not None:
                    self._queue.remove(removed)
                found = removed is not None
        if removed is not None:
            self._send(protocol.Done(job=removed.id, status="cancelled"))
        if found:
            self._send(protocol.Done(job=message.id, status="ok"))
        else:
            self._finish_with_error(message.id, "unknown_job", f"no queued or running job {message.job!r}",
                                    "it may have finished already")

    def _stop(self) -> None:
        """Cancel the running job and every queued one; the worker then exits."""
        with self._cond:
            self._stopping = True
            dropped = list(self._queue)
            self._queue.clear()
            if self._running is not None:
                self._running.token.cancel()
            self._cond.notify_all()
        for job in dropped:
            self._send(protocol.Done(job=job.id, status="cancelled"))

    def _is_active(self, job_id: str) -> bool:
        with self._cond:
            return (self._running is not None and self._running.id == job_id) or any(
                j.id == job_id for j in self._queue)

    def _send(self, message: protocol.Message) -> None:
        if not self._writer.send(message):
            self._stopping = True

    def _finish_with_error(self, job: str, code: str, message: str, hint: str = "") -> None:
        self._send(protocol.Error(job=job, code=code, message=message, hint=hint))
        self._send(protocol.Done(job=job, status="error"))

    # --- worker side ---------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                job = self._queue.popleft()
                self._running = job
            started = time.monotonic()
            status = self._run(job)
            device.release_memory()
            with self._cond:
                self._running = None
                self._jobs_done += 1
            self._send(protocol.Done(job=job.id, status=status, seconds=round(time.monotonic() - started, 4)))

    def _run(self, job: _Job) -> str:
        """Run one job; returns its done status. Every failure is reported, none escapes."""
        try:
            job.token.check()
            message = job.message
            if isinstance(message, protocol.Load):
                self._load(job, message)
            elif isinstance(message, protocol.CheckAccess):
                self._check_access(job, message)
            else:
                generator = self._generator
                if generator is None:
                    self._finish_error_event(job.id, "not_loaded", "no models are loaded",
                                             "send a load request first")
                    return "error"
                on_progress = self._progress_reporter(job)
                if isinstance(message, protocol.Generate):
                    result = generator.generate(job.request, on_progress, job.token)  # type: ignore[arg-type]
                else:
                    result = generator.retexture(job.request, on_progress, job.token)  # type: ignore[arg-type]
                job.token.check()
                self._send(jobs.to_result(job.id, message.output_dir, result))  # type: ignore[attr-defined]
            return "ok"
        except api.Cancelled:
            log.info("job %s cancelled", job.id)
            return "cancelled"
        except BaseException as exc:  # noqa: BLE001 - the server outlives every job
            if job.token.cancelled and not jobs.is_out_of_memory(exc):
                log.info("job %s cancelled (%s)", job.id, type(exc).__name__)
                return "cancelled"
            failure = jobs.classify(exc)
            log.error("job %s failed: %s", job.id, failure.message, exc_info=failure.code == "internal")
            self._finish_error_event(job.id, failure.code, failure.message, failure.hint)
            return "error"

    def _finish_error_event(self, job: str, code: str, message: str, hint: str) -> None:
        self._send(protocol.Error(job=job, code=code, message=message, hint=hint))

    def _progress_reporter(self, job: _Job):
        last = {"stage": None, "time": 0.0}

        def report(p: api.Progress) -> None:
            now = time.monotonic()
            if p.stage == last["stage"] and p.step < p.total and now - last["time"] < PROGRESS_INTERVAL_S:
                job.token.check()
                return
            last.update(stage=p.stage, time=now)
            fraction = float(p.fraction)
            fraction = min(max(fraction, 0.0), 1.0) if fraction == fraction else 0.0
            self._send(protocol.ProgressEvent(
                job=job.id, stage=str(p.stage)[:200], step=int(p.step), total=int(p.total),
                fraction=fraction, message=str(p.message)[:500]))
            job.token.check()

        return report

    def _overrides_and_config(self, message: protocol.Load | protocol.CheckAccess,
                              ) -> tuple[dict[str, str], weights.WeightsConfig]:
        """The local-folder overrides (repo id -> source) and hub settings a request names."""
        overrides = {}
        if message.image_encoder:
            overrides[weights.DINOV3_REPO] = message.image_encoder
        if message.sparse_structure_decoder:
            overrides[weights.SS_DECODER_REPO] = message.sparse_structure_decoder
        if message.background_remover:
            overrides[weights.RMBG_REPO] = message.background_remover
        elif message.background_removal == "rmbg":  # chosen: resolve it (cached, or download when online)
            overrides[weights.RMBG_REPO] = weights.RMBG_REPO
        wconfig = weights.WeightsConfig(
            token=message.token, offline=message.offline or self.config.offline,
            cache_dir=Path(message.cache_dir) if message.cache_dir else self.config.cache_dir)
        return overrides, wconfig

    def _check_access(self, job: _Job, message: protocol.CheckAccess) -> None:
        overrides, wconfig = self._overrides_and_config(message)
        source = message.source
        if source == protocol.BUNDLED_MINI_MODEL:
            source = str(models.require_bundled_release(
                self.config.bundled_release,
                CHOOSE_ANOTHER_MODEL))
        found = weights.check_access(source, wconfig, overrides)
        self._send(protocol.AccessReport(job=job.id, repos=[
            replace(r, detail=r.detail[:500]) for r in found[: protocol.MAX_LIST_ITEMS]]))

    def _load(self, job: _Job, message: protocol.Load) -> None:
        if message.commercial_safe and message.background_removal == "rmbg":
            from backend.pipeline.licences import check_background_removal

            check_background_removal("rmbg")
        overrides, wconfig = self._overrides_and_config(message)
        if message.background_removal == "rmbg" and not message.allow_model_code:
            # Checking access reads nothing of the model; loading it runs its code, which needs consent.
            raise jobs.InvalidRequest(
                "background removal with RMBG-2.0 / BiRefNet runs Python code that ships with the model, "
                "and that needs its own consent (allow_model_code: in Blender the preference 'Run RMBG "
                "Model Code', on the command line --allow-remote-code)")

        def on_download(repo: str, file: str, done: int, total: int) -> None:
            self._send(protocol.Download(job=job.id, repo=repo, file=file, bytes=done, total=total))

        def resolve(source: str) -> weights.ModelPaths:
            return weights.resolve(source, wconfig, revision=message.revision, overrides=overrides,
                                   on_download=on_download, cancel=job.token)

        loaded = message.source
        if message.source == protocol.BUNDLED_MINI_MODEL:
            bundled = models.require_bundled_release(
                self.config.bundled_release,
                CHOOSE_ANOTHER_MODEL)
            paths = resolve(str(bundled))
            provenance = models.ModelProvenance(models.BUNDLED_MINI, str(bundled))
        else:
            try:
                paths = resolve(message.source)
                provenance = (models.ModelProvenance(models.OFFICIAL, message.source)
                              if weights.is_repo_id(message.source) and not Path(message.source).is_dir()
                              else models.ModelProvenance(models.LOCAL, str(paths.model_dir)))
            except weights.WeightsError as exc:
                fallback = (models.bundled_release(self.config.bundled_release)
                            if message.source == weights.TRELLIS2_REPO else None)
                if fallback is None:
                    raise
                notice = models.fallback_notice(str(exc))
                log.warning("%s", notice)
                self._send(protocol.Log(job=job.id, level="warning", message=notice))
                paths = resolve(str(fallback))
                provenance = models.ModelProvenance(models.BUNDLED_MINI, str(fallback))
                loaded = protocol.BUNDLED_MINI_MODEL
        job.token.check()
        self._generator = None
        self._loaded = None
        device.release_memory()
        started = time.monotonic()
        self._generator = self._factory(LoadSpec(paths=paths, device=self.config.device,
                                                 low_vram=message.low_vram,
                                                 vram_budget_gib=message.vram_budget_gib,
                                                 background_removal=message.background_removal,
                                                 provenance=provenance,
                                                 commercial_safe=message.commercial_safe,
                                                 allow_model_code=message.allow_model_code))
        self._loaded = loaded
        seconds = time.monotonic() - started
        self._send(protocol.Log(job=job.id, level="info",
                                message=f"models loaded from {paths.model_dir} ({provenance.source}) "
                                        f"in {seconds:.1f} s"))
        self._warm_up(job)

    def _warm_up(self, job: _Job) -> None:
        """Let the loaded generator compile its GPU kernels now (``warm_up()``, where it has one), so
        the first generation does not wait for them; a failure is only logged (that job would then
        compile them itself, or report the same error)."""
        warm_up = getattr(self._generator, "warm_up", None)
        if warm_up is None:
            return
        started = time.monotonic()
        try:
            compiled = warm_up()
        except Exception as exc:  # noqa: BLE001 - the models are loaded; the first job will tell
            log.warning("kernel warm-up failed: %s", exc, exc_info=True)
            self._send(protocol.Log(job=job.id, level="warning",
                                    message=f"GPU kernel warm-up failed ({type(exc).__name__}: {exc}); the "
                                            "first job compiles them instead"))
            return
        if compiled:
            self._send(protocol.Log(job=job.id, level="info",
                                    message=f"GPU kernels ready in {time.monotonic() - started:.1f} s"))
