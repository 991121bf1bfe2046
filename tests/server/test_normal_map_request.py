"""The normal-map export option on the wire and on the command line reaches the export options."""

from __future__ import annotations

import argparse

import pytest

from backend import protocol
from backend.pipeline import cli_generate
from backend.server.jobs import to_generate
from tests.fixtures import images


@pytest.mark.parametrize("bake", [True, False])
def test_wire_bake_normal_map_reaches_the_export_options(tmp_path, bake):
    image = str(images.rgba_transparent(tmp_path / "a.png"))
    line = protocol.encode(protocol.Generate(id="j", images=[image], output_dir=str(tmp_path / "o"),
                                             export=protocol.Export(bake_normal_map=bake)))
    assert to_generate(protocol.decode_request(line)).export.bake_normal_map is bake


def test_wire_default_bakes_the_normal_map(tmp_path):
    image = str(images.rgba_transparent(tmp_path / "a.png"))
    line = protocol.encode(protocol.Generate(id="j", images=[image], output_dir=str(tmp_path / "o")))
    assert to_generate(protocol.decode_request(line)).export.bake_normal_map is True


def test_cli_no_normal_map_flag(tmp_path):
    parser = argparse.ArgumentParser()
    cli_generate.add_arguments(parser)
    image = str(images.rgba_transparent(tmp_path / "a.png"))
    base = [image, "-o", str(tmp_path / "o")]
    assert cli_generate.request_from_args(parser.parse_args(base)).export.bake_normal_map is True
    off = cli_generate.request_from_args(parser.parse_args([*base, "--no-normal-map"]))
    assert off.export.bake_normal_map is False
