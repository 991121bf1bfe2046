"""Hand tools standing on end: hammers, wrenches and screwdrivers."""

from __future__ import annotations

import math

import numpy as np

from .builder import ObjectBuilder
from .primitives import box, cylinder, extrude, frustum, lathe, rotation_x, rotation_y, smooth_profile, torus


def add_plate(b: ObjectBuilder, outline_xz, thickness: float, material: int, at=(0.0, 0.0, 0.0)) -> None:
    """A flat part: a polygon drawn in the xz plane, ``thickness`` deep along y and centred on y = 0."""
    # rotation_x(+90 deg) maps the outline's y onto +z and the extrusion's +z onto -y.
    at = np.asarray(at, dtype=np.float64) + [0.0, 0.5 * thickness, 0.0]
    b.add(extrude(outline_xz, thickness), material, rotation_x(0.5 * math.pi), at)


def _arc(cx: float, cz: float, radius: float, start: float, stop: float, count: int) -> np.ndarray:
    a = np.linspace(start, stop, count)
    return np.stack([cx + radius * np.cos(a), cz + radius * np.sin(a)], axis=1)


def hammer(b: ObjectBuilder) -> None:
    rng = b.rng
    handle = b.material(str(rng.choice(["wood", "wood", "plastic", "rubber"])))
    head = b.material(str(rng.choice(["metal", "metal", "painted", "rubber", "wood"])))
    length = rng.uniform(0.28, 0.4)
    hr = rng.uniform(0.012, 0.018)
    r, z = smooth_profile([hr * 1.3, hr * rng.uniform(1.0, 1.3), hr, hr * 0.9], length, 12)
    b.add(lathe(np.concatenate([[0.0], r, [0.0]]), np.concatenate([[0.0], z, [length]]), 24), handle)
    head_len = rng.uniform(0.09, 0.15)
    head_h = rng.uniform(0.025, 0.04)
    if rng.random() < 0.3:  # mallet: a drum across the top of the handle
        radius = rng.uniform(0.025, 0.045)
        b.add(cylinder(radius, head_len, 32, bevel=0.004), head, rotation_y(0.5 * math.pi),
              (-0.5 * head_len, 0.0, length))
        return
    b.add(box(0.6 * head_len, head_h, head_h), head, at=(0.15 * head_len, 0.0, length))
    b.add(cylinder(0.55 * head_h, 0.35 * head_len, 24, bevel=0.003), head, rotation_y(0.5 * math.pi),
          (0.45 * head_len, 0.0, length))
    if rng.random() < 0.7:  # a curved claw on the other side, bending down
        reach = rng.uniform(0.5, 0.7) * head_len
        outer = _arc(-0.15 * head_len, length - reach, reach, 0.5 * math.pi, 0.95 * math.pi, 10)
        inner = _arc(-0.15 * head_len, length - reach, reach - 0.8 * head_h, 0.95 * math.pi, 0.5 * math.pi,
                     10)
        outer[0, 1] += 0.5 * head_h
        add_plate(b, np.concatenate([outer, inner]), 0.8 * head_h, head)
    else:  # a second, smaller striking face
        b.add(cylinder(0.45 * head_h, 0.3 * head_len, 24, bevel=0.003), head, rotation_y(-0.5 * math.pi),
              (-0.15 * head_len, 0.0, length))


def _open_jaw(radius: float, opening: float, depth: float) -> np.ndarray:
    """Outline of an open-end wrench head (centre at the origin), the slot facing +z."""
    half = 0.5 * opening
    phi = math.acos(half / radius)
    arc = _arc(0.0, 0.0, radius, math.pi - phi, phi + 2.0 * math.pi, 28)
    slot_bottom = radius * math.sin(phi) - depth
    return np.concatenate([arc, [[half, slot_bottom], [-half, slot_bottom]]])


def wrench(b: ObjectBuilder) -> None:
    rng = b.rng
    steel = b.material(str(rng.choice(["metal", "metal", "painted", "brass"])))
    length = rng.uniform(0.15, 0.3)
    thick = rng.uniform(0.006, 0.012)
    shaft_w = rng.uniform(0.012, 0.022)
    head_r = shaft_w * rng.uniform(1.3, 1.8)
    add_plate(b, [[-0.5 * shaft_w, 0.0], [0.5 * shaft_w, 0.0], [0.5 * shaft_w, length],
                  [-0.5 * shaft_w, length]], thick, steel)
    add_plate(b, _open_jaw(head_r, head_r * rng.uniform(0.8, 1.2), head_r * rng.uniform(0.9, 1.3)),
              1.1 * thick, steel, at=(0.0, 0.0, length))
    if rng.random() < 0.6:  # ring end
        ring_r = head_r * rng.uniform(0.7, 1.0)
        b.add(torus(ring_r, 0.35 * ring_r, 36, 12), steel, rotation_x(0.5 * math.pi),
              (0.0, 0.0, -0.2 * ring_r))
    else:  # a second, smaller open end pointing down
        small = 0.8 * head_r
        jaw = _open_jaw(small, small * rng.uniform(0.8, 1.2), small)
        add_plate(b, jaw * [1.0, -1.0], 1.1 * thick, steel)
    if rng.random() < 0.5:  # rubber grip sleeve on the shaft
        grip = b.material("rubber")
        b.add(box(1.2 * shaft_w, 1.6 * thick, 0.4 * length), grip, at=(0.0, 0.0, 0.5 * length))


def screwdriver(b: ObjectBuilder) -> None:
    rng = b.rng
    handle = b.material(str(rng.choice(["plastic", "plastic", "wood", "rubber"])))
    steel = b.material("metal")
    hl = rng.uniform(0.09, 0.14)
    hr = rng.uniform(0.012, 0.02)
    r, z = smooth_profile([hr * 0.8, hr * rng.uniform(1.0, 1.25), hr, hr * rng.uniform(0.7, 0.9)], hl, 16)
    b.add(lathe(np.concatenate([[0.0], r, [0.0]]), np.concatenate([[0.0], z, [hl]]),
                int(rng.choice([6, 8, 24, 32]))), handle)
    if rng.random() < 0.5:  # a grip band of a second material
        band = b.material(str(rng.choice(["rubber", "plastic"])))
        b.add(cylinder(hr * 1.02, 0.3 * hl, 32), band, at=(0.0, 0.0, 0.3 * hl))
    shaft_len = rng.uniform(0.06, 0.16)
    sr = rng.uniform(0.0025, 0.004)
    b.add(cylinder(sr, shaft_len, 16), steel, at=(0.0, 0.0, hl))
    tip = rng.uniform(0.008, 0.015)
    if rng.random() < 0.5:  # flat blade
        add_plate(b, [[-sr, 0.0], [sr, 0.0], [sr * 1.3, tip], [-sr * 1.3, tip]], 0.6 * sr, steel,
                  at=(0.0, 0.0, hl + shaft_len))
    else:  # cross tip
        b.add(frustum(sr, 0.2 * sr, tip, 4), steel, at=(0.0, 0.0, hl + shaft_len))
