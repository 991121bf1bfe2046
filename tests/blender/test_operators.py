"""The add-on's operators, driven headlessly against the real backend on the tiny checkpoint.

Each test runs one child process with ``bpy`` (see runner.py): the extension is installed from
the built zip, its preferences point at this venv's Python as the backend (``python -m backend
serve`` with the real TRELLIS.2 generator), the tiny random-weight release folder and the CPU,
and the operators run their blocking (background-mode) path. Jobs are kept small (pipeline 512,
512 px textures, 1,000 faces, a 512 retexture grid) so each takes seconds.

The material's alpha wiring follows the decoded alpha map, not the input picture. The tiny
networks are random: their alpha is about 0.5 everywhere, so the backend calls every result
BLEND. The OPAQUE case runs on ``opaque_tiny_checkpoint`` (conftest.py), the same checkpoint
with the texture decoder's alpha output fixed at 1. Both tests read the backend's own verdict
(``alpha_mode`` in result.json) and check that it is the expected one and that the add-on wired
the material to match it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from backend.meshio import read_mesh
from tests.blender.addon_script import SETUP
from tests.blender.runner import PYTHON, REPO, run_bpy
from tests.fixtures import images

pytestmark = [pytest.mark.blender, pytest.mark.slow]

OPAQUE_LINKS = {
    ("Base Color", "Color", "Principled BSDF", "Base Color"),
    ("Metallic Roughness", "Color", "Separate Metallic Roughness", "Color"),
    ("Separate Metallic Roughness", "Green", "Principled BSDF", "Roughness"),
    ("Separate Metallic Roughness", "Blue", "Principled BSDF", "Metallic"),
    ("Principled BSDF", "BSDF", "Material Output", "Surface"),
}
TRANSPARENT_LINKS = OPAQUE_LINKS | {("Base Color", "Alpha", "Principled BSDF", "Alpha")}
NODE_TYPES = {"Material Output": "ShaderNodeOutputMaterial", "Principled BSDF": "ShaderNodeBsdfPrincipled",
              "Base Color": "ShaderNodeTexImage", "Metallic Roughness": "ShaderNodeTexImage",
              "Separate Metallic Roughness": "ShaderNodeSeparateColor"}
COLORSPACES = {"Base Color": "sRGB", "Metallic Roughness": "Non-Color"}
# A generated mesh that the face target decimated also carries the baked normal map.
NORMAL_MAP_LINKS = {("Normal", "Color", "Normal Map", "Color"),
                    ("Normal Map", "Normal", "Principled BSDF", "Normal")}
NORMAL_MAP_NODES = {"Normal": "ShaderNodeTexImage", "Normal Map": "ShaderNodeNormalMap"}

# Small jobs: a few seconds each on two CPU cores.
SMALL_JOBS = """
settings.pipeline_type = "512"
settings.texture_size = "512"
settings.face_target = 1000
settings.retexture_resolution = "512"
settings.seed = 1234


def material_info(mat):
    nodes = mat.node_tree.nodes
    base = nodes.get("Base Color")
    return {"links": sorted(scene_io.material_links(mat)),
            "node_types": {n.name: n.bl_idname for n in nodes},
            "separate_mode": getattr(nodes.get("Separate Metallic Roughness"), "mode", None),
            "render_method": mat.surface_render_method,
            "base_transparent": scene_io.has_transparency(base.image) if base else None,
            "colorspaces": {n.name: n.image.colorspace_settings.name for n in nodes if n.type == "TEX_IMAGE"},
            "packed": all(n.image.packed_file is not None for n in nodes if n.type == "TEX_IMAGE")}
"""


def _run(tmp_path, script, bpy_python, extension_zip, model, **extra):
    args = {"zip": str(extension_zip), "python": str(PYTHON), "model": str(model),
            "jobs": str(tmp_path / "jobs"), **{k: str(v) for k, v in extra.items()}}
    run = run_bpy(SETUP + SMALL_JOBS + script, tmp_path, python=bpy_python, args=(json.dumps(args),),
                  timeout=300)
    assert run.returncode == 0, run.describe()
    assert run.result is not None, run.describe()
    return run.result


def _check_material(info, alpha_mode, normal_map: bool):
    """The wiring the issue asks for, given the backend's alpha verdict for the result and whether
    it baked a normal map."""
    assert info["node_types"] == NODE_TYPES | (NORMAL_MAP_NODES if normal_map else {})
    assert info["separate_mode"] == "RGB"
    assert info["colorspaces"] == COLORSPACES | ({"Normal": "Non-Color"} if normal_map else {})
    assert info["packed"]
    links = {tuple(link) for link in info["links"]}
    normal_links = NORMAL_MAP_LINKS if normal_map else set()
    if alpha_mode == "OPAQUE":
        assert links == OPAQUE_LINKS | normal_links
        assert info["render_method"] != "BLENDED"
        assert info["base_transparent"] is False
    else:
        assert links == TRANSPARENT_LINKS | normal_links
        assert info["render_method"] == "BLENDED"
        assert info["base_transparent"] is True


GENERATE = """
bpy.context.scene.cursor.location = (1.0, 2.0, 3.0)
out = {"background_removal": prefs.background_removal}
for key, model in (("leaf", ARGS["model"]), ("pebble", ARGS["opaque_model"])):
    prefs.model_source = model
    use_image(ARGS[key])
    before = set(bpy.data.objects.keys())
    ret = run_op(bpy.ops.trellis2.generate)
    new = sorted(set(bpy.data.objects.keys()) - before)
    obj = bpy.data.objects[new[0]] if len(new) == 1 else None
    info = {"ret": ret, "new": new, "status": status.job_state, "backend": status.backend_state}
    if obj is not None:
        doc = result_doc(key)
        info.update(
            material_info(obj.data.materials[0]), alpha_mode=doc["alpha_mode"], stats=doc["stats"],
            materials=len(obj.data.materials),
            location=list(obj.location), vertices=len(obj.data.vertices), faces=len(obj.data.polygons),
            uv_layers=[uv.name for uv in obj.data.uv_layers],
            settings=obj["trellis2"].to_dict(), selected=obj.select_get(),
            active=bpy.context.view_layer.objects.active == obj)
        if key == "pebble":
            render = __import__("importlib").import_module(PKG + ".render")
            render.render_preview(obj, ARGS["preview"], size=256, samples=8)
    out[key] = info
# A file the backend cannot read: its error reaches the user, nothing is added.
before = snapshot()
use_image(ARGS["corrupt"])
out["corrupt"] = {"ret": run_op(bpy.ops.trellis2.generate), "clean": snapshot() == before,
                  "status": [status.job_state, status.backend_state]}
emit(out)
"""


def test_generate_imports_object_with_principled_material(tmp_path, inputs, bpy_python, extension_zip,
                                                          tiny_checkpoint, opaque_tiny_checkpoint):
    preview = REPO / "out" / "blender" / "generated_preview.png"
    preview.unlink(missing_ok=True)
    # No transparency: the default background removal (the plain-background keyer) cuts it out.
    pebble = images.rgb_on_white(tmp_path / "pebble.png")
    res = _run(tmp_path, GENERATE, bpy_python, extension_zip, tiny_checkpoint,
               opaque_model=opaque_tiny_checkpoint, leaf=inputs["transparent"], pebble=pebble,
               corrupt=inputs["corrupt"], preview=preview)
    leaf, pebble = res["leaf"], res["pebble"]
    assert res["background_removal"] == "SOLID"  # the default
    # The backend's verdicts: random alpha -> BLEND; the alpha-1 decoder -> OPAQUE.
    assert leaf.get("alpha_mode") == "BLEND", leaf
    assert pebble.get("alpha_mode") == "OPAQUE", pebble
    for info, name in ((leaf, "leaf"), (pebble, "pebble")):
        assert info["ret"] == ["FINISHED"], info
        assert info["new"] == [name]
        assert info["status"] == "FINISHED" and info["backend"] == "READY"
        _check_material(info, info["alpha_mode"], normal_map=True)  # the face target decimated it
        assert info["materials"] == 1
        if name == "leaf":  # an empty scene: at the 3D cursor
            assert info["location"] == [1.0, 2.0, 3.0]
        else:  # beside the leaf that is already there, not inside it
            assert info["location"][1:] == [2.0, 3.0] and info["location"][0] > 1.5
        assert (info["vertices"], info["faces"]) == (info["stats"]["vertices"], info["stats"]["faces"])
        assert 100 < info["faces"] <= 1000
        assert info["uv_layers"] == ["UVMap"]
        assert info["settings"]["seed"] == 1234
        assert info["settings"]["texture_size"] == 512
        assert info["settings"]["pipeline_type"] == "512"
        assert info["settings"]["kind"] == "generate"
        assert info["selected"] and info["active"]
    (corrupt_ret,) = res["corrupt"]["ret"]
    assert corrupt_ret.startswith("ERROR:") and "broken.png: not a readable image" in corrupt_ret, corrupt_ret
    assert res["corrupt"]["clean"]
    assert res["corrupt"]["status"] == ["FAILED", "READY"]
    assert preview.is_file() and preview.stat().st_size > 1000
    assert preview.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


RETEXTURE = """
use_image(ARGS["leaf"])
checks = {"poll_without_selection": run_op(bpy.ops.trellis2.retexture)}
mesh = bpy.data.meshes.new("crate")
import bmesh
bm = bmesh.new()
bm.loops.layers.uv.new("UVMap")
bmesh.ops.create_cube(bm, size=1.0, calc_uvs=True)
bmesh.ops.subdivide_edges(bm, edges=bm.edges[:], cuts=2, use_grid_fill=True)
bm.to_mesh(mesh)
bm.free()
lightmap = mesh.uv_layers.new(name="Lightmap")
for i, loop_uv in enumerate(lightmap.data):  # a second, different layout
    loop_uv.uv = (0.5 * loop_uv.uv[0] + 0.25, (i % 7) / 7.0)
mesh.uv_layers["UVMap"].active_render = True
mesh.uv_layers.active = lightmap
old = bpy.data.materials.new("old")
mesh.materials.append(old)
obj = bpy.data.objects.new("crate", mesh)
bpy.context.collection.objects.link(obj)
obj.location = (0.5, -1.0, 2.0)
obj.rotation_euler = (0.3, 0.2, 0.1)
obj.scale = (1.0, 2.0, 0.5)
bpy.context.view_layer.objects.active = obj
obj.select_set(True)
bpy.context.view_layer.update()

def uv_data(layer):
    return [round(v, 6) for d in layer.data for v in d.uv]

def state():
    return {"matrix": [list(r) for r in obj.matrix_world], "verts": len(mesh.vertices),
            "polys": len(mesh.polygons), "loops": len(mesh.loops),
            "uv_names": [l.name for l in mesh.uv_layers],
            "uv_render": [l.active_render for l in mesh.uv_layers],
            "uv_active": mesh.uv_layers.active.name,
            "uvs": [uv_data(l) for l in mesh.uv_layers],
            "co": [round(c, 6) for v in mesh.vertices for c in v.co]}

before = state()
objects_before = sorted(bpy.data.objects.keys())
ret = run_op(bpy.ops.trellis2.retexture)
after = state()
mat = obj.data.materials[-1]
kept_slots = [m.name for m in obj.data.materials]
face_slots = sorted({p.material_index for p in mesh.polygons})
qa = obj["trellis2_qa"].to_dict()
alpha_mode = result_doc("crate")["alpha_mode"]
# Asked to replace: the old slots go, only the new material stays.
settings.replace_materials = True
replace_ret = run_op(bpy.ops.trellis2.retexture)
emit({"kept_slots": kept_slots, "face_slots": face_slots, "replace_ret": replace_ret, "qa": qa,
      "replaced_slots": [m.name for m in obj.data.materials],
      "checks": checks, "ret": ret, "changed": sorted(k for k in before if before[k] != after[k]),
      "before_verts": before["verts"], "before_polys": before["polys"], "uv_names": after["uv_names"],
      "uv_render": after["uv_render"], "uv_active": after["uv_active"],
      "uvs_differ": after["uvs"][0] != after["uvs"][1], "render_uvs": after["uvs"][0],
      "objects_same": objects_before == sorted(bpy.data.objects.keys()),
      "material": material_info(mat),
      "alpha_mode": alpha_mode,
      "settings": obj["trellis2"].to_dict(), "status": status.job_state})
"""


def test_retexture_keeps_transform_topology_and_uvs(tmp_path, inputs, bpy_python, extension_zip,
                                                    tiny_checkpoint):
    res = _run(tmp_path, RETEXTURE, bpy_python, extension_zip, tiny_checkpoint, leaf=inputs["transparent"])
    assert "Select a mesh object" in res["checks"]["poll_without_selection"][0]
    assert res["ret"] == ["FINISHED"], res
    assert res["changed"] == [], "transform, vertices, faces or UV layers changed"
    assert (res["before_verts"], res["before_polys"]) == (56, 54)  # a cube with 2 cuts per edge
    assert res["uv_names"] == ["UVMap", "Lightmap"] and res["uvs_differ"]
    assert res["uv_render"] == [True, False] and res["uv_active"] == "Lightmap"
    # The backend was sent the render UV map (not the active one), as the backend reads it.
    sent = sorted((tmp_path / "jobs").glob("*/input_mesh.ply"))[0]  # both jobs sent the same mesh
    mesh = read_mesh(sent)
    render_uvs = np.asarray(res["render_uvs"]).reshape(-1, 2)
    sent_uvs = np.stack([mesh.uvs[:, 0], 1 - mesh.uvs[:, 1]], 1)
    assert {tuple(uv) for uv in np.round(sent_uvs, 4)} == {tuple(uv) for uv in np.round(render_uvs, 4)}
    assert len(mesh.faces) == 2 * res["before_polys"]  # quads -> triangles
    assert res["objects_same"]
    # The object's own slot stays; the new material is one more slot that every face uses.
    assert res["kept_slots"] == ["old", "crate_retexture"]
    assert res["face_slots"] == [1]
    assert res["replace_ret"] == ["FINISHED"]
    assert res["replaced_slots"] == ["crate_retexture.001"]
    # The QA report of the retextured mesh reached the object: a closed, subdivided cube.
    assert res["qa"]["watertight"] and res["qa"]["shells"] == 1 and res["qa"]["triangles"] == 108
    assert res["alpha_mode"] == "BLEND"  # random tiny weights: alpha about 0.5
    _check_material(res["material"], res["alpha_mode"], normal_map=False)  # the mesh is kept as it is
    assert res["settings"]["kind"] == "retexture"
    assert res["settings"]["resolution"] == 512
    assert res["status"] == "FINISHED"


CANCEL_AND_CRASH = """
out = {}
t_start = time.monotonic()
bpy.context.scene.cursor.location = (0, 0, 0)
use_image(ARGS["leaf"])
before = snapshot()
# A long job: 400 sparse-structure steps take minutes on the CPU.
settings.sparse_structure.override = True
settings.sparse_structure.steps = 400

# 1. Ctrl+C during the sampler cancels the job; the backend goes on.
seen = when_job_in("sparse_structure", press_ctrl_c)
out["cancel_ret"] = run_op(bpy.ops.trellis2.generate)
out["cancel_seconds"] = time.monotonic() - seen["at"]
out["cancel_seen"] = seen
out["cancel_clean"] = snapshot() == before
out["cancel_status"] = [status.job_state, status.backend_state]
out["phase_seconds"] = {"cancel": time.monotonic() - t_start}
first_pid = runtime.current().client.pid

# 2. The backend dies mid-job (SIGKILL): an error, nothing left behind, Blender goes on.
def kill_backend(job):
    os.kill(runtime.current().client.pid, signal.SIGKILL)

seen = when_job_in("sparse_structure", kill_backend)
out["crash_ret"] = run_op(bpy.ops.trellis2.generate)
out["crash_seen"] = seen
out["crash_clean"] = snapshot() == before
out["crash_status"] = [status.job_state, status.backend_state, status.message, status.backend_message]
out["phase_seconds"]["crash"] = time.monotonic() - t_start
out["same_backend_until_kill"] = runtime.current().client.pid == first_pid
try:
    os.kill(first_pid, 0)
    out["killed_gone"] = False
except ProcessLookupError:
    out["killed_gone"] = True

# 3. The next Generate starts a new backend and works.
settings.sparse_structure.override = False
out["after_ret"] = run_op(bpy.ops.trellis2.generate)
out["after_objects"] = sorted(bpy.data.objects.keys())
out["after_status"] = [status.job_state, status.backend_state]
out["new_backend"] = runtime.current().client.pid != first_pid
out["phase_seconds"]["after"] = time.monotonic() - t_start
bpy.ops.trellis2.backend_stop()
out["stopped"] = status.backend_state
emit(out)
"""


def test_cancel_and_dying_backend_leave_no_partial_objects(tmp_path, inputs, bpy_python, extension_zip,
                                                           tiny_checkpoint):
    res = _run(tmp_path, CANCEL_AND_CRASH, bpy_python, extension_zip, tiny_checkpoint,
               leaf=inputs["transparent"])
    print("seconds since the start, per phase:", res["phase_seconds"])
    assert res["cancel_ret"] == ["CANCELLED"], res
    assert res["cancel_seen"]["step"] < res["cancel_seen"]["total"] == 400
    assert res["cancel_seconds"] < 10, "cancel must end the job within about one sampler step"
    assert res["cancel_clean"]
    assert res["cancel_status"] == ["CANCELLED", "READY"]
    # An ERROR report makes bpy.ops raise in a script: the user sees the message.
    assert res["crash_seen"]["step"] < res["crash_seen"]["total"] == 400
    (crash_ret,) = res["crash_ret"]
    assert crash_ret.startswith("ERROR:") and "the backend stopped (exit code -9)" in crash_ret, crash_ret
    assert res["crash_clean"]
    assert res["same_backend_until_kill"] and res["killed_gone"]
    job_state, backend_state, message, backend_message = res["crash_status"]
    assert job_state == "FAILED" and backend_state == "ERROR"
    assert "backend stopped" in message and "exit code -9" in message
    assert "backend stopped" in backend_message
    assert res["after_ret"] == ["FINISHED"], res
    assert res["after_objects"] == ["leaf"]
    assert res["after_status"] == ["FINISHED", "READY"]
    assert res["new_backend"]
    assert res["stopped"] == "STOPPED"
