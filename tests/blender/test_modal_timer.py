"""The job operators' modal step with the events Blender really delivers.

Headless ``bpy`` runs the blocking path, so the modal one (Generate and Retexture in a Blender
window) is driven here by hand: a TIMER event made only of the attributes ``bpy.types.Event`` has.
Blender's events carry no ``timer`` attribute (4.3 and 5.0 alike); a modal that reads one raised
AttributeError on every tick in a real Blender window, and the job was never followed.
"""

from __future__ import annotations

import json

import pytest

from tests.blender.addon_script import SETUP
from tests.blender.runner import PYTHON, run_bpy

pytestmark = pytest.mark.blender

MODAL = """
from types import SimpleNamespace
jobs = sys.modules[PKG + ".core.jobs"]

# An event with exactly the attributes Blender's Event has, as a timer tick.
fields = {p.identifier: None for p in bpy.types.Event.bl_rna.properties if p.identifier != "rna_type"}
fields.update(type="TIMER", value="NOTHING")
tick = SimpleNamespace(**fields)

pumped = []
runtime._session = SimpleNamespace(pump=lambda: pumped.append(True), busy=True, state="BUSY", message="",
                                   percent=0.0)
job = jobs.Job(jobs.GenerateSpec(image="x", name="x", output_dir=ARGS["jobs"]))
job.stage, job.step, job.total, job.fraction = "shape", 3, 12, 0.4
operators._active["job"] = job
op = SimpleNamespace(_job=job, _timer=object())
try:
    answers = [sorted(operators.TRELLIS2_OT_generate.modal(op, bpy.context, tick)),
               sorted(operators.TRELLIS2_OT_retexture.modal(op, bpy.context, tick))]
except AttributeError as exc:
    answers = "AttributeError: " + str(exc)
finally:
    runtime._session = None
    operators._active.clear()
emit({"answers": answers, "pumped": len(pumped), "progress": status.progress_text,
      "has_timer": "timer" in fields})
"""


def test_a_timer_tick_advances_the_running_job(tmp_path, bpy_python, extension_zip, model_dir):
    args = {"zip": str(extension_zip), "python": str(PYTHON), "model": str(model_dir),
            "jobs": str(tmp_path / "jobs")}
    run = run_bpy(SETUP + MODAL, tmp_path, python=bpy_python, args=(json.dumps(args),))
    assert run.returncode == 0, run.describe()
    result = run.result
    assert result["has_timer"] is False  # what makes this test meaningful: Blender's Event has no .timer
    assert result["pumped"] == 2  # each tick reads the backend's events
    # The job keeps running, and other handlers still see the tick.
    assert result["answers"] == [["PASS_THROUGH"], ["PASS_THROUGH"]]
    assert result["progress"] == "Shaping the surface: step 3 of 12"


SETUP_MODAL = """
from types import SimpleNamespace

redrawn = []


def region(area, kind):
    return SimpleNamespace(type=kind, tag_redraw=lambda: redrawn.append(area + "/" + kind))


def area(kind, regions):
    return SimpleNamespace(type=kind, regions=[region(kind, r) for r in regions],
                           tag_redraw=lambda: redrawn.append(kind))


screen = SimpleNamespace(areas=[area("VIEW_3D", ["HEADER", "WINDOW", "UI"]), area("PROPERTIES", ["WINDOW"]),
                                area("PREFERENCES", ["WINDOW"])])
context = SimpleNamespace(screen=screen, window_manager=bpy.context.window_manager)
fields = {p.identifier: None for p in bpy.types.Event.bl_rna.properties if p.identifier != "rna_type"}
fields.update(type="TIMER", value="NOTHING")
task = SimpleNamespace(state="running", message="Installing torch", fraction=0.25)
op = SimpleNamespace(_task=task, _timer=object())
answer = sorted(operators.TRELLIS2_OT_setup_backend.modal(op, context, SimpleNamespace(**fields)))
emit({"answer": answer, "redrawn": sorted(redrawn), "text": status.task_running, "fraction": status.fraction})
"""


def test_the_setup_progress_redraws_only_the_panels(tmp_path, bpy_python, extension_zip, model_dir):
    # Repainting every area (3D viewports included) twice a second stalls a Material Preview viewport.
    args = {"zip": str(extension_zip), "python": str(PYTHON), "model": str(model_dir),
            "jobs": str(tmp_path / "jobs")}
    run = run_bpy(SETUP + SETUP_MODAL, tmp_path, python=bpy_python, args=(json.dumps(args),))
    assert run.returncode == 0, run.describe()
    assert run.result["answer"] == ["RUNNING_MODAL"]
    assert run.result["redrawn"] == ["PREFERENCES", "VIEW_3D/UI"]
    assert run.result["text"] == "Installing torch" and run.result["fraction"] == pytest.approx(0.25)
