"""Buildings: houses with pitched or flat roofs, and towers."""

from __future__ import annotations

import math

import numpy as np

from .builder import ObjectBuilder
from .primitives import box, cylinder, extrude, frustum, lathe, rotation_x, rotation_z, sphere, transformed


def _windows(b: ObjectBuilder, length: float, face: float, axis: str, z_levels, count: int, size: float,
             glass: int, frame: int) -> None:
    """A row of framed windows on the wall at ``face`` (y for axis 'x', x for axis 'y')."""
    for z in z_levels:
        for k in range(count):
            along = (k + 0.5) / count * length - 0.5 * length
            if axis == "x":
                b.add(box(1.2 * size, 0.03, 1.2 * size), frame, at=(along, face, z))
                b.add(box(size, 0.05, size), glass, at=(along, face, z))
            else:
                b.add(box(0.03, 1.2 * size, 1.2 * size), frame, at=(face, along, z))
                b.add(box(0.05, size, size), glass, at=(face, along, z))


def house(b: ObjectBuilder) -> None:
    rng = b.rng
    walls = b.material(str(rng.choice(["brick", "stone", "painted", "wood"])))
    roof = b.material("roof")
    glass = b.material("glass" if rng.random() < 0.5 else "ceramic", hue=0.58)
    frame = b.material(str(rng.choice(["wood", "painted"])))
    w, d = rng.uniform(0.6, 1.0), rng.uniform(0.5, 0.8)
    floors = int(rng.integers(1, 3))
    floor_h = rng.uniform(0.3, 0.4)
    h = floors * floor_h
    b.add(box(w, d, h), walls, at=(0.0, 0.0, 0.5 * h))
    style = int(rng.integers(3))
    overhang = rng.uniform(0.02, 0.08)
    roof_h = rng.uniform(0.25, 0.5) * d
    if style == 0:  # gable: a triangular prism along x
        add_plate_yz(b, [[-0.5 * d - overhang, h], [0.5 * d + overhang, h], [0.0, h + roof_h]],
                     w + 2 * overhang, roof)
    elif style == 1:  # hip: a four-sided pyramid (a 4-segment cone turned to the axes)
        r = math.sqrt(0.5) * (max(w, d) + 2 * overhang)
        stretch = np.diag([w / max(w, d), d / max(w, d), 1.0])
        b.add(frustum(r, 0.0, roof_h, 4), roof, stretch @ rotation_z(0.25 * math.pi), (0.0, 0.0, h))
    else:  # flat roof with a parapet
        b.add(box(w + 0.04, d + 0.04, 0.06), roof, at=(0.0, 0.0, h + 0.03))
    door_w, door_h = rng.uniform(0.1, 0.16), min(rng.uniform(0.18, 0.26), 0.8 * floor_h)
    door_x = rng.uniform(-0.25, 0.25) * w
    b.add(box(door_w, 0.04, door_h), frame, at=(door_x, 0.5 * d, 0.5 * door_h))
    win = rng.uniform(0.06, 0.1)
    per_row = int(rng.integers(2, 4))
    levels = [(k + 0.55) * floor_h for k in range(floors)]
    _windows(b, w, -0.5 * d, "x", levels, per_row, win, glass, frame)
    if floors > 1:
        _windows(b, w, 0.5 * d, "x", levels[1:], per_row, win, glass, frame)
    _windows(b, d, 0.5 * w, "y", levels, int(rng.integers(1, 3)), win, glass, frame)
    _windows(b, d, -0.5 * w, "y", levels, int(rng.integers(1, 3)), win, glass, frame)
    if rng.random() < 0.6:  # chimney
        cw = rng.uniform(0.06, 0.1)
        ch = roof_h + rng.uniform(0.05, 0.15)
        b.add(box(cw, cw, ch), walls, at=(rng.uniform(-0.3, 0.3) * w, 0.2 * d, h + 0.5 * ch))
    if rng.random() < 0.3:  # porch roof over the door on two posts
        b.add(box(2 * door_w, 0.15, 0.02), roof, at=(door_x, 0.5 * d + 0.075, door_h + 0.04))
        for sx in (-1, 1):
            b.add(box(0.02, 0.02, door_h + 0.03), frame, at=(door_x + sx * door_w, 0.5 * d + 0.14,
                                                             0.5 * (door_h + 0.03)))


def add_plate_yz(b: ObjectBuilder, outline_yz, thickness: float, material: int) -> None:
    """A flat part drawn in the yz plane, ``thickness`` deep along x and centred on x = 0."""
    # Turning an xz plate by 90 degrees about z puts its outline's x on y and its depth on x.
    part = transformed(extrude(outline_yz, thickness), rotation_x(0.5 * math.pi), (0.0, 0.5 * thickness, 0.0))
    b.add(part, material, rotation_z(0.5 * math.pi))


def tower(b: ObjectBuilder) -> None:
    rng = b.rng
    stone = b.material(str(rng.choice(["stone", "brick", "painted", "ceramic"])))
    roof = b.material(str(rng.choice(["roof", "metal", "painted"])))
    sides = int(rng.choice([4, 6, 8, 32, 32]))
    levels = int(rng.integers(1, 4))
    r = base_r = rng.uniform(0.12, 0.22)
    z = 0.0
    turn = math.pi / sides
    for _ in range(levels):
        lh = rng.uniform(0.3, 0.6)
        taper = rng.uniform(0.85, 1.0)
        b.add(lathe([0.0, r, r * taper, 0.0], [0.0, 0.0, lh, lh], sides), stone, rotation_z(turn),
              (0.0, 0.0, z))
        z += lh
        r *= taper
        b.add(lathe([0.0, 1.12 * r, 1.12 * r, 0.0], [0.0, 0.0, 0.04, 0.04], sides), stone, rotation_z(turn),
              (0.0, 0.0, z))
        z += 0.04
    lighthouse = bool(rng.random() < 0.3)
    if lighthouse:  # glass lantern room and a dome
        glass = b.material("glass", hue=float(rng.uniform(0.1, 0.6)))
        lr = 0.7 * r
        b.add(cylinder(lr, 0.18, 24), glass, at=(0.0, 0.0, z))
        b.add(sphere(0.06, 16, 10), b.material("ceramic", hue=0.14), at=(0.0, 0.0, z + 0.09))
        phi = np.linspace(0.0, 0.5 * math.pi, 8)
        dome_r = np.concatenate([[0.0], 1.05 * lr * np.cos(phi)])
        dome_z = np.concatenate([[0.0], lr * np.sin(phi)])
        b.add(lathe(dome_r, dome_z, 24), roof, at=(0.0, 0.0, z + 0.18))
    elif rng.random() < 0.5:  # battlements around the top
        merlons = max(6, 2 * sides if sides < 32 else 12)
        for k in range(merlons):
            a = 2.0 * math.pi * (k + 0.5) / merlons
            size = 2.0 * math.pi * r / merlons * 0.55
            at = (0.95 * r * math.cos(a), 0.95 * r * math.sin(a), z + 0.04)
            b.add(box(size, size, 0.08), stone, rotation_z(a), at)
    else:  # pointed roof
        b.add(frustum(1.15 * r, 0.0, rng.uniform(1.0, 2.5) * r, sides), roof, rotation_z(turn), (0.0, 0.0, z))
    door = b.material("wood")
    door_w = min(0.1, 0.8 * base_r)
    # The turned lathe has a face centre on +x, so the door sits flat there.
    b.add(box(0.05, door_w, 0.18), door, at=(base_r * math.cos(math.pi / sides), 0.0, 0.09))
