"""Every front end offers what the job contract (``backend/protocol.py``) defines, with its defaults.

The panel and the preferences (read from the installed extension in Blender), the add-on's job
specs and backend settings, ``python -m backend generate/retexture`` and the batch command:
their choices, defaults and limits are compared with the contract's constants, so a value
restated anywhere and changed there alone fails here. The job specs, the command line and the
batch are also checked field by field against the messages' enumerated fields: each field is
set (and arrives) or is named as not offered, and what is left unset is the contract's default.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from backend import protocol
from backend.pipeline import cli_generate, cli_retexture
from tests.blender.runner import run_bpy
from tests.server.test_wire_fields import leaf_fields, lookup, plain
from trellis2_blender import batch
from trellis2_blender.core import jobs
from trellis2_blender.core.session import BackendSettings


def _options(add_arguments) -> dict[str, argparse.Action]:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return {flag: action for action in parser._actions for flag in action.option_strings}


def _defaults(cls: type) -> dict[str, object]:
    return {f.name: f.default for f in dataclasses.fields(cls)}


def test_backend_command_lines_take_their_choices_and_defaults_from_the_contract():
    generate, retexture = _options(cli_generate.add_arguments), _options(cli_retexture.add_arguments)
    assert tuple(generate["--pipeline"].choices) == protocol.PIPELINE_TYPES
    assert tuple(generate["--multiview"].choices) == protocol.MULTIVIEW_MODES
    assert tuple(generate["--unwrap"].choices) == protocol.UNWRAP_METHODS
    assert tuple(generate["--texture-format"].choices) == protocol.TEXTURE_FORMATS
    assert tuple(generate["--rembg"].choices) == tuple(protocol.BACKGROUND_REMOVAL_FLAGS)
    assert {flag: generate[flag].default for flag in ("--seed", "--faces", "--texture-size", "--max-tokens",
                                                       "--rembg", "--unwrap", "--texture-format")} == {
        "--seed": protocol.DEFAULT_SEED, "--faces": protocol.DEFAULT_FACES,
        "--texture-size": protocol.DEFAULT_TEXTURE_SIZE, "--max-tokens": protocol.DEFAULT_MAX_NUM_TOKENS,
        "--rembg": protocol.DEFAULT_BACKGROUND_REMOVAL, "--unwrap": protocol.Export.unwrap,
        "--texture-format": protocol.Export.texture_format}
    assert (retexture["--resolution"].default, retexture["--seed"].default) == (
        protocol.DEFAULT_RETEXTURE_RESOLUTION, protocol.DEFAULT_SEED)


def test_the_batch_command_takes_its_choices_and_defaults_from_the_contract():
    options = {flag: action for action in batch.build_parser()._actions for flag in action.option_strings}
    assert tuple(options["--pipeline"].choices) == protocol.PIPELINE_TYPES
    assert options["--pipeline"].default == protocol.DEFAULT_PIPELINE_TYPE
    assert (options["--seed"].default, options["--faces"].default, options["--texture-size"].default) == (
        protocol.DEFAULT_SEED, protocol.DEFAULT_FACES, protocol.DEFAULT_TEXTURE_SIZE)
    assert options["--rembg"].default == protocol.DEFAULT_BACKGROUND_REMOVAL
    assert {batch.REMBG_TO_PROTOCOL[flag] for flag in options["--rembg"].choices} == set(
        protocol.BACKGROUND_REMOVAL_MODES)
    args = batch.parse_args(["--input", "a.png", "--output", "out"])
    (item,) = batch.collect_items([args.input[0]], args)
    assert item["resolution"] == protocol.DEFAULT_RETEXTURE_RESOLUTION


def test_the_addons_job_specs_and_settings_default_to_the_contract():
    generate, retexture = _defaults(jobs.GenerateSpec), _defaults(jobs.RetextureSpec)
    assert {k: generate[k] for k in ("pipeline_type", "seed", "face_target", "texture_size", "multiview",
                                     "unwrap")} == {
        "pipeline_type": protocol.DEFAULT_PIPELINE_TYPE, "seed": protocol.DEFAULT_SEED,
        "face_target": protocol.DEFAULT_FACES, "texture_size": protocol.DEFAULT_TEXTURE_SIZE,
        "multiview": protocol.DEFAULT_MULTIVIEW_MODE, "unwrap": protocol.Export.unwrap}
    assert {k: retexture[k] for k in ("seed", "resolution", "texture_size")} == {
        "seed": protocol.DEFAULT_SEED, "resolution": protocol.DEFAULT_RETEXTURE_RESOLUTION,
        "texture_size": protocol.DEFAULT_TEXTURE_SIZE}
    assert _defaults(BackendSettings)["background_removal"] == protocol.DEFAULT_BACKGROUND_REMOVAL


READ_PANEL = """
import json
import sys

import bpy

ARGS = json.loads(sys.argv[-1])
assert bpy.ops.extensions.package_install_files(filepath=ARGS["zip"], repo="user_default",
                                                enable_on_install=True) == {"FINISHED"}
PKG = "bl_ext.user_default.trellis2_blender"
prefs = bpy.context.preferences.addons[PKG].preferences


def describe(owner, name):
    prop = owner.bl_rna.properties[name]
    out = {"type": prop.type}
    if prop.type == "ENUM":
        out["items"] = [item.identifier for item in prop.enum_items]
        out["default"] = prop.default
    elif prop.type in ("INT", "FLOAT"):
        out.update(default=prop.default, min=prop.hard_min, max=prop.hard_max)
    elif prop.type == "BOOLEAN":
        out["default"] = prop.default
    return out


settings = bpy.context.scene.trellis2
emit({"settings": {name: describe(settings, name) for name in (
          "pipeline_type", "seed", "num_samples", "face_target", "texture_size", "unwrap", "multiview_mode",
          "retexture_resolution", "remove_floaters", "remove_inner_shells", "fill_holes")},
      "preferences": {"background_removal": describe(prefs, "background_removal")}})
"""


@pytest.mark.blender
def test_the_panel_and_the_preferences_offer_the_contract(tmp_path, bpy_python, extension_zip):
    run = run_bpy(READ_PANEL, tmp_path, python=bpy_python, args=(json.dumps({"zip": str(extension_zip)}),))
    assert run.returncode == 0 and run.result is not None, run.describe()
    panel, prefs = run.result["settings"], run.result["preferences"]
    assert panel["pipeline_type"]["items"] == list(protocol.PIPELINE_TYPES)
    assert panel["pipeline_type"]["default"] == protocol.DEFAULT_PIPELINE_TYPE
    assert panel["seed"]["default"] == protocol.DEFAULT_SEED
    assert panel["face_target"]["default"] == protocol.DEFAULT_FACES
    assert panel["texture_size"]["items"] == [str(s) for s in protocol.TEXTURE_SIZE_CHOICES]
    assert panel["texture_size"]["default"] == str(protocol.DEFAULT_TEXTURE_SIZE)
    assert panel["unwrap"]["items"] == list(protocol.UNWRAP_METHODS)
    assert panel["unwrap"]["default"] == protocol.Export.unwrap
    assert panel["multiview_mode"]["items"] == list(protocol.MULTIVIEW_MODES)
    assert panel["multiview_mode"]["default"] == protocol.DEFAULT_MULTIVIEW_MODE
    assert panel["retexture_resolution"]["items"] == [str(r) for r in protocol.RETEXTURE_RESOLUTIONS]
    assert panel["retexture_resolution"]["default"] == str(protocol.DEFAULT_RETEXTURE_RESOLUTION)
    assert 1 <= panel["num_samples"]["max"] <= protocol.MAX_SAMPLES
    generate = leaf_fields(protocol.Generate)
    assert panel["num_samples"]["default"] == generate["num_samples"]
    assert panel["face_target"]["min"] >= protocol.MIN_FACES
    for cleanup in ("remove_floaters", "remove_inner_shells", "fill_holes"):
        assert panel[cleanup]["default"] == generate[f"export.{cleanup}"], cleanup
    removal = prefs["background_removal"]
    assert [item.lower() for item in removal["items"]] == list(protocol.BACKGROUND_REMOVAL_MODES)
    assert removal["default"].lower() == protocol.DEFAULT_BACKGROUND_REMOVAL


# --- every field of the contract, front end by front end -------------------------------------

def _wire(message: type[protocol.Message], fields: dict) -> dict[str, object]:
    """Dotted path -> value of each leaf of ``message`` built from ``fields``, as the server reads it."""
    built = protocol.check_request(message(id="job", **fields))
    return {path: plain(lookup(built, path)) for path in leaf_fields(message) if path != "id"}


def _wire_defaults(message: type[protocol.Message]) -> dict[str, object]:
    return {path: plain(value) for path, value in leaf_fields(message).items() if path != "id"}


# Fields a job spec fills from its own required values (files and folders), or sets on purpose.
SPEC_OWN = {"images", "mesh", "image", "output_dir", "name", "export.write_glb"}


@pytest.mark.parametrize("spec, message", [
    (jobs.GenerateSpec(image="/a.png", name="a", output_dir="/out"), protocol.Generate),
    (jobs.RetextureSpec(mesh="/m.ply", image="/a.png", name="a", output_dir="/out"), protocol.Retexture),
])
def test_a_job_spec_left_at_its_defaults_sends_the_contracts_defaults(spec, message):
    """Every field of the message, enumerated: what the add-on (and the batch, which leaves the settings
    it has no flag for at the spec's defaults) sends when nothing was chosen is the wire's default."""
    generate = message is protocol.Generate
    files = {"images": spec.images} if generate else {"mesh": spec.mesh, "image": spec.image}
    sent = _wire(message, {**files, "output_dir": spec.output_dir, **spec.request_fields()})
    defaults = _wire_defaults(message)
    assert {p: sent[p] for p in defaults if p not in SPEC_OWN} == {
        p: v for p, v in defaults.items() if p not in SPEC_OWN}


# Generate's fields -> the ``python -m backend generate`` arguments that set them to a non-default value.
# Fields the command line does not offer are listed in NOT_ON_THE_COMMAND_LINE, with the reason.
CLI_GENERATE = {
    "images": (["front.png", "side.png"], ["front.png", "side.png"]),
    "output_dir": (["-o", "out"], "out"),
    "pipeline_type": (["--pipeline", "1536_cascade"], "1536_cascade"),
    "seed": (["--seed", "7"], 7), "num_samples": (["--samples", "3"], 3),
    "max_num_tokens": (["--max-tokens", "30000"], 30_000), "name": (["--name", "wired"], "wired"),
    "multiview": (["--multiview", "multidiffusion"], "multidiffusion"),
    **{f"{stage}.{key}": ([f"--{flag}-{arg}", str(value)], value)
       for stage, flag, base in (("sparse_structure", "ss", 0), ("shape", "shape", 1), ("texture", "tex", 2))
       for key, arg, value in (("steps", "steps", 5 + base), ("guidance_strength", "guidance", 3.5 + base),
                               ("guidance_rescale", "rescale", 0.25 + base / 10),
                               ("rescale_t", "rescale-t", 2.0 + base))},
    "export.texture_size": (["--texture-size", "1024"], 1024), "export.faces": (["--faces", "12345"], 12_345),
    "export.texture_format": (["--texture-format", "webp"], "webp"),
    "export.write_glb": (["--no-glb"], False),
    "export.write_direct": (["--no-direct"], False), "export.unwrap": (["--unwrap", "xatlas"], "xatlas"),
    "export.remove_floaters": (["--remove-floaters"], True),
    "export.remove_inner_shells": (["--remove-inner-shells"], True),
    "export.fill_holes": (["--fill-holes"], True), "export.bake_normal_map": (["--no-normal-map"], False),
}
NOT_ON_THE_COMMAND_LINE = {  # the reference's default interval is kept; the add-on does not offer it either
    "sparse_structure.guidance_interval", "shape.guidance_interval", "texture.guidance_interval"}


def _generate_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli_generate.add_arguments(parser)
    return parser.parse_args(argv)


def test_the_command_line_sets_every_field_of_generate():
    assert set(CLI_GENERATE) | NOT_ON_THE_COMMAND_LINE == set(leaf_fields(protocol.Generate)) - {"id"}
    argv = [arg for args, _ in CLI_GENERATE.values() for arg in args]
    request = cli_generate.request_from_args(_generate_args(argv))
    assert {path: plain(lookup(request, path)) for path in CLI_GENERATE} == {
        path: plain(value) for path, (_, value) in CLI_GENERATE.items()}
    assert [p for p, (_, v) in CLI_GENERATE.items() if plain(v) == _wire_defaults(protocol.Generate)[p]] == []


def test_the_command_lines_defaults_are_the_contracts():
    request = cli_generate.request_from_args(_generate_args(["a.png", "-o", "out"]))
    defaults = _wire_defaults(protocol.Generate)
    # --pipeline's default is the release's own (1024_cascade for TRELLIS.2-4B, 512 for the mini model).
    compared = set(defaults) - {"images", "output_dir", "pipeline_type"}
    assert {p: plain(lookup(request, p)) for p in compared} == {p: defaults[p] for p in compared}
    assert request.pipeline_type is None


# The batch's manifest keys and flags -> the Generate fields they set; the others stay at the job
# spec's defaults, which the test above ties to the contract.
BATCH_ITEM = {"pipeline_type": "512", "seed": 9, "texture_size": 512, "faces": 4321, "name": "chair",
              "steps": {"shape": 20}, "guidance": {"texture": 2.0}, "views": ["side.png"],
              "multiview": "multidiffusion"}
BATCH_EXPECTED = {"pipeline_type": "512", "seed": 9, "export.texture_size": 512, "export.faces": 4321,
                  "name": "chair", "shape.steps": 20, "texture.guidance_strength": 2.0,
                  "multiview": "multidiffusion", "export.write_glb": False}


def test_every_batch_setting_reaches_the_request(tmp_path):
    assert set(BATCH_ITEM) == batch.ITEM_KEYS - {"image", "mesh", "resolution"}  # resolution: retexture's
    manifest = tmp_path / "jobs.json"
    items = [{"image": "chair.png", **BATCH_ITEM},
             {"image": "wood.png", "mesh": "chair.glb", "resolution": 512}]
    manifest.write_text(json.dumps({"items": items}))
    args = batch.parse_args(["--input", str(manifest), "--output", str(tmp_path / "out"),
                             "--format", "blend"])
    generate, retexture = (batch._spec(item, args.output, args.formats)
                           for item in batch.collect_items(args.input, args))
    sent = _wire(protocol.Generate, {"images": generate.images, "output_dir": generate.output_dir,
                                     **generate.request_fields()})
    assert {path: sent[path] for path in BATCH_EXPECTED} == BATCH_EXPECTED
    assert sent["images"] == [str(tmp_path / "chair.png"), str(tmp_path / "side.png")]
    assert (retexture.resolution, retexture.mesh) == (512, str(tmp_path / "chair.glb"))
