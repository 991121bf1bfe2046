"""Variations and multi-view from the panel, in real bpy with the installed extension.

The first test runs the real server with the fake generator (tests/blender/fake_generator.py),
which writes the request it received: every value set in the panel must arrive in it. The second
runs the real backend on the tiny checkpoint: a 3-view, 3-sample job from the panel imports three
objects into one collection, and "Keep This One" leaves one.
"""

from __future__ import annotations

import json

import pytest

from tests.blender.addon_script import SETUP
from tests.blender.runner import PYTHON, run_bpy
from tests.fixtures import images

pytestmark = pytest.mark.blender

VARIATIONS = """
from pathlib import Path
bpy.ops.mesh.primitive_cube_add(size=2.0, location=(0.0, 0.0, 0.0))  # the default cube
cube = bpy.context.active_object
bpy.context.scene.cursor.location = (0.0, 0.0, 0.0)
use_image(ARGS["front"])
for key in ("side", "back"):
    bpy.ops.trellis2.view_add()
    settings.views[-1].path = ARGS[key]
settings.multiview_mode = ARGS["mode"]
settings.num_samples = 3
settings.seed = 777
settings.texture_size = "1024"
settings.face_target = 12345
settings.pipeline_type = "512"
settings.remove_floaters = True
settings.remove_inner_shells = True
settings.fill_holes = True
settings.unwrap = "fast"
out = {"ret": run_op(bpy.ops.trellis2.generate)}
job_dirs = [p for p in Path(ARGS["jobs"]).iterdir() if (p / "received_request.json").is_file()]
out["received"] = [json.loads((p / "received_request.json").read_text()) for p in job_dirs]
new = [o for o in bpy.data.objects if o != cube]
out["objects"] = sorted(o.name for o in new)
out["collections"] = sorted({c.name for o in new for c in o.users_collection})
RECORDED = ("seed", "sample", "views", "num_samples", "multiview")
out["records"] = {o.name: {k: o["trellis2"].to_dict().get(k) for k in RECORDED} for o in new}
out["selected"] = sorted(o.name for o in bpy.context.selected_objects)
cube_box = [cube.matrix_world @ __import__("mathutils").Vector(c) for c in cube.bound_box]
cube_max_x = max(c.x for c in cube_box)
out["clear_of_cube"] = all(min((o.matrix_world @ __import__("mathutils").Vector(c)).x for c in o.bound_box)
                           >= cube_max_x - 1e-6 for o in new)
out["xs"] = sorted(round(o.location.x, 4) for o in new)
out["qa"] = {o.name: o["trellis2_qa"].to_dict() if "trellis2_qa" in o else None for o in new}
out["polygons"] = {o.name: len(o.data.polygons) for o in new}
# Keep the middle one: the others and their meshes go; the kept one remembers the set's size.
keep = bpy.data.objects[sorted(o.name for o in new)[1]]
bpy.context.view_layer.objects.active = keep
meshes_before = len(bpy.data.meshes)
out["keep_ret"] = run_op(bpy.ops.trellis2.keep_variation)
out["after_keep"] = sorted(o.name for o in bpy.data.objects if o != cube)
out["meshes_removed"] = meshes_before - len(bpy.data.meshes)
out["kept_of"] = keep["trellis2"]["kept_of"]
out["keep_poll_after"] = bpy.ops.trellis2.keep_variation.poll()
# The history lists the finished job; re-importing it brings the three variations back.
entries = operators.history_entries()
out["history"] = [(e.name, e.state, len(e.results)) for e in entries]
before = set(bpy.data.objects.keys())
out["reimport_ret"] = run_op(bpy.ops.trellis2.history_import, folder=str(entries[0].folder))
out["reimported"] = sorted(set(bpy.data.objects.keys()) - before)
emit(out)
"""


def _run(tmp_path, python, model, mode):
    paths = {k: str(images.rgba_transparent(tmp_path / f"{k}.png")) for k in ("front", "side", "back")}
    args = {"python": str(python), "model": str(model), "jobs": str(tmp_path / "jobs"), "mode": mode,
            **paths}
    return paths, args


def test_panel_values_reach_the_backend_and_keep_leaves_one(tmp_path, bpy_python, extension_zip,
                                                             fake_backend_python, model_dir):
    paths, args = _run(tmp_path, fake_backend_python, model_dir, "multidiffusion")
    args["zip"] = str(extension_zip)
    run = run_bpy(SETUP + VARIATIONS, tmp_path, python=bpy_python, args=(json.dumps(args),), timeout=240)
    assert run.returncode == 0, run.describe()
    res = run.result
    assert res["ret"] == ["FINISHED"], res
    (received,) = res["received"]
    assert received["images"] == [paths["front"], paths["side"], paths["back"]]
    assert received["multiview"] == "multidiffusion"
    assert received["num_samples"] == 3
    assert received["seed"] == 777
    assert received["pipeline_type"] == "512"
    assert received["export"]["texture_size"] == 1024
    assert received["export"]["faces"] == 12345
    assert received["export"]["unwrap"] == "fast"
    assert received["export"]["remove_floaters"] is True
    assert received["export"]["remove_inner_shells"] is True
    assert received["export"]["fill_holes"] is True
    assert res["objects"] == ["front_0", "front_1", "front_2"]
    assert res["collections"] == ["front variations"]
    assert [r["sample"] for _, r in sorted(res["records"].items())] == [0, 1, 2]
    assert all(r["seed"] == 777 and r["num_samples"] == 3 and r["multiview"] == "multidiffusion"
               and r["views"] == [paths["side"], paths["back"]] for r in res["records"].values())
    assert res["selected"] == res["objects"]
    assert res["clear_of_cube"], res["xs"]  # placed beside the default cube, not inside it
    assert len(set(res["xs"])) == 3
    assert res["keep_ret"] == ["FINISHED"]
    assert res["after_keep"] == ["front_1"]
    assert res["meshes_removed"] == 2
    assert res["kept_of"] == 3
    assert res["keep_poll_after"] is False  # one left: nothing more to keep from
    assert res["history"] == [["front", "ok", 3]]
    assert res["reimport_ret"] == ["FINISHED"]
    assert len(res["reimported"]) == 3


@pytest.mark.slow
def test_three_views_three_samples_on_the_tiny_model(tmp_path, bpy_python, extension_zip, tiny_checkpoint):
    paths, args = _run(tmp_path, PYTHON, tiny_checkpoint, "stochastic")
    args["zip"] = str(extension_zip)
    run = run_bpy(SETUP + "settings.texture_size = '512'\n" + VARIATIONS.replace(
        'settings.texture_size = "1024"', 'settings.texture_size = "512"').replace(
        "settings.face_target = 12345", "settings.face_target = 1000"),
        tmp_path, python=bpy_python, args=(json.dumps(args),), timeout=300)
    assert run.returncode == 0, run.describe()
    res = run.result
    assert res["ret"] == ["FINISHED"], res
    assert res["objects"] == ["front_0", "front_1", "front_2"]
    assert res["collections"] == ["front variations"]
    assert all(r["seed"] == 777 for r in res["records"].values())
    docs = [json.loads(p.read_text()) for p in (tmp_path / "jobs").glob("*/front_*/result.json")]
    assert sorted(d["sample"] for d in docs) == [0, 1, 2]
    assert all(d["multiview"] == "stochastic" and len(d["views"]) == 3 for d in docs)
    # Each object carries its asset's QA report; its triangle count is the object's.
    for name, qa in res["qa"].items():
        assert qa is not None and qa["triangles"] == res["polygons"][name]
        assert qa["floaters"] == 0 and qa["inner_shells"] == 0  # the clean-ups were asked for
    assert all("removed" in d["qa"]["cleanup"][0] for d in docs)
    assert res["after_keep"] == ["front_1"]
    assert res["history"] == [["front", "ok", 3]] and len(res["reimported"]) == 3
