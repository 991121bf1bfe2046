"""New objects go beside what is in the scene (trellis2_blender.core.placement; no bpy)."""

from __future__ import annotations

from trellis2_blender.core.placement import GAP, row_locations

UNIT = ((-0.5, -0.5, -0.5), (0.5, 0.5, 0.5))
DEFAULT_CUBE = ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))


def test_empty_scene_puts_the_object_at_the_cursor():
    assert row_locations((1.0, 2.0, 3.0), [UNIT], []) == [(1.0, 2.0, 3.0)]


def test_object_moves_out_of_the_default_cube():
    (loc,) = row_locations((0.0, 0.0, 0.0), [UNIT], [DEFAULT_CUBE])
    assert loc[1:] == (0.0, 0.0)
    assert loc[0] - 0.5 >= 1.0  # its left side is right of the cube
    assert abs(loc[0] - (1.0 + GAP + 0.5)) < 1e-9


def test_variations_form_a_row_that_clears_every_box():
    boxes = [DEFAULT_CUBE, ((1.2, -0.2, -0.2), (2.0, 0.2, 0.2))]  # a second object right of the cube
    locs = row_locations((0.0, 0.0, 0.0), [UNIT, UNIT, UNIT], boxes)
    xs = [x for x, _, _ in locs]
    assert xs == sorted(xs) and all(b - a >= 1.0 + GAP - 1e-9 for a, b in zip(xs, xs[1:]))
    for x in xs:
        assert x - 0.5 >= 2.0 or x + 0.5 <= -1.0  # no overlap with either box


def test_boxes_elsewhere_do_not_move_the_row():
    far = ((10.0, 10.0, 10.0), (11.0, 11.0, 11.0))
    assert row_locations((0.0, 0.0, 0.0), [UNIT, UNIT], [far]) == [(0.0, 0.0, 0.0), (1.0 + GAP, 0.0, 0.0)]
