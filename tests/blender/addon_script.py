"""Code prepended to the bpy scripts of the operator tests (runs in the child process).

Installs the extension zip into the private user folder, enables it and points its
preferences at the fake backend. Defines ``PKG`` (the add-on's module name),
``prefs`` and ``snapshot()`` (names of datablocks, to check nothing was left behind).
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
prefs.model_source = ARGS["model"]
prefs.output_dir = ARGS["jobs"]
addon = sys.modules[PKG]
scene_io = sys.modules[PKG + ".scene_io"]
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


def interrupt_when(marker_glob, folder):
    # Ctrl+C to this process once the backend has started the job (as a person would press it).
    def watch():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if list(Path(folder).rglob(marker_glob)):
                time.sleep(0.3)
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.05)
    threading.Thread(target=watch, daemon=True).start()
"""
