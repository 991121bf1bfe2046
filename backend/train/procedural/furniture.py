"""Furniture: tables, chairs, stools, shelves and lamps (sizes in metres before normalisation)."""

from __future__ import annotations

import math

import numpy as np

from .builder import ObjectBuilder
from .primitives import align_z_to, box, cylinder, frustum, lathe, shell_ring, sphere, torus


def rod_between(b: ObjectBuilder, start, end, radius: float, material: int, segments: int = 16) -> None:
    """A closed cylinder from point ``start`` to point ``end``."""
    start, end = np.asarray(start, dtype=np.float64), np.asarray(end, dtype=np.float64)
    axis = end - start
    b.add(cylinder(radius, float(np.linalg.norm(axis)), segments), material, align_z_to(axis), start)


def _leg(b: ObjectBuilder, x: float, y: float, height: float, thickness: float, round_leg: bool,
         material: int) -> None:
    if round_leg:
        b.add(cylinder(0.5 * thickness, height, 16), material, at=(x, y, 0.0))
    else:
        b.add(box(thickness, thickness, height), material, at=(x, y, 0.5 * height))


def table(b: ObjectBuilder) -> None:
    rng = b.rng
    top = b.material(str(rng.choice(["wood", "wood", "stone", "painted", "glass"])))
    legs = b.material(str(rng.choice(["wood", "metal", "painted"])))
    height = rng.uniform(0.55, 0.95)
    thick = rng.uniform(0.03, 0.07)
    round_leg = bool(rng.random() < 0.5)
    leg_t = rng.uniform(0.04, 0.09)
    if rng.random() < 0.4:
        radius = rng.uniform(0.35, 0.7)
        b.add(cylinder(radius, thick, 48, bevel=0.3 * thick), top, at=(0.0, 0.0, height - thick))
        if rng.random() < 0.5:  # pedestal: column and a round foot
            foot = rng.uniform(0.4, 0.7) * radius
            r = [0.0, foot, foot * 0.8, leg_t, leg_t, 1.6 * leg_t, 0.0]
            z = [0.0, 0.0, 0.04, 0.12, height - thick - 0.06, height - thick, height - thick]
            b.add(lathe(r, z, 32), legs)
        else:
            count = int(rng.integers(3, 5))
            for k in range(count):
                a = 2.0 * math.pi * k / count
                _leg(b, 0.7 * radius * math.cos(a), 0.7 * radius * math.sin(a), height - thick, leg_t,
                     round_leg, legs)
    else:
        w, d = rng.uniform(0.8, 1.6), rng.uniform(0.5, 0.95)
        b.add(box(w, d, thick), top, at=(0.0, 0.0, height - 0.5 * thick))
        inset = rng.uniform(0.04, 0.12)
        for sx in (-1, 1):
            for sy in (-1, 1):
                x, y = sx * (0.5 * w - inset), sy * (0.5 * d - inset)
                _leg(b, x, y, height - thick, leg_t, round_leg, legs)
        if rng.random() < 0.5:  # a lower shelf between the legs
            b.add(box(w - 2 * inset, d - 2 * inset, 0.7 * thick), top, at=(0.0, 0.0, rng.uniform(0.12, 0.3)))
        if rng.random() < 0.5:  # aprons under the top
            apron = rng.uniform(0.06, 0.12)
            for sy in (-1, 1):
                b.add(box(w - 2 * inset, 0.02, apron), legs,
                      at=(0.0, sy * (0.5 * d - inset), height - thick - 0.5 * apron))


def chair(b: ObjectBuilder) -> None:
    rng = b.rng
    frame = b.material(str(rng.choice(["wood", "wood", "metal", "painted", "plastic"])))
    seat_h = rng.uniform(0.4, 0.5)
    w, d = rng.uniform(0.4, 0.55), rng.uniform(0.4, 0.5)
    thick = rng.uniform(0.03, 0.06)
    leg_t = rng.uniform(0.03, 0.06)
    round_leg = bool(rng.random() < 0.5)
    for sx in (-1, 1):
        for sy in (-1, 1):
            _leg(b, sx * (0.5 * w - leg_t), sy * (0.5 * d - leg_t), seat_h - thick, leg_t, round_leg, frame)
    b.add(box(w, d, thick), frame, at=(0.0, 0.0, seat_h - 0.5 * thick))
    if rng.random() < 0.6:
        cushion = b.material("fabric")
        ch = rng.uniform(0.03, 0.07)
        b.add(box(0.95 * w, 0.95 * d, ch), cushion, at=(0.0, 0.0, seat_h + 0.5 * ch))
    back_h = rng.uniform(0.35, 0.6)
    back_y = -0.5 * d + 0.5 * leg_t
    for sx in (-1, 1):  # back posts continue the rear legs
        b.add(box(leg_t, leg_t, back_h), frame, at=(sx * (0.5 * w - leg_t), back_y, seat_h + 0.5 * back_h))
    style = rng.integers(3)
    if style == 0:  # solid panel
        b.add(box(w - 2 * leg_t, 0.025, 0.6 * back_h), frame, at=(0.0, back_y, seat_h + 0.6 * back_h))
    elif style == 1:  # vertical slats under a top rail
        slats = int(rng.integers(2, 6))
        for k in range(slats):
            x = (k + 1) / (slats + 1) * (w - 2 * leg_t) - 0.5 * (w - 2 * leg_t)
            b.add(box(0.03, 0.02, back_h), frame, at=(x, back_y, seat_h + 0.5 * back_h))
        b.add(box(w, 0.03, 0.06), frame, at=(0.0, back_y, seat_h + back_h))
    else:  # horizontal bars
        for k in range(int(rng.integers(2, 5))):
            bar_z = seat_h + back_h * (0.35 + 0.2 * k)
            b.add(box(w - 2 * leg_t, 0.025, 0.04), frame, at=(0.0, back_y, bar_z))
    if rng.random() < 0.35:  # armrests
        arm_h = rng.uniform(0.18, 0.28)
        for sx in (-1, 1):
            x = sx * (0.5 * w - leg_t)
            b.add(box(0.05, d, 0.03), frame, at=(x, 0.0, seat_h + arm_h))
            b.add(box(0.03, 0.03, arm_h), frame, at=(x, 0.5 * d - leg_t, seat_h + 0.5 * arm_h))


def stool(b: ObjectBuilder) -> None:
    rng = b.rng
    seat = b.material(str(rng.choice(["wood", "fabric", "plastic", "painted"])))
    legs = b.material(str(rng.choice(["wood", "metal", "painted"])))
    h = rng.uniform(0.45, 0.8)
    r_seat = rng.uniform(0.15, 0.22)
    thick = rng.uniform(0.03, 0.07)
    b.add(cylinder(r_seat, thick, 40, bevel=0.4 * thick), seat, at=(0.0, 0.0, h - thick))
    count = int(rng.integers(3, 5))
    spread = rng.uniform(1.0, 1.5)
    turn = rng.uniform(0.0, math.pi)
    for k in range(count):
        a = turn + 2.0 * math.pi * k / count
        top = (0.7 * r_seat * math.cos(a), 0.7 * r_seat * math.sin(a), h - thick)
        foot = (spread * r_seat * math.cos(a), spread * r_seat * math.sin(a), 0.0)
        rod_between(b, foot, top, rng.uniform(0.012, 0.022), legs)
    if rng.random() < 0.6:  # foot ring, at the radius the splayed legs have at that height
        zr = rng.uniform(0.25, 0.4) * h
        radius = r_seat * (spread + (0.7 - spread) * zr / (h - thick))
        b.add(torus(radius, 0.012, 40, 8), legs, at=(0.0, 0.0, zr))


def shelf(b: ObjectBuilder) -> None:
    rng = b.rng
    wood = b.material(str(rng.choice(["wood", "wood", "painted", "metal"])))
    w, d, h = rng.uniform(0.6, 1.2), rng.uniform(0.25, 0.4), rng.uniform(0.8, 1.9)
    t = rng.uniform(0.02, 0.04)
    for sx in (-1, 1):
        b.add(box(t, d, h), wood, at=(sx * 0.5 * (w - t), 0.0, 0.5 * h))
    boards = int(rng.integers(3, 7))
    levels = np.linspace(0.5 * t + 0.05, h - 0.5 * t, boards)
    for z in levels:
        b.add(box(w - 2 * t, d, t), wood, at=(0.0, 0.0, z))
    if rng.random() < 0.7:
        b.add(box(w, 0.01, h), wood, at=(0.0, -0.5 * d + 0.005, 0.5 * h))
    if rng.random() < 0.7:  # books on some boards
        covers = [b.material("fabric"), b.material("plastic")]
        for z0, z1 in zip(levels[:-1], levels[1:]):
            if rng.random() < 0.3:
                continue
            x = -0.5 * w + t + 0.01
            gap = z1 - z0 - t
            while x < 0.5 * w - t - 0.06 and rng.random() < 0.93:
                bw = rng.uniform(0.02, 0.05)
                bh = gap * rng.uniform(0.55, 0.9)
                b.add(box(bw, d * rng.uniform(0.6, 0.9), bh), covers[int(rng.integers(2))],
                      at=(x + 0.5 * bw, 0.0, z0 + 0.5 * t + 0.5 * bh))
                x += bw + rng.uniform(0.0, 0.01)


def lamp(b: ObjectBuilder) -> None:
    rng = b.rng
    metal = b.material(str(rng.choice(["metal", "brass", "painted"])))
    floor_lamp = bool(rng.random() < 0.4)
    h = rng.uniform(1.2, 1.7) if floor_lamp else rng.uniform(0.35, 0.6)
    base_r = rng.uniform(0.1, 0.18) * (1.4 if floor_lamp else 1.0)
    base_h = rng.uniform(0.02, 0.06)
    b.add(lathe([0.0, base_r, base_r * 0.95, base_r * 0.4, 0.0],
                [0.0, 0.0, base_h, base_h * 1.6, base_h * 1.6], 40), metal)
    pole_r = rng.uniform(0.008, 0.02)
    b.add(cylinder(pole_r, h, 16), metal, at=(0.0, 0.0, base_h))
    bulb = b.material("glass" if rng.random() < 0.5 else "ceramic")
    if rng.random() < 0.6:  # fabric or glass shade around a bulb
        shade = b.material(str(rng.choice(["fabric", "fabric", "glass", "ceramic"])))
        r_bot = rng.uniform(0.12, 0.22) * (1.3 if floor_lamp else 1.0)
        r_top = r_bot * rng.uniform(0.45, 0.9)
        sh = rng.uniform(0.15, 0.3) * (1.2 if floor_lamp else 1.0)
        z0 = h + base_h - 0.6 * sh
        b.add(shell_ring(r_bot, r_top, sh, 0.006, 48), shade, at=(0.0, 0.0, z0))
        b.add(sphere(rng.uniform(0.03, 0.05), 20, 12), bulb, at=(0.0, 0.0, z0 + 0.4 * sh))
    else:  # a glass globe on top
        globe = b.material("glass")
        gr = rng.uniform(0.08, 0.16)
        b.add(cylinder(1.5 * pole_r + 0.01, 0.03, 20), metal, at=(0.0, 0.0, h + base_h))
        b.add(sphere(gr, 32, 18), globe, at=(0.0, 0.0, h + base_h + 0.02 + gr))
        b.add(sphere(0.4 * gr, 16, 10), bulb, at=(0.0, 0.0, h + base_h + 0.02 + gr))
        if rng.random() < 0.5:
            b.add(frustum(1.1 * gr, 0.0, 0.5 * gr, 32), metal, at=(0.0, 0.0, h + base_h + 0.02 + 1.8 * gr))
