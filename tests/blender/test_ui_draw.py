"""The panel's and the preferences' draw code, run against a layout that checks every name it is given.

Headless Blender has no regions to draw into, so a recording layout stands in: ``prop`` and
``template_ID`` must name real properties, ``operator`` a registered operator.
"""

from __future__ import annotations

import json

import pytest

from tests.blender.addon_script import SETUP
from tests.blender.runner import PYTHON, run_bpy

pytestmark = pytest.mark.blender

DRAW = """
import importlib
from types import SimpleNamespace
ui = importlib.import_module(PKG + ".ui")
operators = importlib.import_module(PKG + ".operators")
jobs = importlib.import_module(PKG + ".core.jobs")
seen = {"props": set(), "operators": set(), "progress": [], "labels": [], "icons": [], "sequence": []}
ICON_PARAMETER = bpy.types.UILayout.bl_rna.functions["label"].parameters["icon"]
LABEL_ICONS = {item.identifier for item in ICON_PARAMETER.enum_items}


class Layout:
    def __init__(self):
        self.use_property_split = False
        self.scale_y = 1.0
        self.active = True
        self.enabled = True

    def _child(self, *args, **kwargs):
        return Layout()

    row = column = box = split = _child

    def prop(self, data, name, **kwargs):
        assert name in data.bl_rna.properties, f"no property {name} on {data}"
        seen["props"].add(name)

    def template_ID(self, data, name, **kwargs):
        self.prop(data, name)

    def operator(self, idname, **kwargs):
        category, name = idname.split(".")
        getattr(getattr(bpy.ops, category), name).get_rna_type()
        seen["operators"].add(idname)
        seen["sequence"].append(idname)
        return SimpleNamespace()

    def label(self, text="", icon="NONE", **kwargs):
        assert icon in LABEL_ICONS, f"no icon {icon}"
        seen["labels"].append(text)
        seen["icons"].append(icon)
        seen["sequence"].append(text)

    def progress(self, factor=0.0, text="", **kwargs):
        assert 0.0 <= factor <= 1.0
        seen["progress"].append(text)

    def template_icon(self, icon_value=0, **kwargs):
        assert icon_value > 0

    def icon(self, data):
        return 1

    def panel(self, idname, default_closed=False):
        return Layout(), Layout()

    def separator(self, **kwargs):
        pass


def draw_panel():
    ui.VIEW3D_PT_trellis2.draw(SimpleNamespace(layout=Layout()), bpy.context)


settings.image_source = "FILE"
settings.image_path = ARGS["image"]
draw_panel()
settings.image_source = "BLENDER"
settings.image = bpy.data.images.load(ARGS["image"])
draw_panel()
# The backend found and its model loaded: the guide's last step remains, and no download is due.
status.backend_state = "READY"
before = len(seen["labels"])
draw_panel()
seen["ready_labels"] = seen["labels"][before:]
status.backend_state = "STOPPED"
job = jobs.Job(jobs.GenerateSpec(image="x", name="x", output_dir="/tmp"))
operators._active["job"] = job
job.stage, job.step, job.total, job.fraction = "shape", 3, 12, 0.4
operators.sync_status(bpy.context, job)
before = len(seen["sequence"])
draw_panel()
seen["running_sequence"] = seen["sequence"][before:]
operators._active.clear()
status.job_state, status.message = "FAILED", "out of memory: lower the resolution"
status.backend_state, status.backend_message = "ERROR", "The backend stopped unexpectedly (exit code 9)"
draw_panel()
# A generated object with a QA report is active, and one earlier job is on disk.
mesh = bpy.data.meshes.new("qa")
obj = bpy.data.objects.new("qa_obj", mesh)
bpy.context.collection.objects.link(obj)
bpy.context.view_layer.objects.active = obj
obj[scene_io.QA_KEY] = scene_io.qa_property({"watertight": False, "boundary_loops": 1, "shells": 2,
                                             "floaters": 1, "inner_shells": 0, "non_manifold_edges": 0,
                                             "triangles": 1200, "uv_overlap": 0.0, "texel_density": 300.0,
                                             "cleanup": ["filled holes with 3 faces"]})
history = importlib.import_module(PKG + ".core.history")
history.write_record(Path(ARGS["jobs"]) / "20260101-000000_chair_0001",
                     {"name": "chair", "kind": "generate", "state": "ok", "seed": 5, "results": []})
operators.refresh_history(bpy.context)
draw_panel()
importlib.import_module(PKG + ".preferences").draw_preferences(prefs, bpy.context, Layout())
seen["online_access"] = bpy.app.online_access
job_operators = (operators.TRELLIS2_OT_generate, operators.TRELLIS2_OT_retexture)
seen["job_options"] = sorted(set().union(*(op.bl_options for op in job_operators)))
emit({k: sorted(v) if isinstance(v, set) else v for k, v in seen.items()})
"""


def test_panel_and_preferences_draw(tmp_path, inputs, bpy_python, extension_zip, model_dir):
    # A backend Python at a long path, as in a user's home or a CI checkout: its label must not overflow.
    deep = tmp_path / "a folder with a rather long name" / "backend environment" / "bin"
    deep.mkdir(parents=True)
    (deep / "python").symlink_to(PYTHON)
    args = {"zip": str(extension_zip), "python": str(deep / "python"), "model": str(model_dir),
            "jobs": str(tmp_path / "jobs"), "image": str(inputs["opaque"])}
    run = run_bpy(SETUP + DRAW, tmp_path, python=bpy_python, args=(json.dumps(args),))
    assert run.returncode == 0, run.describe()
    seen = run.result
    assert {"trellis2.generate", "trellis2.retexture", "trellis2.cancel", "trellis2.backend_start",
            "trellis2.setup_backend", "trellis2.download_weights"} <= set(seen["operators"])
    assert {"image_path", "image", "pipeline_type", "seed", "face_target", "texture_size", "steps",
            "guidance", "backend_python", "model_kind", "model_source", "device", "low_vram",
            "output_dir"} <= set(seen["props"])
    assert "Shaping the surface: step 3 of 12" in seen["progress"]
    # While a job runs, Cancel is drawn before everything else (the guide, the settings, Generate).
    running = seen["running_sequence"]
    assert running[0] == "trellis2.cancel" and "Getting Started" in running
    assert running.count("trellis2.cancel") == 1
    assert any("out of memory" in line for line in seen["labels"])
    labels = seen["labels"]
    # Headless, the region's width is unknown and text is wrapped at 40 characters: no label may be
    # longer (at the default sidebar width, Blender cuts a longer label in the middle with "...").
    assert [line for line in labels if len(line) > 40] == []
    assert "3. First result: choose a picture below, press Generate" in " ".join(labels)  # wrapped, whole
    # A wrapped step's later lines are indented like its first, past the step's icon.
    first = next(i for i, line in enumerate(labels) if line.startswith("3. First result"))
    assert seen["icons"][first] == "RADIOBUT_OFF" and seen["icons"][first + 1] == "BLANK1"
    assert "Getting Started" in labels and "1. Backend: found" in labels
    if not seen["online_access"]:  # Blender's default: the guide offers Blender's own switch, by its name
        assert "use_online_access" in seen["props"]
        assert any("Allow Online Access" in line for line in labels)
    ready = seen["ready_labels"]
    assert "2. Model: loaded" in ready and not any("Allow Online Access" in line for line in ready)
    assert seen["job_options"] == ["UNDO"]  # no REGISTER: no redo panel or Shift+R running a whole job
    assert "Holes (boundary loops): 1" in labels and "Floaters: 1" in labels and "Watertight: no" in labels
    assert any(line.startswith("chair  ") for line in labels)  # the history lists the earlier job
    assert {"trellis2.history_import", "trellis2.history_delete"} & set(seen["operators"]) == {
        "trellis2.history_delete"}  # no result files: nothing to re-import, but it can be deleted
    assert {"num_samples", "remove_floaters", "remove_inner_shells", "fill_holes", "unwrap", "import_scale",
            "place_on_ground", "replace_materials", "rescale"} <= set(seen["props"])
