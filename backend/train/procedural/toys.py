"""Toys: cars, robots, rockets and trains (blocky, brightly coloured)."""

from __future__ import annotations

import math

import numpy as np

from .builder import ObjectBuilder
from .furniture import rod_between
from .primitives import (
    Part,
    box,
    cylinder,
    extrude,
    frustum,
    lathe,
    rotation_x,
    rotation_y,
    rotation_z,
    smooth_profile,
    sphere,
    torus,
    transformed,
)
from .tools import add_plate


def _wheel(b: ObjectBuilder, x: float, y: float, radius: float, width: float, tyre: int, hub: int) -> None:
    """A wheel turning about the y axis, centred at (x, y, radius) so it touches z = 0."""
    b.add(torus(radius - 0.5 * width, 0.5 * width, 28, 10), tyre, rotation_x(0.5 * math.pi), (x, y, radius))
    hub_w = 0.9 * width
    b.add(cylinder(radius - 0.6 * width, hub_w, 20), hub, rotation_x(-0.5 * math.pi),
          (x, y - 0.5 * hub_w, radius))


def car(b: ObjectBuilder) -> None:
    rng = b.rng
    paint = b.material(str(rng.choice(["painted", "plastic"])))
    glass = b.material("glass" if rng.random() < 0.6 else "plastic", hue=0.58)
    tyre, hub = b.material("rubber"), b.material("metal")
    length, width = rng.uniform(0.8, 1.2), rng.uniform(0.4, 0.55)
    wheel_r = rng.uniform(0.09, 0.14)
    clearance = 0.5 * wheel_r
    body_h = rng.uniform(0.15, 0.25)
    hood, trunk = rng.uniform(0.05, 0.15), rng.uniform(0.02, 0.12)
    half = 0.5 * length
    side = [[-half, clearance], [half, clearance], [half, clearance + 0.7 * body_h],
            [half - hood, clearance + body_h], [-half + trunk, clearance + body_h],
            [-half, clearance + 0.8 * body_h]]
    add_plate(b, side, width, paint)
    truck = bool(rng.random() < 0.3)
    top = clearance + body_h
    if truck:  # cab at the front, cargo box behind
        cab_len = 0.3 * length
        cab_h = rng.uniform(0.18, 0.28)
        b.add(box(cab_len, 0.95 * width, cab_h), paint,
              at=(half - 0.5 * cab_len - 0.05, 0.0, top + 0.5 * cab_h))
        b.add(box(0.05, 0.96 * width, 0.5 * cab_h), glass, at=(half - 0.05, 0.0, top + 0.6 * cab_h))
        cargo = b.material(str(rng.choice(["wood", "painted", "metal"])))
        cargo_h = cab_h * rng.uniform(0.6, 1.3)
        b.add(box(0.6 * length, width, cargo_h), cargo, at=(-0.15 * length, 0.0, top + 0.5 * cargo_h))
    else:  # cabin: a trapezoid seen from the side, glass all round
        cab_h = rng.uniform(0.12, 0.2)
        rear, front = -half + trunk + rng.uniform(0.05, 0.2), half - hood - rng.uniform(0.05, 0.25)
        slope = rng.uniform(0.05, 0.15)
        cabin = [[rear, top - 0.01], [front, top - 0.01], [front - slope, top + cab_h],
                 [rear + 0.6 * slope, top + cab_h]]
        add_plate(b, cabin, 0.85 * width, glass)
        b.add(box(front - rear - 1.6 * slope, 0.87 * width, 0.02), paint,
              at=(0.5 * (front + rear) - 0.2 * slope, 0.0, top + cab_h))
    axle = half - rng.uniform(0.15, 0.25) * length
    wheel_w = rng.uniform(0.05, 0.09)
    for x in (-axle, axle):
        for sy in (-1, 1):
            _wheel(b, x, sy * 0.5 * width, wheel_r, wheel_w, tyre, hub)
    lights = b.material("ceramic", hue=0.15)
    for sy in (-1, 1):
        b.add(sphere(0.03, 12, 8), lights, at=(half, sy * 0.32 * width, clearance + 0.5 * body_h))
    if rng.random() < 0.3:  # spoiler
        b.add(box(0.08, width, 0.015), paint, at=(-half + 0.04, 0.0, top + 0.08))
        for sy in (-1, 1):
            b.add(box(0.02, 0.02, 0.08), paint, at=(-half + 0.04, sy * 0.35 * width, top + 0.04))


def robot(b: ObjectBuilder) -> None:
    rng = b.rng
    shell = b.material(str(rng.choice(["painted", "plastic", "metal"])))
    joints = b.material(str(rng.choice(["metal", "rubber", "plastic"])))
    eyes = b.material(str(rng.choice(["glass", "ceramic", "plastic"])))
    leg_h = rng.uniform(0.2, 0.4)
    torso_w, torso_d, torso_h = rng.uniform(0.25, 0.4), rng.uniform(0.15, 0.25), rng.uniform(0.25, 0.4)
    leg_t = rng.uniform(0.05, 0.09)
    round_body = bool(rng.random() < 0.35)
    for sx in (-1, 1):
        x = sx * 0.25 * torso_w
        b.add(box(leg_t * 1.6, leg_t * 2.2, 0.04), joints, at=(x, 0.02 * leg_t, 0.02))
        b.add(box(leg_t, leg_t, leg_h), shell, at=(x, 0.0, 0.04 + 0.5 * leg_h))
    z = 0.04 + leg_h
    if round_body:
        b.add(cylinder(0.5 * torso_w, torso_h, 32, bevel=0.02), shell, at=(0.0, 0.0, z))
    else:
        b.add(box(torso_w, torso_d, torso_h), shell, at=(0.0, 0.0, z + 0.5 * torso_h))
    if rng.random() < 0.6:  # chest panel
        panel = b.material(str(rng.choice(["plastic", "ceramic"])))
        b.add(box(0.5 * torso_w, 0.02, 0.4 * torso_h), panel,
              at=(0.0, 0.5 * (torso_w if round_body else torso_d), z + 0.6 * torso_h))
    shoulder_z = z + 0.85 * torso_h
    arm_len = rng.uniform(0.2, 0.35)
    arm_r = rng.uniform(0.02, 0.035)
    for sx in (-1, 1):
        sx0 = sx * (0.5 * torso_w + 0.03)
        b.add(sphere(1.6 * arm_r, 16, 10), joints, at=(sx0, 0.0, shoulder_z))
        swing = rng.uniform(-0.6, 0.9)
        hand = (sx0 + sx * arm_len * math.sin(abs(swing) * 0.5), arm_len * math.sin(swing) * 0.5,
                shoulder_z - arm_len * math.cos(swing))
        rod_between(b, (sx0, 0.0, shoulder_z), hand, arm_r, shell)
        if rng.random() < 0.5:
            b.add(torus(1.5 * arm_r, 0.6 * arm_r, 16, 8), joints, rotation_y(0.5 * math.pi), hand)
        else:
            b.add(sphere(1.5 * arm_r, 16, 10), joints, at=hand)
    z_head = z + torso_h + 0.03
    b.add(cylinder(0.04, 0.04, 16), joints, at=(0.0, 0.0, z + torso_h - 0.01))
    head = rng.uniform(0.12, 0.2)
    if rng.random() < 0.5:
        b.add(box(head * rng.uniform(1.0, 1.4), head, head), shell, at=(0.0, 0.0, z_head + 0.5 * head))
        face_y = 0.5 * head
    else:
        b.add(sphere(0.6 * head, 28, 16), shell, at=(0.0, 0.0, z_head + 0.5 * head))
        face_y = 0.55 * head
    for sx in (-1, 1):
        b.add(sphere(0.12 * head, 14, 8), eyes, at=(sx * 0.22 * head, face_y, z_head + 0.6 * head))
    if rng.random() < 0.7:  # antenna
        tip = z_head + head + rng.uniform(0.05, 0.12)
        b.add(cylinder(0.006, tip - z_head - head * 0.9, 8), joints, at=(0.0, 0.0, z_head + 0.9 * head))
        b.add(sphere(0.02, 12, 8), eyes, at=(0.0, 0.0, tip))


def rocket(b: ObjectBuilder) -> None:
    rng = b.rng
    hull = b.material(str(rng.choice(["painted", "metal", "plastic"])))
    accent = b.material(str(rng.choice(["painted", "plastic", "metal"])))
    h = rng.uniform(0.7, 1.1)
    r = rng.uniform(0.06, 0.11)
    nose = rng.uniform(0.2, 0.35) * h
    base = 0.1 * h
    # Body cylinder with an ogive nose (radius falls off as a circle arc towards the tip).
    t = np.linspace(0.0, 1.0, 12)
    nose_r = r * np.sqrt(np.maximum(1.0 - t ** 2, 0.0))
    radii = np.concatenate([[0.0, 0.9 * r, r], nose_r])
    heights = np.concatenate([[base, base, base + 0.03], h - nose + nose * t])
    b.add(lathe(radii, heights, 40), hull)
    b.add(frustum(0.55 * r, 0.8 * r, base, 24), accent)
    fins = int(rng.integers(3, 5))
    span = r * rng.uniform(1.0, 2.0)
    fin_h = rng.uniform(0.2, 0.35) * h
    sweep = rng.uniform(0.0, 0.5) * fin_h
    outline = [[0.8 * r, base + fin_h], [0.8 * r, 0.3 * base], [r + span, 0.0],
               [r + span, sweep * 0.5 + 0.1 * fin_h]]
    for k in range(fins):
        angle = 2.0 * math.pi * k / fins
        b.add(_fin(outline, 0.012), accent, rotation_z(angle))
    if rng.random() < 0.7:  # porthole
        window = b.material("glass", hue=0.55)
        wz = h - nose - rng.uniform(0.05, 0.15) * h
        b.add(torus(0.35 * r, 0.06 * r, 20, 8), accent, rotation_y(0.5 * math.pi), (r, 0.0, wz))
        b.add(cylinder(0.34 * r, 0.02 * r, 20), window, rotation_y(0.5 * math.pi), (0.99 * r, 0.0, wz))
    if rng.random() < 0.3:  # side boosters
        for sy in (-1, 1):
            br, bz = 0.4 * r, base
            bh = 0.45 * h
            rr, zz = smooth_profile([br, br, br, 0.6 * br], bh, 8)
            b.add(lathe(np.concatenate([[0.0], rr, [0.0]]), np.concatenate([[0.0], zz, [bh + br]]), 24),
                  hull, at=(0.0, sy * (r + br), bz))
            b.add(frustum(0.6 * br, 0.9 * br, bz, 16), accent, at=(0.0, sy * (r + br), 0.0))


def _fin(outline, thickness: float) -> Part:
    """A fin plate in the xz plane (outline x outward from the axis), centred on y = 0."""
    part = extrude(outline, thickness)
    return transformed(part, rotation_x(0.5 * math.pi), (0.0, 0.5 * thickness, 0.0))


def train(b: ObjectBuilder) -> None:
    rng = b.rng
    paint = b.material(str(rng.choice(["painted", "plastic"])))
    dark = b.material(str(rng.choice(["metal", "painted", "rubber"])))
    wheel_mat = b.material(str(rng.choice(["metal", "painted"])))
    width = rng.uniform(0.18, 0.26)
    loco_len = rng.uniform(0.45, 0.6)
    wheel_r = rng.uniform(0.04, 0.06)
    deck = 2.0 * wheel_r
    # Locomotive: chassis, horizontal boiler, cab, chimney.
    b.add(box(loco_len, width, 0.04), dark, at=(0.0, 0.0, deck))
    boiler_r = rng.uniform(0.6, 0.85) * 0.5 * width * 1.4
    boiler_len = 0.62 * loco_len
    b.add(cylinder(boiler_r, boiler_len, 32, bevel=0.01), paint, rotation_y(0.5 * math.pi),
          (-0.5 * loco_len + 0.3 * loco_len, 0.0, deck + 0.02 + boiler_r))
    cab_h = rng.uniform(0.15, 0.25)
    b.add(box(0.32 * loco_len, width, cab_h), paint, at=(-0.34 * loco_len, 0.0, deck + 0.02 + 0.5 * cab_h))
    b.add(box(0.38 * loco_len, 1.1 * width, 0.02), dark, at=(-0.34 * loco_len, 0.0, deck + 0.03 + cab_h))
    front = 0.5 * loco_len - 0.02
    chimney_h = rng.uniform(0.06, 0.12)
    b.add(frustum(0.25 * boiler_r, 0.4 * boiler_r, chimney_h, 16), dark,
          at=(front - 0.1 * loco_len, 0.0, deck + 0.02 + 1.8 * boiler_r))
    add_plate(b, [[front, deck - 0.8 * wheel_r], [front + 0.08, deck - 0.8 * wheel_r], [front, deck + 0.02]],
              0.9 * width, dark)
    tyre = b.material("rubber")
    for x in np.linspace(-0.38, 0.38, 3) * loco_len:
        for sy in (-1, 1):
            _wheel(b, float(x), sy * 0.5 * width, wheel_r, 0.025, tyre, wheel_mat)
    # Wagons behind.
    x_end = -0.5 * loco_len
    for _ in range(int(rng.integers(0, 3))):
        wagon_len = rng.uniform(0.3, 0.5)
        gap = 0.04
        cx = x_end - gap - 0.5 * wagon_len
        b.add(box(wagon_len, width, 0.03), dark, at=(cx, 0.0, deck))
        cargo = b.material(str(rng.choice(["wood", "painted", "metal", "plastic"])))
        if rng.random() < 0.4:  # tank wagon
            tr = 0.45 * width
            b.add(cylinder(tr, 0.9 * wagon_len, 28, bevel=0.02), cargo, rotation_y(0.5 * math.pi),
                  (cx - 0.45 * wagon_len, 0.0, deck + 0.015 + tr))
        else:
            wh = rng.uniform(0.1, 0.2)
            b.add(box(0.95 * wagon_len, width, wh), cargo, at=(cx, 0.0, deck + 0.015 + 0.5 * wh))
        b.add(box(gap + 0.02, 0.03, 0.02), dark, at=(x_end - 0.5 * gap, 0.0, deck))
        for x in (cx - 0.3 * wagon_len, cx + 0.3 * wagon_len):
            for sy in (-1, 1):
                _wheel(b, float(x), sy * 0.5 * width, wheel_r, 0.025, tyre, wheel_mat)
        x_end = cx - 0.5 * wagon_len
