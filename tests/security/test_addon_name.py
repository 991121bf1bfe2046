"""The add-on turns Blender names into safe output names before sending them to the backend."""

from __future__ import annotations

import pytest

from backend.pipeline.api import check_output_name

operators = pytest.importorskip("trellis2_blender.operators")  # needs the bpy module


@pytest.mark.parametrize("name", ["../../../X", "/etc/X", "..\\..\\X", "C:X", "..", ".", "", "a\x00b",
                                  "line\nbreak", "x" * 500, "Würfel" * 60])
def test_hostile_blender_names_become_one_safe_component(name: str) -> None:
    safe = operators.output_name(name)
    assert check_output_name(safe) == safe


def test_plain_blender_names_are_kept() -> None:
    for name in ("Cube", "Cube.001", "My chair", "Würfel_2"):
        assert operators.output_name(name) == name
    assert operators.output_name("..", "generated") == "generated"
    assert operators.output_name("../../../X") == ".._.._.._X"
