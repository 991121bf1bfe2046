"""Vessels made by revolving profiles: vases, cups, bottles and bowls."""

from __future__ import annotations

import math

import numpy as np

from .builder import ObjectBuilder
from .primitives import cylinder, hollow_lathe, lathe, rotation_x, smooth_profile, sphere, torus


def vase(b: ObjectBuilder) -> None:
    rng = b.rng
    body = b.material(str(rng.choice(["ceramic", "ceramic", "glass", "stone", "brass"])))
    h = rng.uniform(0.3, 0.6)
    belly = rng.uniform(0.08, 0.2)
    # Foot, belly, shoulder, neck, lip: the neck pinches in, the lip may flare out again.
    ctrl = [belly * rng.uniform(0.4, 0.8), belly, belly * rng.uniform(0.6, 1.0),
            belly * rng.uniform(0.25, 0.55), belly * rng.uniform(0.3, 0.8)]
    if rng.random() < 0.4:
        ctrl.insert(1, belly * rng.uniform(0.6, 1.1))
    r, z = smooth_profile(ctrl, h, 28)
    b.add(hollow_lathe(r, z, wall=0.1 * min(ctrl), floor=0.04 * h, segments=48), body)
    if rng.random() < 0.5:  # a separate foot ring
        foot = b.material(str(rng.choice(["brass", "wood", "ceramic"])))
        b.add(cylinder(ctrl[0] * 1.15, 0.02, 48, bevel=0.006), foot, at=(0.0, 0.0, -0.02))


def cup(b: ObjectBuilder) -> None:
    rng = b.rng
    body = b.material(str(rng.choice(["ceramic", "ceramic", "plastic", "metal"])))
    h = rng.uniform(0.07, 0.12)
    r_bot = rng.uniform(0.03, 0.045)
    r_top = r_bot * rng.uniform(1.0, 1.35)
    r, z = smooth_profile([r_bot, 0.5 * (r_bot + r_top) * rng.uniform(1.0, 1.1), r_top], h, 12)
    wall = rng.uniform(0.003, 0.006)
    b.add(hollow_lathe(r, z, wall=wall, floor=0.1 * h, segments=40), body)
    # Handle: a torus standing in the xz plane, half inside the wall.
    major = rng.uniform(0.25, 0.4) * h
    handle = body if rng.random() < 0.7 else b.material("plastic")
    b.add(torus(major, rng.uniform(0.004, 0.008), 32, 10), handle, rotation_x(0.5 * math.pi),
          at=(0.5 * (r_bot + r_top) + 0.4 * major, 0.0, 0.55 * h))
    if rng.random() < 0.5:  # saucer
        saucer = body if rng.random() < 0.6 else b.material("ceramic")
        sr = r_top * rng.uniform(1.6, 2.0)
        b.add(lathe([0.0, 0.6 * sr, sr, sr * 0.97, 0.55 * sr, 0.0],
                    [0.0, 0.0, 0.012, 0.016, 0.006, 0.006], 48), saucer, at=(0.0, 0.0, -0.006))


def bottle(b: ObjectBuilder) -> None:
    rng = b.rng
    glass = bool(rng.random() < 0.6)
    body = b.material("glass" if glass else str(rng.choice(["plastic", "ceramic", "metal"])))
    h = rng.uniform(0.2, 0.35)
    r = rng.uniform(0.03, 0.05) * (1.0 if rng.random() < 0.7 else 1.5)
    neck_r = r * rng.uniform(0.25, 0.45)
    shoulder = rng.uniform(0.55, 0.75)
    neck = rng.uniform(0.8, 0.9)
    # Body straight up to the shoulder, then a smooth shoulder into a straight neck.
    ts = np.linspace(0.0, 1.0, 10)
    shoulder_r = r + (neck_r - r) * (ts * ts * (3.0 - 2.0 * ts))
    shoulder_z = h * (shoulder + (neck - shoulder) * ts)
    radii = np.concatenate([[r * 0.95, r], shoulder_r, [neck_r, neck_r * 1.12]])
    heights = np.concatenate([[0.0, 0.01 * h], shoulder_z, [0.97 * h, h]])
    b.add(hollow_lathe(radii, heights, wall=0.08 * neck_r, floor=0.03 * h, segments=40), body)
    cap = b.material(str(rng.choice(["metal", "plastic", "rubber", "wood"])))
    b.add(cylinder(neck_r * 1.2, rng.uniform(0.06, 0.12) * h, 24, bevel=0.002), cap, at=(0.0, 0.0, 0.94 * h))
    if rng.random() < 0.6:  # label band just outside the body
        label = b.material(str(rng.choice(["fabric", "plastic", "ceramic"])))
        lh = rng.uniform(0.25, 0.45) * h
        b.add(lathe([r * 1.01, r * 1.01, r * 0.99, r * 0.99, r * 1.01], [0.0, lh, lh, 0.0, 0.0], 40), label,
              at=(0.0, 0.0, rng.uniform(0.08, 0.2) * h))


def bowl(b: ObjectBuilder) -> None:
    rng = b.rng
    body = b.material(str(rng.choice(["ceramic", "ceramic", "wood", "metal", "glass", "plastic"])))
    radius = rng.uniform(0.08, 0.16)
    h = radius * rng.uniform(0.35, 0.7)
    foot = radius * rng.uniform(0.3, 0.5)
    t = np.linspace(0.0, 1.0, 16)
    power = rng.uniform(0.4, 0.8)  # lower: rounder sides, higher: flaring cone
    r = foot + (radius - foot) * t ** power
    b.add(hollow_lathe(r, h * t, wall=rng.uniform(0.004, 0.01), floor=0.08 * h, segments=48), body)
    if rng.random() < 0.5:
        b.add(torus(foot * 0.9, 0.006, 40, 8), body, at=(0.0, 0.0, 0.0))
    if rng.random() < 0.3:  # fruit in the bowl
        fruit = b.material("plastic")
        for k in range(int(rng.integers(1, 4))):
            a = 2.0 * math.pi * k / 3.0 + rng.uniform(0, 1)
            fr = radius * rng.uniform(0.2, 0.3)
            b.add(sphere(fr, 20, 12), fruit, at=(0.4 * radius * math.cos(a), 0.4 * radius * math.sin(a),
                                                   0.08 * h + fr * 0.9))
