"""A multi-view request on the wire and on the command line becomes a multi-view GenerateRequest."""

from __future__ import annotations

import argparse

import pytest

from backend import protocol
from backend.pipeline import cli_generate
from backend.server.jobs import InvalidRequest, to_generate
from tests.fixtures import images


def _views(tmp_path, count):
    return [str(images.rgba_transparent(tmp_path / f"view_{i}.png")) for i in range(count)]


def test_wire_multiview_reaches_the_request(tmp_path):
    line = protocol.encode(protocol.Generate(id="j", images=_views(tmp_path, 3),
                                             output_dir=str(tmp_path / "o"), num_samples=3,
                                             multiview="multidiffusion"))
    request = to_generate(protocol.decode_request(line))
    assert request.multiview == "multidiffusion" and len(request.images) == 3 and request.num_samples == 3


def test_wire_multiview_limits(tmp_path):
    too_many = protocol.Generate(id="j", images=_views(tmp_path, protocol.MAX_VIEWS + 1),
                                 output_dir=str(tmp_path / "o"), multiview="stochastic")
    with pytest.raises(InvalidRequest, match=f"at most {protocol.MAX_VIEWS} images"):
        to_generate(too_many)
    with pytest.raises(protocol.ProtocolError, match="multiview must be one of"):
        protocol.decode_request(protocol.encode(protocol.Generate(
            id="j", images=_views(tmp_path, 2), output_dir=str(tmp_path / "o"), multiview="vote")))
    assert not (tmp_path / "o").exists()  # a refused request creates no output folder


def test_cli_multiview_flag(tmp_path):
    parser = argparse.ArgumentParser()
    cli_generate.add_arguments(parser)
    views = _views(tmp_path, 3)
    args = parser.parse_args([*views, "-o", str(tmp_path / "o"), "--multiview", "stochastic",
                              "--samples", "2"])
    request = cli_generate.request_from_args(args)
    assert request.multiview == "stochastic" and [str(p) for p in request.images] == views
    assert request.num_samples == 2
    plain = cli_generate.request_from_args(parser.parse_args([*views, "-o", str(tmp_path / "o")]))
    assert plain.multiview is None  # without the flag, every image is its own object
