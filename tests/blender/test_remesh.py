"""Remesh and Re-bake in real bpy: a generated-looking sphere becomes a voxel-remeshed / QuadriFlow copy
with baked textures that carry the source's checker pattern and metal."""

from __future__ import annotations

import json

import pytest

from tests.blender.addon_script import SETUP
from tests.blender.fake_results import write_result
from tests.blender.runner import PYTHON, run_bpy

pytestmark = [pytest.mark.blender, pytest.mark.slow]

REMESH = """
import numpy as np
bpy.context.scene.cursor.location = (0, 0, 0)
src = scene_io.import_result(bpy.context, ARGS["result"], name="ball")
src_faces = len(src.data.polygons)
settings.remesh_mode = ARGS["mode"]
settings.remesh_voxel_size = 0.05
settings.remesh_faces = 300
settings.bake_size = "512"
ret = run_op(bpy.ops.trellis2.remesh)
new = bpy.context.active_object
nodes = new.active_material.node_tree.nodes

def stats(name):
    img = nodes[name].image
    px = np.empty(len(img.pixels), dtype=np.float32)
    img.pixels.foreach_get(px)
    px = px.reshape(-1, 4)[:, :3]
    baked = px[px.max(1) > 0.01]  # texels inside the UV islands (the rest stays black)
    return {"std": float(baked.std()), "mean": baked.mean(0).tolist(), "packed": img.packed_file is not None,
            "baked_share": len(baked) / len(px)}

emit({"ret": ret, "new": new.name, "src_hidden": src.hide_get(), "faces": len(new.data.polygons),
      "src_faces": src_faces, "quads": sum(1 for p in new.data.polygons if len(p.vertices) == 4),
      "uv": [l.name for l in new.data.uv_layers], "images": {k: stats(k) for k in
      ("Base Color", "Metallic", "Roughness", "Normal")},
      "links": sorted(scene_io.material_links(new.active_material)),
      "engine": bpy.context.scene.render.engine})
"""


@pytest.mark.parametrize("mode", ["VOXEL", "QUADRIFLOW"])
def test_remesh_and_rebake(tmp_path, bpy_python, extension_zip, model_dir, mode):
    result = write_result(tmp_path / "res" / "ball", "ball")
    args = {"zip": str(extension_zip), "python": str(PYTHON), "model": str(model_dir),
            "jobs": str(tmp_path / "jobs"), "result": str(result), "mode": mode}
    run = run_bpy(SETUP + REMESH, tmp_path, python=bpy_python, args=(json.dumps(args),), timeout=400)
    assert run.returncode == 0, run.describe()
    res = run.result
    assert res["ret"] == ["FINISHED"], res
    assert res["new"] == "ball_remeshed" and res["src_hidden"]
    assert res["faces"] > 50 and res["faces"] != res["src_faces"]
    assert res["quads"] > 0.9 * res["faces"]  # both remeshers make quads
    assert res["uv"] == ["UVMap"]
    images = res["images"]
    assert all(i["packed"] for i in images.values())
    assert images["Normal"]["baked_share"] > 0.3  # the islands cover a fair part of the texture
    # The checker (red / blue) comes across: varied, and both colours present on average.
    assert images["Base Color"]["std"] > 0.05
    red, _, blue = images["Base Color"]["mean"]
    assert red > 0.05 and blue > 0.05
    # Metallic is 1 on one half of the source's texture, 0 on the other: about half the baked texels are
    # metal (the black ones are not counted as baked), and those are fully metal.
    metal_share = images["Metallic"]["baked_share"] / images["Normal"]["baked_share"]
    assert 0.1 < metal_share < 0.9 and images["Metallic"]["mean"][0] > 0.9
    # Roughness 140/255 everywhere on the source.
    assert abs(images["Roughness"]["mean"][0] - 140 / 255) < 0.08
    # A tangent-space normal map of a smooth sphere: mostly (0.5, 0.5, 1).
    assert images["Normal"]["mean"][2] > 0.8
    assert ["Normal Map", "Normal", "Principled BSDF", "Normal"] in res["links"]
    assert res["engine"] != "CYCLES"  # the scene's own render engine is back
