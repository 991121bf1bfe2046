"""The add-on's operators, driven headlessly against the real backend server with a fake generator.

Each test runs one child process with ``bpy`` (see runner.py): the extension is installed
from the built zip, its preferences point at the fake backend, and the operators run their
blocking (background-mode) path.
"""

from __future__ import annotations

import json

import pytest

from tests.blender.addon_script import SETUP
from tests.blender.runner import REPO, run_bpy

pytestmark = [pytest.mark.blender, pytest.mark.slow]

OPAQUE_LINKS = {
    ("Base Color", "Color", "Principled BSDF", "Base Color"),
    ("Metallic Roughness", "Color", "Separate Metallic Roughness", "Color"),
    ("Separate Metallic Roughness", "Green", "Principled BSDF", "Roughness"),
    ("Separate Metallic Roughness", "Blue", "Principled BSDF", "Metallic"),
    ("Principled BSDF", "BSDF", "Material Output", "Surface"),
}
TRANSPARENT_LINKS = OPAQUE_LINKS | {("Base Color", "Alpha", "Principled BSDF", "Alpha")}


def _run(tmp_path, script, extension_zip, fake_backend_python, model_dir, **extra):
    args = {"zip": str(extension_zip), "python": str(fake_backend_python), "model": str(model_dir),
            "jobs": str(tmp_path / "jobs"), **{k: str(v) for k, v in extra.items()}}
    run = run_bpy(SETUP + script, tmp_path, args=(json.dumps(args),), timeout=180)
    assert run.returncode == 0, run.describe()
    assert run.result is not None, run.describe()
    return run.result


GENERATE = """
bpy.context.scene.cursor.location = (1.0, 2.0, 3.0)
out = {}
for key in ("opaque", "transparent"):
    use_image(ARGS[key])
    settings.seed = 1234
    settings.texture_size = "1024"
    before = set(bpy.data.objects.keys())
    ret = run_op(bpy.ops.trellis2.generate)
    new = sorted(set(bpy.data.objects.keys()) - before)
    obj = bpy.data.objects[new[0]] if len(new) == 1 else None
    info = {"ret": ret, "new": new, "status": status.job_state, "backend": status.backend_state}
    if obj is not None:
        mat = obj.data.materials[0]
        nodes = mat.node_tree.nodes
        info.update(
            location=list(obj.location), vertices=len(obj.data.vertices), faces=len(obj.data.polygons),
            uv_layers=[uv.name for uv in obj.data.uv_layers],
            links=sorted(scene_io.material_links(mat)),
            render_method=mat.surface_render_method,
            colorspaces={n.name: n.image.colorspace_settings.name for n in nodes if n.type == "TEX_IMAGE"},
            packed=all(n.image.packed_file is not None for n in nodes if n.type == "TEX_IMAGE"),
            settings=obj["trellis2"].to_dict(), selected=obj.select_get(),
            active=bpy.context.view_layer.objects.active == obj)
        if key == "opaque":
            render = __import__("importlib").import_module(PKG + ".render")
            render.render_preview(obj, ARGS["preview"], size=256, samples=8)
    out[key] = info
emit(out)
"""


def test_generate_imports_object_with_principled_material(tmp_path, inputs, extension_zip,
                                                          fake_backend_python, model_dir):
    preview = REPO / "out" / "blender" / "generated_preview.png"
    preview.unlink(missing_ok=True)
    res = _run(tmp_path, GENERATE, extension_zip, fake_backend_python, model_dir,
               opaque=inputs["opaque"], transparent=inputs["transparent"], preview=preview)
    opaque, transparent = res["opaque"], res["transparent"]
    for info, name in ((opaque, "teapot"), (transparent, "leaf")):
        assert info["ret"] == ["FINISHED"], info
        assert info["new"] == [name]
        assert info["status"] == "FINISHED"
        assert info["location"] == [1.0, 2.0, 3.0]
        assert info["vertices"] > 100 and info["faces"] > 100
        assert info["uv_layers"] == ["UVMap"]
        assert info["packed"]
        assert info["colorspaces"] == {"Base Color": "sRGB", "Metallic Roughness": "Non-Color"}
        assert info["settings"]["seed"] == 1234
        assert info["settings"]["texture_size"] == 1024
        assert info["settings"]["kind"] == "generate"
        assert info["selected"] and info["active"]
    assert {tuple(link) for link in opaque["links"]} == OPAQUE_LINKS
    assert opaque["render_method"] != "BLENDED"
    assert {tuple(link) for link in transparent["links"]} == TRANSPARENT_LINKS
    assert transparent["render_method"] == "BLENDED"
    assert preview.is_file() and preview.stat().st_size > 1000
    assert preview.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


RETEXTURE = """
use_image(ARGS["opaque"])
checks = {"poll_without_selection": run_op(bpy.ops.trellis2.retexture)}
mesh = bpy.data.meshes.new("crate")
import bmesh
bm = bmesh.new()
bmesh.ops.create_cube(bm, size=1.0, calc_uvs=True)
bmesh.ops.subdivide_edges(bm, edges=bm.edges[:], cuts=2, use_grid_fill=True)
bm.to_mesh(mesh)
bm.free()
mesh.uv_layers.new(name="Lightmap")
mesh.uv_layers[0].active_render = True
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

before = {"matrix": [list(r) for r in obj.matrix_world], "verts": len(mesh.vertices),
          "polys": len(mesh.polygons), "loops": len(mesh.loops),
          "uv_names": [l.name for l in mesh.uv_layers],
          "uvs": [uv_data(l) for l in mesh.uv_layers],
          "co": [round(c, 6) for v in mesh.vertices for c in v.co]}
objects_before = sorted(bpy.data.objects.keys())
ret = run_op(bpy.ops.trellis2.retexture)
after = {"matrix": [list(r) for r in obj.matrix_world], "verts": len(mesh.vertices),
         "polys": len(mesh.polygons), "loops": len(mesh.loops),
         "uv_names": [l.name for l in mesh.uv_layers],
         "uvs": [uv_data(l) for l in mesh.uv_layers],
         "co": [round(c, 6) for v in mesh.vertices for c in v.co]}
mat = obj.data.materials[0]
emit({"checks": checks, "ret": ret, "changed": sorted(k for k in before if before[k] != after[k]),
      "before_verts": before["verts"],
      "objects_same": objects_before == sorted(bpy.data.objects.keys()),
      "materials": [m.name for m in obj.data.materials], "links": sorted(scene_io.material_links(mat)),
      "settings": obj["trellis2"].to_dict(), "status": status.job_state})
"""


def test_retexture_keeps_transform_topology_and_uvs(tmp_path, inputs, extension_zip,
                                                    fake_backend_python, model_dir):
    res = _run(tmp_path, RETEXTURE, extension_zip, fake_backend_python, model_dir, opaque=inputs["opaque"])
    assert "Select a mesh object" in res["checks"]["poll_without_selection"][0]
    assert res["ret"] == ["FINISHED"], res
    assert res["changed"] == [], "transform, vertices, faces or UV layers changed"
    assert res["before_verts"] == 56  # a cube with 2 cuts per edge
    assert res["objects_same"]
    assert res["materials"] == ["crate_retexture"]
    assert {tuple(link) for link in res["links"]} == OPAQUE_LINKS
    assert res["settings"]["kind"] == "retexture"
    assert res["status"] == "FINISHED"


CANCEL_AND_CRASH = """
out = {}
bpy.context.scene.cursor.location = (0, 0, 0)
# 1. Ctrl+C during a slow job cancels it and leaves nothing behind.
use_image(ARGS["slow"])
before = snapshot()
interrupt_when("*.started", ARGS["jobs"])
t0 = time.monotonic()
out["cancel_ret"] = run_op(bpy.ops.trellis2.generate)
out["cancel_seconds"] = time.monotonic() - t0
out["cancel_clean"] = snapshot() == before
out["cancel_status"] = [status.job_state, status.backend_state]
# 2. A backend that dies mid-job: an error, nothing left behind, Blender goes on.
use_image(ARGS["crash"])
out["crash_ret"] = run_op(bpy.ops.trellis2.generate)
out["crash_clean"] = snapshot() == before
out["crash_status"] = [status.job_state, status.backend_state, status.message, status.backend_message]
# 3. The next job restarts the backend and works.
use_image(ARGS["opaque"])
out["after_ret"] = run_op(bpy.ops.trellis2.generate)
out["after_objects"] = sorted(bpy.data.objects.keys())
out["after_status"] = [status.job_state, status.backend_state]
bpy.ops.trellis2.backend_stop()
out["stopped"] = status.backend_state
emit(out)
"""


def test_cancel_and_dying_backend_leave_no_partial_objects(tmp_path, inputs, extension_zip,
                                                           fake_backend_python, model_dir):
    res = _run(tmp_path, CANCEL_AND_CRASH, extension_zip, fake_backend_python, model_dir,
               slow=inputs["slow"], crash=inputs["crash"], opaque=inputs["opaque"])
    assert res["cancel_ret"] == ["CANCELLED"], res
    assert res["cancel_seconds"] < 15, "cancel must not wait for the whole slow job (18 s)"
    assert res["cancel_clean"]
    assert res["cancel_status"] == ["CANCELLED", "READY"]
    # An ERROR report makes bpy.ops raise in a script: the user sees the message.
    (crash_ret,) = res["crash_ret"]
    assert crash_ret.startswith("ERROR:") and "the backend stopped (exit code 7)" in crash_ret
    assert res["crash_clean"]
    job_state, backend_state, message, backend_message = res["crash_status"]
    assert job_state == "FAILED" and backend_state == "ERROR"
    assert "backend stopped" in message and "exit code 7" in message
    assert "exit code 7" in backend_message
    assert res["after_ret"] == ["FINISHED"]
    assert res["after_objects"] == ["teapot"]
    assert res["after_status"] == ["FINISHED", "READY"]
    assert res["stopped"] == "STOPPED"
