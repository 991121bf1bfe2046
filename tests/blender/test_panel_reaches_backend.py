"""The panel's generate settings, sampler overrides and retexture settings reach the backend's request.

Real bpy with the installed extension and the real server running the fake generator
(tests/blender/fake_generator.py), which writes the pipeline request it was handed. The
other generate settings are covered the same way by test_variations.py.
"""

from __future__ import annotations

import json

import pytest

from backend import protocol
from tests.blender.addon_script import SETUP
from tests.blender.runner import run_bpy
from tests.fixtures import images
from tests.server.test_wire_fields import leaf_fields, lookup

pytestmark = pytest.mark.blender

STAGES = ("sparse_structure", "shape", "texture")
# stage -> (steps, guidance, rescale) set in the panel; none is the value an override starts from.
OVERRIDES = {"sparse_structure": (5, 3.5, 0.25), "shape": (6, 4.5, 0.35), "texture": (7, 5.5, 0.45)}
RETEXTURE = {"retexture_resolution": "512", "seed": 4321, "texture_size": "512"}
# panel setting -> (value set, the Generate field it is sent as)
GENERATE = {"pipeline_type": ("512", "pipeline_type"), "seed": (777, "seed"),
            "face_target": (12_345, "export.faces"), "texture_size": ("1024", "export.texture_size"),
            "unwrap": ("xatlas", "export.unwrap"), "remove_floaters": (True, "export.remove_floaters"),
            "remove_inner_shells": (True, "export.remove_inner_shells"),
            "fill_holes": (True, "export.fill_holes")}

SCRIPT = """
from pathlib import Path
use_image(ARGS["image"])
for name, value in ARGS["generate_settings"].items():
    setattr(settings, name, value)
for stage, (steps, guidance, rescale) in ARGS["overrides"].items():
    group = getattr(settings, stage)
    group.override = True
    group.steps, group.guidance, group.rescale = steps, guidance, rescale
out = {"generate": run_op(bpy.ops.trellis2.generate)}
bpy.ops.mesh.primitive_cube_add(size=2.0)
cube = bpy.context.active_object
cube.select_set(True)
for name, value in ARGS["retexture"].items():
    setattr(settings, name, value)
before = {p for p in Path(ARGS["jobs"]).iterdir()}
out["retexture"] = run_op(bpy.ops.trellis2.retexture)
out["received"] = {}
for folder in Path(ARGS["jobs"]).iterdir():
    if (folder / "received_request.json").is_file():
        kind = "generate" if folder in before else "retexture"
        out["received"][kind] = json.loads((folder / "received_request.json").read_text())
emit(out)
"""


def test_panel_generate_sampler_and_retexture_settings_reach_the_backend(tmp_path, bpy_python, extension_zip,
                                                                   fake_backend_python, model_dir):
    for stage, values in OVERRIDES.items():  # else an unchanged value could not show it arrived
        assert values != protocol.STAGE_SAMPLER_DEFAULTS[stage]
    assert int(RETEXTURE["retexture_resolution"]) != protocol.DEFAULT_RETEXTURE_RESOLUTION
    assert RETEXTURE["seed"] != protocol.DEFAULT_SEED
    assert int(RETEXTURE["texture_size"]) != protocol.DEFAULT_TEXTURE_SIZE
    args = {"zip": str(extension_zip), "python": str(fake_backend_python), "model": str(model_dir),
            "jobs": str(tmp_path / "jobs"), "image": str(images.rgba_transparent(tmp_path / "pot.png")),
            "overrides": OVERRIDES, "retexture": RETEXTURE,
            "generate_settings": {name: value for name, (value, _) in GENERATE.items()}}
    run = run_bpy(SETUP + SCRIPT, tmp_path, python=bpy_python, args=(json.dumps(args),), timeout=240)
    assert run.returncode == 0 and run.result is not None, run.describe()
    res = run.result
    assert (res["generate"], res["retexture"]) == (["FINISHED"], ["FINISHED"]), res
    generate, retexture = res["received"]["generate"], res["received"]["retexture"]
    for stage, (steps, guidance, rescale) in OVERRIDES.items():
        received = generate[stage]
        arrived = (received["steps"], received["guidance_strength"], received["guidance_rescale"])
        assert arrived == pytest.approx((steps, guidance, rescale)), stage
    sent = {path: lookup(generate, path) for _, path in GENERATE.values()}
    chosen = {path: int(value) if path == "export.texture_size" else value  # an enum's item is a string
              for value, path in GENERATE.values()}
    assert sent == chosen
    wire_defaults = leaf_fields(protocol.Generate)
    assert [path for path, value in chosen.items() if value == wire_defaults[path]] == []
    steps, guidance, rescale = OVERRIDES["texture"]
    assert (retexture["texture"]["steps"], retexture["texture"]["guidance_strength"],
            retexture["texture"]["guidance_rescale"]) == pytest.approx((steps, guidance, rescale))
    assert retexture["resolution"] == int(RETEXTURE["retexture_resolution"])
    assert retexture["seed"] == RETEXTURE["seed"]
    assert retexture["export"]["texture_size"] == int(RETEXTURE["texture_size"])
