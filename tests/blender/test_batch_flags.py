"""The batch command takes ``python -m backend generate``'s flags, spelled the same, with the same
defaults (bpy-free: both parsers are built without Blender)."""

from __future__ import annotations

import argparse

from backend.pipeline import cli_generate
from trellis2_blender import batch

# Flags whose batch default defers to the add-on's preferences (same fallback as the CLI's).
FROM_PREFERENCES = {"--model", "--device"}
SHARED = ("--pipeline", "--seed", "--texture-size", "--faces", "--model", "--device", "--low-vram",
          "--offline", "--rembg", "--rembg-model", "--image-encoder", "--ss-decoder", "--commercial-safe",
          "--output")


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings}


def test_shared_flags_exist_in_both_with_the_same_defaults():
    generate = argparse.ArgumentParser()
    cli_generate.add_arguments(generate)
    gen, bat = _options(generate), _options(batch.build_parser())
    for flag in SHARED:
        assert flag in gen and flag in bat, flag
        if flag in FROM_PREFERENCES or flag in ("--pipeline", "--output"):
            continue
        # "" and None both mean "not given" (a folder flag without a value).
        assert (bat[flag].default or None) == (gen[flag].default or None), flag
    assert set(gen["--rembg"].choices) <= set(bat["--rembg"].choices)
    assert set(gen["--pipeline"].choices) == set(bat["--pipeline"].choices)


def test_earlier_spellings_still_work():
    args = batch.parse_args(["--input", "a.png", "--output", "out", "--pipeline-type", "512",
                             "--background-removal", "rmbg", "--rmbg-model", "/m", "--online"])
    assert (args.pipeline_type, args.rembg, args.rembg_model) == ("512", "rmbg", "/m")
    assert batch.REMBG_TO_PROTOCOL[args.rembg] == batch.REMBG_TO_PROTOCOL["birefnet"] == "rmbg"
