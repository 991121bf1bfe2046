"""Every front end offers what the job contract (``backend/protocol.py``) defines, with its defaults.

The panel and the preferences (read from the installed extension in Blender), the add-on's job
specs and backend settings, ``python -m backend generate/retexture`` and the batch command:
their choices, defaults and limits are compared with the contract's constants, so a value
restated anywhere and changed there alone fails here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from backend import protocol
from backend.pipeline import cli_generate, cli_retexture
from tests.blender.runner import run_bpy
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
    return out


settings = bpy.context.scene.trellis2
emit({"settings": {name: describe(settings, name) for name in (
          "pipeline_type", "seed", "num_samples", "face_target", "texture_size", "unwrap", "multiview_mode",
          "retexture_resolution")},
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
    removal = prefs["background_removal"]
    assert [item.lower() for item in removal["items"]] == list(protocol.BACKGROUND_REMOVAL_MODES)
    assert removal["default"].lower() == protocol.DEFAULT_BACKGROUND_REMOVAL
