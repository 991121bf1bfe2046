"""Thin operators over :mod:`.session` (backend), :mod:`.jobs` (specs) and :mod:`.scene_io` (bpy).

Generate and Retexture run modally with a timer in the UI (the panel's Cancel button
cancels; Esc is left to Blender, where it means "cancel what I am doing now") and block in
background mode (``bpy.app.background``), so headless runs use the same code. They have no
redo panel and are not repeatable with Shift+R: a redo would run a whole job blocking.
Only this main thread touches ``bpy``; the backend client runs its own reader thread and is
only polled from here.
"""

from __future__ import annotations

import logging
import platform
import random
import signal
import threading
import time
from pathlib import Path

import bpy
from bpy.props import IntProperty, StringProperty

from . import preferences, protocol, scene_io
from .core import history, jobs, runtime
from .core.results import ResultError
from .core.session import BUSY, ERROR, LOADING, READY, STARTING, STOPPED

log = logging.getLogger(__name__)

TIMER_S = 0.1
HISTORY_ROWS = 10  # earlier jobs the panel lists
_active: dict[str, jobs.Job] = {}  # "job" -> the one job the UI is running
_history: list[history.HistoryEntry] = []  # what the panel's History lists, newest first
_history_read: list[bool] = []  # not empty once the jobs folder has been read


# Why a button is greyed out, where two operators share the reason.
JOB_RUNNING = "A TRELLIS.2 job is running"
ONLINE_ACCESS_OFF = "Blender's \"Allow Online Access\" is off (Preferences > System > Network)"


def _refuse(cls, reason: str) -> bool:
    """An operator's poll verdict "not now": the button greys out and its tooltip gives ``reason``."""
    cls.poll_message_set(reason)
    return False


def active_job() -> jobs.Job | None:
    job = _active.get("job")
    return job if job is not None and not job.finished else None


# --- status shown by the panel ------------------------------------------------------------

def sync_status(context, job: jobs.Job | None = None) -> None:
    """Copy session and job state into ``WindowManager.trellis2_status`` and redraw the panels."""
    status = context.window_manager.trellis2_status
    session = runtime.current()
    if session is None:
        status.backend_state, status.backend_message, status.backend_percent = STOPPED, "", 0.0
    else:
        status.backend_state = session.state
        status.backend_message = session.message[:1000]
        status.backend_percent = session.percent
    if job is not None:
        status.job_kind = job.spec.kind
        status.stage, status.step, status.total = job.stage, job.step, job.total
        status.fraction = job.fraction
        status.progress_text = job.progress_text()
        status.job_state = {"running": "RUNNING", "ok": "FINISHED", "error": "FAILED",
                            "cancelled": "CANCELLED"}[job.state]
        status.message = job.error_text()[:1000] if job.state == jobs.ERROR else job.message[:1000]
    redraw_panels(context)


def redraw_panels(context) -> None:
    """Redraw our panels only: the 3D views' sidebars and the preferences, never the viewports
    (repainting a Material Preview viewport ten times a second stalls Blender)."""
    screen = getattr(context, "screen", None)
    for area in screen.areas if screen is not None else ():
        if area.type == "PREFERENCES":
            area.tag_redraw()
        elif area.type == "VIEW_3D":
            for region in area.regions:
                if region.type == "UI":
                    region.tag_redraw()


def _watch_backend() -> float | None:
    """Timer: advance start-up/loading while no job operator is pumping; stops when settled."""
    session = runtime.current()
    if session is None:
        return None
    if active_job() is None:
        session.pump()
    sync_status(bpy.context)
    return 0.25 if session.state in (STARTING, LOADING, BUSY) else None


def _watch() -> None:
    if not bpy.app.timers.is_registered(_watch_backend):
        bpy.app.timers.register(_watch_backend, first_interval=0.1)


class _SigintCancels:
    """Ctrl+C during a blocking job cancels the job instead of killing Blender (main thread only)."""

    def __init__(self, session, job) -> None:
        self.session, self.job, self.previous = session, job, None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, lambda *_: self.session.cancel(self.job))
        return self

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


# --- generate / retexture -----------------------------------------------------------------

class _JobOperator:
    """Shared flow: make a spec, submit it, wait (modal or blocking), then apply the result."""

    _timer = None
    _job: jobs.Job | None = None

    def make_job(self, context) -> jobs.Job:
        raise NotImplementedError

    def apply_result(self, context, job: jobs.Job) -> None:
        raise NotImplementedError

    def _submit(self, context) -> jobs.Job | None:
        settings = preferences.backend_settings(context)
        problem = settings.problem()
        if problem:
            self.report({"ERROR"}, problem)
            return None
        try:  # importing the result needs numpy: say so now, not after the backend worked a minute
            import numpy  # noqa: F401
        except ImportError as exc:
            self.report({"ERROR"}, f"This Blender has no numpy, which importing results needs ({exc}); "
                                   "use a Blender build that bundles it (blender.org's do)")
            return None
        try:
            job = self.make_job(context)
        except (scene_io.InputError, OSError) as exc:
            self.report({"ERROR"}, str(exc))
            return None
        except ImportError as exc:  # e.g. a Blender built without numpy
            self.report({"ERROR"}, f"This Blender lacks a Python module the add-on needs: {exc}")
            return None
        history.write_record(Path(job.spec.output_dir), {**job.spec.record(), "state": "running"})
        session = runtime.session_for(settings)
        session.submit(job)
        _active["job"] = job
        log.info("submitted %s: %s", job.spec.kind, job.spec)
        return job

    def execute(self, context):
        job = self._submit(context)
        if job is None:
            return {"CANCELLED"}
        session = runtime.current()
        with _SigintCancels(session, job):
            session.wait(job, on_tick=lambda j: sync_status(context, j))
        return self._finish(context, job)

    def invoke(self, context, event):
        if bpy.app.background:
            return self.execute(context)
        job = self._submit(context)
        if job is None:
            return {"CANCELLED"}
        self._job = job
        wm = context.window_manager
        self._timer = wm.event_timer_add(TIMER_S, window=context.window)
        wm.modal_handler_add(self)
        sync_status(context, job)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        # Any timer tick follows the job (Blender's events do not say whose timer fired); every
        # event passes on, so other handlers still get their own ticks, clicks and keys.
        job = self._job
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        session = runtime.current()
        if session is not None:
            session.pump()
        elif not job.finished:  # the backend was stopped underneath the job
            job.state = jobs.CANCELLED
        sync_status(context, job)
        if context.workspace is not None:
            context.workspace.status_text_set(
                f"TRELLIS.2: {job.progress_text()} ({job.fraction:.0%}) - Cancel in the TRELLIS.2 panel")
        if not job.finished:
            return {"PASS_THROUGH"}
        self._end_modal(context)
        return self._finish(context, job)

    def cancel(self, context):
        # Blender is closing the operator (e.g. the window closes): cancel the backend job too.
        if self._job is not None and not self._job.finished:
            runtime.current().cancel(self._job)
        self._end_modal(context)

    def _end_modal(self, context) -> None:
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
        if context.workspace is not None:
            context.workspace.status_text_set(None)

    def _finish(self, context, job: jobs.Job):
        _active.pop("job", None)
        _record_history(context, job)
        for level, message in job.logs:
            if level in ("warning", "error"):
                self.report({"WARNING"}, message)
        if job.state == jobs.CANCELLED:
            self.report({"WARNING"}, "Cancelled")
            sync_status(context, job)
            return {"CANCELLED"}
        if job.state == jobs.ERROR:
            # An ERROR report shows in the status bar (and the Info log); the panel shows it wrapped.
            self.report({"ERROR"}, f"TRELLIS.2 failed: {job.error_text()}")
            log.error("%s failed: %s", job.spec.kind, job.error)
            sync_status(context, job)
            return {"CANCELLED"}
        try:
            self.apply_result(context, job)
        except (ResultError, RuntimeError, ValueError, OSError, ImportError) as exc:
            job.fail("import_failed", f"Cannot import the result: {exc}")
            self.report({"ERROR"}, job.error_text())
            log.exception("importing %s", job.result_file())
            sync_status(context, job)
            return {"CANCELLED"}
        sync_status(context, job)
        self.report({"INFO"}, f"TRELLIS.2 {job.spec.kind} finished in {job.seconds:.1f} s")
        return {"FINISHED"}


def _record_history(context, job: jobs.Job) -> None:
    """Finish the job's ``job.json`` (state, result files) and keep the jobs folder under its limit."""
    folder = Path(job.spec.output_dir)
    results = []
    for path in job.result_files():
        try:
            results.append(str(Path(path).relative_to(folder)))
        except ValueError:
            continue
    try:
        history.write_record(folder, {**job.spec.record(), "state": job.state, "results": results})
    except OSError as exc:
        log.warning("cannot write the job record in %s: %s", folder, exc)
    prefs = preferences.get(context)
    if prefs is not None and prefs.history_limit_gb > 0:
        removed = history.prune(preferences.jobs_dir(prefs), int(prefs.history_limit_gb * 1e9),
                                keep=frozenset({folder}))
        if removed:
            log.info("deleted %d old job folder(s) to stay under %.1f GB", len(removed),
                     prefs.history_limit_gb)
    refresh_history(context)


def history_entries() -> list[history.HistoryEntry]:
    """The jobs the panel lists; the jobs folder is read the first time and after every job."""
    if not _history_read:
        refresh_history(bpy.context)
    return _history


def refresh_history(context) -> None:
    """Re-read the jobs folder into the list the panel draws (draw code never reads the disk)."""
    _history[:] = history.list_jobs(preferences.jobs_dir(preferences.get(context)), limit=HISTORY_ROWS)
    _history_read.append(True)


OUTPUT_NAME_CHARS = 100  # the backend allows 200 UTF-8 bytes; 100 characters of any script fit


def output_name(name: str, fallback: str = "object") -> str:
    """A Blender name made into one safe file-name component for the request's ``name``.

    The backend writes ``<output_dir>/<name>.glb`` and ``<output_dir>/<name>/``, and refuses
    names that could leave that folder; Blender names may hold any character. Path separators
    (``/``, ``\\``), ``:`` and control characters become ``_``, the result is cut to
    :data:`OUTPUT_NAME_CHARS` characters, and an empty, ``.`` or ``..`` result becomes ``fallback``.
    """
    safe = "".join("_" if c in "/\\:" or ord(c) < 32 or ord(c) == 127 else c for c in name)
    safe = safe[:OUTPUT_NAME_CHARS]
    return fallback if safe.strip(". ") == "" else safe


def _job_dir(context, name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:60] or "job"
    path = preferences.jobs_dir(preferences.get(context)) / f"{stamp}_{safe}_{random.randrange(16**4):04x}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _sampler(stage) -> tuple:
    return (stage.steps, stage.guidance, stage.rescale) if stage.override else (None, None, None)


def _image_problem(settings) -> str:
    if settings.image_source == "BLENDER":
        return "" if settings.image is not None else "Choose an image"
    return "" if settings.image_path else "Choose an image file"


class TRELLIS2_OT_generate(_JobOperator, bpy.types.Operator):
    """Generate a textured mesh from the image and add it at the 3D cursor"""

    bl_idname = "trellis2.generate"
    bl_label = "Generate"
    bl_options = {"UNDO"}  # no REGISTER: no redo panel, no Shift+R (both would block for a whole job)

    @classmethod
    def poll(cls, context):
        if active_job() is not None:
            return _refuse(cls, JOB_RUNNING)
        problem = _image_problem(context.scene.trellis2)
        if problem:
            return _refuse(cls, problem)
        return True

    def make_job(self, context) -> jobs.Job:
        settings = context.scene.trellis2
        if settings.randomize_seed:
            settings.seed = random.randrange(0, 2**31 - 1)
        probe_dir = _job_dir(context, "generate")
        image, name = scene_io.snapshot_image(settings, probe_dir)
        views = scene_io.view_paths(settings)
        spec = jobs.GenerateSpec(
            image=str(image), name=output_name(name, "generated"), output_dir=str(probe_dir),
            pipeline_type=settings.pipeline_type,
            seed=settings.seed, sparse_structure=_sampler(settings.sparse_structure),
            shape=_sampler(settings.shape), texture=_sampler(settings.texture),
            face_target=settings.face_target, texture_size=int(settings.texture_size),
            num_samples=settings.num_samples, views=tuple(str(v) for v in views),
            multiview=settings.multiview_mode, unwrap=settings.unwrap,
            remove_floaters=settings.remove_floaters, remove_inner_shells=settings.remove_inner_shells,
            fill_holes=settings.fill_holes)
        return jobs.Job(spec)

    def apply_result(self, context, job: jobs.Job) -> None:
        settings = context.scene.trellis2
        objects = scene_io.import_results(context, job.result_files(), name=job.spec.name,
                                          settings=job.spec.record(), scale=settings.import_scale,
                                          on_ground=settings.place_on_ground)
        frame_selected(context)
        if len(objects) == 1:
            self.report({"INFO"}, f"Added '{objects[0].name}'")
        else:
            collection = objects[0].users_collection[0].name
            self.report({"INFO"}, f"Added {len(objects)} variations to '{collection}': select one and "
                                  "press Keep This One")


class TRELLIS2_OT_retexture(_JobOperator, bpy.types.Operator):
    """Give the selected mesh new PBR textures from the image, keeping its shape, UVs and transform"""

    bl_idname = "trellis2.retexture"
    bl_label = "Retexture"
    bl_options = {"UNDO"}  # no REGISTER: see TRELLIS2_OT_generate

    target: StringProperty(name="Object", description="Mesh object to retexture (default: the active one)",
                           options={"SKIP_SAVE"})

    @classmethod
    def poll(cls, context):
        if active_job() is not None:
            return _refuse(cls, JOB_RUNNING)
        obj = context.active_object
        if obj is None or obj.type != "MESH" or not obj.select_get():
            return _refuse(cls, "Select a mesh object")
        if not obj.data.uv_layers:
            return _refuse(cls, "The selected mesh has no UV map: unwrap it first")
        if context.mode != "OBJECT":
            return _refuse(cls, "Switch to Object Mode")
        problem = _image_problem(context.scene.trellis2)
        if problem:
            return _refuse(cls, problem)
        return True

    def _object(self, context):
        return bpy.data.objects.get(self.target) if self.target else context.active_object

    def make_job(self, context) -> jobs.Job:
        settings = context.scene.trellis2
        obj = self._object(context)
        if obj is None or obj.type != "MESH":
            raise scene_io.InputError("Select a mesh object")
        self.target = obj.name
        if settings.randomize_seed:
            settings.seed = random.randrange(0, 2**31 - 1)
        job_dir = _job_dir(context, obj.name)
        image, _ = scene_io.snapshot_image(settings, job_dir)
        mesh_path = job_dir / "input_mesh.ply"
        scene_io.export_mesh(obj, mesh_path)
        spec = jobs.RetextureSpec(
            mesh=str(mesh_path), image=str(image), name=output_name(obj.name), output_dir=str(job_dir),
            seed=settings.seed,
            resolution=int(settings.retexture_resolution), texture=_sampler(settings.texture),
            texture_size=int(settings.texture_size))
        return jobs.Job(spec)

    def apply_result(self, context, job: jobs.Job) -> None:
        obj = bpy.data.objects.get(self.target)
        if obj is None or obj.type != "MESH":
            raise ResultError(f"the object '{self.target}' is gone")
        result = job.result_file()
        if result is None:
            raise ResultError("the backend reported no Blender result")
        scene_io.apply_retexture(obj, result, settings=job.spec.record(),
                                 replace_materials=context.scene.trellis2.replace_materials)
        self.report({"INFO"}, f"Retextured '{obj.name}'")


def frame_selected(context) -> None:
    """Frame the selection in every 3D view of the window (nothing to frame in background mode)."""
    screen = getattr(context, "screen", None)
    if bpy.app.background or screen is None:
        return
    for area in screen.areas:
        if area.type != "VIEW_3D":
            continue
        region = next((r for r in area.regions if r.type == "WINDOW"), None)
        if region is not None:
            with context.temp_override(area=area, region=region):
                bpy.ops.view3d.view_selected()


class TRELLIS2_OT_keep_variation(bpy.types.Operator):
    """Keep the active variation and delete the other versions of its set"""

    bl_idname = "trellis2.keep_variation"
    bl_label = "Keep This One"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        collection = scene_io.variation_set(obj)
        if collection is None or len(collection.objects) < 2:
            return _refuse(cls, "Select one of a set of generated variations")
        return True

    def execute(self, context):
        obj = context.active_object
        removed = scene_io.keep_variation(obj)
        self.report({"INFO"}, f"Kept '{obj.name}', deleted {removed} other variation(s)")
        return {"FINISHED"}


class TRELLIS2_OT_remesh(bpy.types.Operator):
    """Make a remeshed, unwrapped copy of the active object (voxel remesh or QuadriFlow quads) and bake its
base color, metallic, roughness and a normal map onto it; the original is hidden"""

    bl_idname = "trellis2.remesh"
    bl_label = "Remesh and Re-bake"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        if obj is None or obj.type != "MESH" or not obj.data.polygons:
            return _refuse(cls, "Select a mesh object")
        if context.mode != "OBJECT":
            return _refuse(cls, "Switch to Object Mode")
        return True

    def execute(self, context):
        from . import remesh

        settings = context.scene.trellis2
        src = context.active_object
        try:
            new = remesh.remesh_and_bake(context, src, mode=settings.remesh_mode,
                                         voxel_size=settings.remesh_voxel_size,
                                         quad_faces=settings.remesh_faces, bake_size=int(settings.bake_size))
        except remesh.RemeshError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        faces = len(new.data.polygons)
        self.report({"INFO"}, f"Added '{new.name}' ({faces:,} faces); '{src.name}' is hidden")
        return {"FINISHED"}


class TRELLIS2_OT_view_add(bpy.types.Operator):
    """Add another picture of the same object (side, back...): every stage looks at all of them"""

    bl_idname = "trellis2.view_add"
    bl_label = "Add View"
    bl_options = {"REGISTER", "UNDO", "INTERNAL"}

    @classmethod
    def poll(cls, context):
        if len(context.scene.trellis2.views) + 1 >= protocol.MAX_VIEWS:
            return _refuse(cls, f"At most {protocol.MAX_VIEWS} pictures of one object")
        return True

    def execute(self, context):
        context.scene.trellis2.views.add()
        return {"FINISHED"}


class TRELLIS2_OT_view_remove(bpy.types.Operator):
    """Remove this picture"""

    bl_idname = "trellis2.view_remove"
    bl_label = "Remove View"
    bl_options = {"REGISTER", "UNDO", "INTERNAL"}

    index: IntProperty(options={"SKIP_SAVE"})

    def execute(self, context):
        views = context.scene.trellis2.views
        if 0 <= self.index < len(views):
            views.remove(self.index)
        return {"FINISHED"}


def _history_entry(folder: str) -> history.HistoryEntry | None:
    return next((e for e in _history if str(e.folder) == folder), None)


class TRELLIS2_OT_history_refresh(bpy.types.Operator):
    """Read the jobs folder again"""

    bl_idname = "trellis2.history_refresh"
    bl_label = "Refresh History"

    def execute(self, context):
        refresh_history(context)
        redraw_panels(context)
        return {"FINISHED"}


class TRELLIS2_OT_history_import(bpy.types.Operator):
    """Add this earlier result to the scene again"""

    bl_idname = "trellis2.history_import"
    bl_label = "Re-import"
    bl_options = {"REGISTER", "UNDO", "INTERNAL"}

    folder: StringProperty(options={"SKIP_SAVE"})

    def execute(self, context):
        entry = _history_entry(self.folder) or history.read_entry(Path(self.folder))
        if entry is None or not entry.results:
            self.report({"ERROR"}, f"No result to import in {self.folder}")
            return {"CANCELLED"}
        settings = {k: v for k, v in entry.settings.items()
                    if k not in ("state", "results") and v is not None}
        try:
            objects = scene_io.import_results(context, entry.results, name=entry.name, settings=settings)
        except (ResultError, RuntimeError, ValueError, OSError) as exc:
            self.report({"ERROR"}, f"Cannot import {entry.folder.name}: {exc}")
            return {"CANCELLED"}
        frame_selected(context)
        self.report({"INFO"}, f"Re-imported {len(objects)} object(s) from {entry.folder.name}")
        return {"FINISHED"}


class TRELLIS2_OT_history_delete(bpy.types.Operator):
    """Delete this job's folder and its files from disk (objects in the scene stay)"""

    bl_idname = "trellis2.history_delete"
    bl_label = "Delete Job"
    bl_options = {"INTERNAL"}

    folder: StringProperty(options={"SKIP_SAVE"})

    def invoke(self, context, event):
        return context.window_manager.invoke_confirm(self, event, title="Delete this job's files?",
                                                     message=self.folder, confirm_text="Delete")

    def execute(self, context):
        try:
            history.delete_job(preferences.jobs_dir(preferences.get(context)), Path(self.folder))
        except (ValueError, OSError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        refresh_history(context)
        redraw_panels(context)
        return {"FINISHED"}


class TRELLIS2_OT_cancel(bpy.types.Operator):
    """Cancel the running TRELLIS.2 job"""

    bl_idname = "trellis2.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context):
        if active_job() is None:
            return _refuse(cls, "No job is running")
        return True

    def execute(self, context):
        job, session = active_job(), runtime.current()
        if job is not None and session is not None:
            session.cancel(job)
        return {"FINISHED"}


class TRELLIS2_OT_randomize_seed(bpy.types.Operator):
    """Pick a new random seed"""

    bl_idname = "trellis2.randomize_seed"
    bl_label = "Randomize Seed"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        context.scene.trellis2.seed = random.randrange(0, 2**31 - 1)
        return {"FINISHED"}


# --- backend ------------------------------------------------------------------------------

class TRELLIS2_OT_backend_start(bpy.types.Operator):
    """Start the backend and load the models (they stay loaded between jobs)"""

    bl_idname = "trellis2.backend_start"
    bl_label = "Start Backend"

    @classmethod
    def poll(cls, context):
        session = runtime.current()
        if session is not None and session.state in (STARTING, LOADING, READY, BUSY):
            return _refuse(cls, "The backend is already running")
        if preferences.resolved_python(preferences.get(context)) is None:
            # Greyed out with the reason; the panel's guide shows the way out.
            return _refuse(cls, "No backend yet: press Set Up Backend in the TRELLIS.2 panel or set "
                                "add-on preferences: Backend Python")
        return True

    def execute(self, context):
        settings = preferences.backend_settings(context)
        problem = settings.problem()
        if problem:
            self.report({"ERROR"}, problem)
            return {"CANCELLED"}
        session = runtime.session_for(settings)
        session.start()
        if bpy.app.background:
            session.wait_loaded()
            sync_status(context)
            if session.state == ERROR:
                self.report({"ERROR"}, session.message)
                return {"CANCELLED"}
        else:
            _watch()
            sync_status(context)
        return {"FINISHED"}


class TRELLIS2_OT_backend_stop(bpy.types.Operator):
    """Stop the backend and free its memory (a running job is cancelled)"""

    bl_idname = "trellis2.backend_stop"
    bl_label = "Stop Backend"

    @classmethod
    def poll(cls, context):
        session = runtime.current()
        if session is None or session.state == STOPPED:
            return _refuse(cls, "The backend is not running")
        return True

    def execute(self, context):
        job = active_job()
        if job is not None:
            job.state = jobs.CANCELLED  # its operator ends on its next tick
        runtime.shutdown(wait=bpy.app.background)
        sync_status(context)
        return {"FINISHED"}


class TRELLIS2_OT_download_weights(bpy.types.Operator):
    """Download the model weights now (they are also fetched on first use)"""

    bl_idname = "trellis2.download_weights"
    bl_label = "Download Weights"

    sizes: StringProperty(options={"HIDDEN", "SKIP_SAVE"},
                          description="What is to download, from a finished access check")

    @classmethod
    def poll(cls, context):
        if not bpy.app.online_access:
            return _refuse(cls, ONLINE_ACCESS_OFF)
        session = runtime.current()
        if session is not None and session.state in (STARTING, LOADING):
            return _refuse(cls, "The backend is busy loading")
        return True

    def invoke(self, context, event):
        if not self.sizes:  # ask the hub first; the check invokes this again with the sizes
            bpy.ops.trellis2.check_access("INVOKE_DEFAULT", then_download=True)
            return {"FINISHED"}
        return context.window_manager.invoke_confirm(
            self, event, title="Download TRELLIS.2 weights?",
            message=f"{self.sizes} {preferences.download_notice(context)}", confirm_text="Download")

    def execute(self, context):
        settings = preferences.backend_settings(context, offline=False)
        problem = settings.problem()
        if problem:
            self.report({"ERROR"}, problem)
            return {"CANCELLED"}
        session = runtime.session_for(settings)
        if session.state in (READY, BUSY):
            self.report({"INFO"}, "The weights are already loaded")
            return {"FINISHED"}
        session.start()
        _watch()
        sync_status(context)
        return {"FINISHED"}


class TRELLIS2_OT_open_log(bpy.types.Operator):
    """Open the folder with the add-on's and the backend's log files"""

    bl_idname = "trellis2.open_log"
    bl_label = "Open Logs"

    def execute(self, context):
        from . import logging_setup

        bpy.ops.wm.path_open(filepath=str(logging_setup.log_file().parent))
        return {"FINISHED"}



class TRELLIS2_OT_setup_backend(bpy.types.Operator):
    """Create the backend's own Python environment and install its libraries (several GB)"""

    bl_idname = "trellis2.setup_backend"
    bl_label = "Set Up Backend"

    _timer = None
    _task = None

    @classmethod
    def poll(cls, context):
        if not bpy.app.online_access:
            return _refuse(cls, ONLINE_ACCESS_OFF)
        from . import paths

        root = paths.backend_root()
        if root is None or not (root / "pyproject.toml").is_file():
            return _refuse(cls, "The backend sources are missing from this installation")
        if context.window_manager.trellis2_status.task_running:
            return _refuse(cls, "Set-up is already running")
        return True

    def invoke(self, context, event):
        from .core import setup_env

        env = preferences.managed_env_dir()
        build = setup_env.choose_torch_build(platform.system(), setup_env.detect_driver_cuda())
        source = build.index_url or "the Python Package Index"
        return context.window_manager.invoke_confirm(
            self, event, title="Set up the TRELLIS.2 backend?",
            message=f"Creates a Python environment in {env} and downloads PyTorch ({build.label}, from "
                    f"{source}; {build.reason}) and the backend's libraries (several gigabytes).",
            confirm_text="Set Up")

    def execute(self, context):
        from . import logging_setup, paths
        from .core import setup_env

        base = setup_env.find_base_python()
        if base is None:
            self.report({"ERROR"}, "No Python 3.11 or newer found on this system; install one first")
            return {"CANCELLED"}
        log_path = logging_setup.log_file().with_name("setup.log")
        build = setup_env.choose_torch_build(platform.system(), setup_env.detect_driver_cuda())
        self.report({"INFO"}, f"PyTorch build: {build.label} ({build.reason})")
        self._task = setup_env.SetupTask(base, preferences.managed_env_dir(),
                                         paths.backend_root() / "pyproject.toml", log_path, build)
        self._task.start()
        context.window_manager.trellis2_status.task_running = self._task.message or "Setting up"
        if bpy.app.background:
            while self._task.state == "running":
                time.sleep(0.5)
            return self._done(context)
        self._timer = context.window_manager.event_timer_add(0.5, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type == "ESC" and event.value == "PRESS":
            self._task.cancel()
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        status = context.window_manager.trellis2_status
        status.task_running, status.fraction = self._task.message, self._task.fraction
        redraw_panels(context)
        if self._task.state == "running":
            return {"RUNNING_MODAL"}
        context.window_manager.event_timer_remove(self._timer)
        return self._done(context)

    def _done(self, context):
        context.window_manager.trellis2_status.task_running = ""
        if self._task.state == "ok":
            self.report({"INFO"}, self._task.message)
            return {"FINISHED"}
        self.report({"ERROR"} if self._task.state == "error" else {"WARNING"},
                    self._task.message if self._task.state == "error" else "Set-up cancelled")
        return {"CANCELLED"}


classes = (
    TRELLIS2_OT_generate,
    TRELLIS2_OT_retexture,
    TRELLIS2_OT_cancel,
    TRELLIS2_OT_keep_variation,
    TRELLIS2_OT_remesh,
    TRELLIS2_OT_history_refresh,
    TRELLIS2_OT_history_import,
    TRELLIS2_OT_history_delete,
    TRELLIS2_OT_view_add,
    TRELLIS2_OT_view_remove,
    TRELLIS2_OT_randomize_seed,
    TRELLIS2_OT_backend_start,
    TRELLIS2_OT_backend_stop,
    TRELLIS2_OT_download_weights,
    TRELLIS2_OT_setup_backend,
    TRELLIS2_OT_open_log,
)


_register_classes, _unregister_classes = bpy.utils.register_classes_factory(classes)


def register() -> None:
    _register_classes()


def unregister() -> None:
    if bpy.app.timers.is_registered(_watch_backend):
        bpy.app.timers.unregister(_watch_backend)
    runtime.shutdown()
    _active.clear()
    _history.clear()
    _history_read.clear()
    _unregister_classes()

