"""Code prepended to the bpy scripts of the operator tests (runs in the child process).

Installs the extension zip into the private user folder, enables it and points its
preferences at the backend (``ARGS["python"]``), the model and the jobs folder, on the CPU.
Defines ``PKG`` (the add-on's module name), ``prefs``, ``snapshot()`` (names of datablocks,
to check nothing was left behind) and ``when_job_in(stage, action)``.
"""

SETUP = """
import json, os, sys, signal, threading, time
from pathlib import Path
import bpy
import addon_utils

ARGS = json.loads(sys.argv[-1])
ret = bpy.ops.extensions.package_install_files(filepath=ARGS["zip"], repo="user_default",
                                               enable_on_install=True)
assert ret == {"FINISHED"}, ret
PKG = "bl_ext.user_default.trellis2_blender"
prefs = bpy.context.preferences.addons[PKG].preferences
prefs.backend_python = ARGS["python"]
prefs.model_kind = "LOCAL"
prefs.model_source = ARGS["model"]
prefs.output_dir = ARGS["jobs"]
prefs.device = "cpu"
addon = sys.modules[PKG]
scene_io = sys.modules[PKG + ".scene_io"]
operators = sys.modules[PKG + ".operators"]
runtime = sys.modules[PKG + ".core.runtime"]
settings = bpy.context.scene.trellis2
status = bpy.context.window_manager.trellis2_status

for obj in list(bpy.data.objects):
    bpy.data.objects.remove(obj)


def snapshot():
    return {kind: sorted(b.name for b in getattr(bpy.data, kind))
            for kind in ("objects", "meshes", "materials", "images")}


def use_image(path):
    settings.image_source = "FILE"
    settings.image_path = str(path)


def run_op(op, *args, **kwargs):
    try:
        return sorted(op(*args, **kwargs))
    except RuntimeError as exc:
        return ["ERROR: " + str(exc)]


def when_job_in(stage, action, timeout=120):
    # A watcher thread: once the running job has reported a sampler step of ``stage``, call
    # ``action(job)`` (e.g. press Ctrl+C, kill the backend). It reads the job's plain Python
    # attributes only (the main thread updates them from the backend's events); never bpy.
    seen = {}

    def watch():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = operators._active.get("job")
            if job is not None and job.stage == stage and job.step >= 1 and job.total > 1:
                seen.update(stage=job.stage, step=job.step, total=job.total, at=time.monotonic())
                action(job)
                return
            time.sleep(0.02)
    threading.Thread(target=watch, daemon=True).start()
    return seen


def press_ctrl_c(job):
    os.kill(os.getpid(), signal.SIGINT)


def result_doc(name):
    # The result.json the backend wrote for the asset ``name`` (one job per name in a test).
    (path,) = Path(ARGS["jobs"]).glob("*/" + name + "/result.json")
    return json.loads(path.read_text())
"""
