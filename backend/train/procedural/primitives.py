"""Closed triangle-mesh primitives with UVs: lathes (cylinders, cones, spheres, tori, vessels) and extrusions.

Every primitive is built in its own local frame (Z-up) and returned as a :class:`Part`.
UVs are in world units along the surface (1 UV unit = 1 length unit), so that a material
can scale them by an integer tile density and keep the texel size the same on every part.
Around a lathe the U span is rounded to a whole number of units, which keeps the texture
continuous across the seam once it is multiplied by an integer density.

Vertices are not shared across sharp creases or UV seams (a seam column or a cap has its
own copies), so each part is closed geometrically but not necessarily by vertex index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# A lathe profile corner turning more than this is a crease: the strips on either side get
# their own vertices, so smooth vertex normals do not round off a cylinder's rim.
CREASE_ANGLE_RAD = math.radians(40.0)


@dataclass(frozen=True)
class Part:
    """One primitive: vertices [V, 3] float64, faces [F, 3] int64 (outward, counter-clockwise), uvs [V, 2]."""

    vertices: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray


def _concat(parts: list[Part]) -> Part:
    offsets = np.cumsum([0] + [p.vertices.shape[0] for p in parts[:-1]])
    return Part(
        vertices=np.concatenate([p.vertices for p in parts]),
        faces=np.concatenate([p.faces + off for p, off in zip(parts, offsets)]),
        uvs=np.concatenate([p.uvs for p in parts]),
    )


def rotation_x(angle: float) -> np.ndarray:
    """3x3 rotation by ``angle`` radians about +X (right-handed)."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rotation_y(angle: float) -> np.ndarray:
    """3x3 rotation by ``angle`` radians about +Y (right-handed)."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rotation_z(angle: float) -> np.ndarray:
    """3x3 rotation by ``angle`` radians about +Z (right-handed)."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _lathe_strip(r: np.ndarray, z: np.ndarray, cos_t: np.ndarray, sin_t: np.ndarray, u_span: float,
                 v_start: float) -> Part:
    """Revolve one smooth run of the profile; rings of radius 0 collapse to fans (no zero-area faces)."""
    rings, cols = r.shape[0], cos_t.shape[0]
    segments = cols - 1
    vertices = np.stack(
        [r[:, None] * cos_t[None, :], r[:, None] * sin_t[None, :],
         np.broadcast_to(z[:, None], (rings, cols))],
        axis=-1,
    ).reshape(-1, 3)
    if np.all(z == z[0]):
        # A flat annulus or disk: planar UVs look right and need no seam handling.
        uvs = vertices[:, :2].copy()
    else:
        arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(r), np.diff(z)))]) + v_start
        u = np.linspace(0.0, u_span, cols)
        uvs = np.stack(np.broadcast_arrays(u[None, :], arc[:, None]), axis=-1).reshape(-1, 2)
    i, j = np.meshgrid(np.arange(rings - 1), np.arange(segments), indexing="ij")
    a = (i * cols + j).reshape(-1)
    b, d = a + 1, a + cols
    c = d + 1
    ring = i.reshape(-1)
    # (a, b, c) collapses when ring i is on the axis; (a, c, d) when ring i + 1 is.
    first = np.stack([a, b, c], axis=1)[r[ring] > 0]
    second = np.stack([a, c, d], axis=1)[r[ring + 1] > 0]
    return Part(vertices, np.concatenate([first, second]).astype(np.int64), uvs)


def lathe(radii, heights, segments: int) -> Part:
    """Revolve the profile (r_i, z_i) about +Z with ``segments`` sides.

    The outward side is on the right when walking the profile in the (r, z) half-plane
    with r to the right and z up, i.e. walk up the outside and down the inside of a
    wall. A closed solid starts and ends on the axis (r = 0); a profile whose first and
    last points coincide (a torus) closes on itself. Corners sharper than
    :data:`CREASE_ANGLE_RAD` get separate vertices.
    """
    r = np.asarray(radii, dtype=np.float64)
    z = np.asarray(heights, dtype=np.float64)
    theta = np.linspace(0.0, 2.0 * math.pi, segments + 1)
    cos_t, sin_t = np.cos(theta), np.sin(theta)
    cos_t[-1], sin_t[-1] = cos_t[0], sin_t[0]  # the seam column lands exactly on the first one
    u_span = float(max(1, round(2.0 * math.pi * float(r.max()))))
    dr, dz = np.diff(r), np.diff(z)
    heading = np.arctan2(dz, dr)
    turn = np.abs((np.diff(heading) + math.pi) % (2.0 * math.pi) - math.pi)
    cuts = [0, *(np.nonzero(turn > CREASE_ANGLE_RAD)[0] + 1).tolist(), r.shape[0] - 1]
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(dr, dz))])
    strips = [
        _lathe_strip(r[s:e + 1], z[s:e + 1], cos_t, sin_t, u_span, float(arc[s]))
        for s, e in zip(cuts[:-1], cuts[1:])
        if e > s
    ]
    return _concat(strips)


def cylinder(radius: float, height: float, segments: int, bevel: float = 0.0) -> Part:
    """Closed cylinder standing on z = 0, optionally with a chamfer of ``bevel`` on both rims."""
    bevel = min(bevel, 0.45 * radius, 0.45 * height)
    if bevel > 0:
        r = [0.0, radius - bevel, radius, radius, radius - bevel, 0.0]
        z = [0.0, 0.0, bevel, height - bevel, height, height]
    else:
        r, z = [0.0, radius, radius, 0.0], [0.0, 0.0, height, height]
    return lathe(r, z, segments)


def frustum(bottom_radius: float, top_radius: float, height: float, segments: int) -> Part:
    """Closed truncated cone on z = 0 (a cone when ``top_radius`` is 0)."""
    r = [0.0, bottom_radius, top_radius] + ([0.0] if top_radius > 0 else [])
    z = [0.0, 0.0, height] + ([height] if top_radius > 0 else [])
    return lathe(r, z, segments)


def sphere(radius: float, segments: int, rings: int) -> Part:
    """Closed UV sphere centred at the origin."""
    phi = np.linspace(-0.5 * math.pi, 0.5 * math.pi, rings + 1)
    r = radius * np.cos(phi)
    r[0] = r[-1] = 0.0
    return lathe(r, radius * np.sin(phi), segments)


def torus(major_radius: float, minor_radius: float, segments: int, tube_segments: int) -> Part:
    """Closed torus about +Z centred at the origin."""
    phi = np.linspace(0.0, 2.0 * math.pi, tube_segments + 1)
    r = major_radius + minor_radius * np.cos(phi)
    z = minor_radius * np.sin(phi)
    r[-1], z[-1] = r[0], z[0]
    return lathe(r, z, segments)


def _is_convex_ccw(poly: np.ndarray) -> bool:
    e = np.roll(poly, -1, axis=0) - poly
    cross = e[:, 0] * np.roll(e, -1, axis=0)[:, 1] - e[:, 1] * np.roll(e, -1, axis=0)[:, 0]
    return bool(np.all(cross >= 0))


def triangulate_polygon(poly: np.ndarray) -> np.ndarray:
    """Triangles [n - 2, 3] (counter-clockwise) of a simple counter-clockwise polygon, by ear clipping."""
    n = poly.shape[0]
    if _is_convex_ccw(poly):
        k = np.arange(1, n - 1)
        return np.stack([np.zeros_like(k), k, k + 1], axis=1)
    remaining = list(range(n))
    triangles = []
    guard = 0
    while len(remaining) > 3 and guard < 10 * n:
        guard += 1
        m = len(remaining)
        for k in range(m):
            ia, ib, ic = remaining[k - 1], remaining[k], remaining[(k + 1) % m]
            a, b, c = poly[ia], poly[ib], poly[ic]
            if (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]) <= 1e-12:
                continue  # reflex or degenerate corner: not an ear
            others = poly[[v for v in remaining if v not in (ia, ib, ic)]]
            if others.size:
                # Barycentric sign test: no other vertex may lie inside the candidate ear.
                d1 = (others[:, 0] - b[0]) * (a[1] - b[1]) - (a[0] - b[0]) * (others[:, 1] - b[1])
                d2 = (others[:, 0] - c[0]) * (b[1] - c[1]) - (b[0] - c[0]) * (others[:, 1] - c[1])
                d3 = (others[:, 0] - a[0]) * (c[1] - a[1]) - (c[0] - a[0]) * (others[:, 1] - a[1])
                if np.any((d1 <= 0) & (d2 <= 0) & (d3 <= 0)):
                    continue
            triangles.append((ia, ib, ic))
            del remaining[k]
            break
        else:
            break  # no ear found (self-intersecting input): fan the rest rather than loop forever
    for k in range(1, len(remaining) - 1):
        triangles.append((remaining[0], remaining[k], remaining[k + 1]))
    return np.asarray(triangles, dtype=np.int64)


def extrude(polygon, depth: float) -> Part:
    """Prism of a simple 2-D polygon (xy, either orientation) from z = 0 to z = ``depth``, flat-shaded."""
    poly = np.asarray(polygon, dtype=np.float64)
    signed_area = 0.5 * np.sum(poly[:, 0] * np.roll(poly[:, 1], -1) - np.roll(poly[:, 0], -1) * poly[:, 1])
    if signed_area < 0:
        poly = poly[::-1]
    n = poly.shape[0]
    tris = triangulate_polygon(poly)
    zeros, tops = np.zeros((n, 1)), np.full((n, 1), depth)
    bottom = Part(np.hstack([poly, zeros]), tris[:, ::-1].copy(), poly.copy())
    top = Part(np.hstack([poly, tops]), tris.copy(), poly.copy())
    nxt = np.roll(poly, -1, axis=0)
    edge_len = np.linalg.norm(nxt - poly, axis=1)
    u0 = np.concatenate([[0.0], np.cumsum(edge_len)[:-1]])
    # Four vertices per side quad: bottom-start, bottom-end, top-end, top-start.
    side_v = np.stack([np.hstack([poly, zeros]), np.hstack([nxt, zeros]), np.hstack([nxt, tops]),
                       np.hstack([poly, tops])], axis=1).reshape(-1, 3)
    side_uv = np.stack([np.stack([u0, np.zeros(n)], 1), np.stack([u0 + edge_len, np.zeros(n)], 1),
                        np.stack([u0 + edge_len, np.full(n, depth)], 1),
                        np.stack([u0, np.full(n, depth)], 1)], axis=1).reshape(-1, 2)
    base = 4 * np.arange(n)[:, None]
    side_f = np.concatenate([base + [0, 1, 2], base + [0, 2, 3]])
    return _concat([bottom, top, Part(side_v, side_f.astype(np.int64), side_uv)])


def box(size_x: float, size_y: float, size_z: float) -> Part:
    """Closed axis-aligned box centred at the origin."""
    hx, hy = 0.5 * size_x, 0.5 * size_y
    part = extrude([[-hx, -hy], [hx, -hy], [hx, hy], [-hx, hy]], size_z)
    return Part(part.vertices - [0.0, 0.0, 0.5 * size_z], part.faces, part.uvs)


def transformed(part: Part, rotation: np.ndarray | None = None, translation=(0.0, 0.0, 0.0)) -> Part:
    """The part rotated (3x3 matrix, applied first) and then moved by ``translation``."""
    v = part.vertices if rotation is None else part.vertices @ np.asarray(rotation).T
    return Part(v + np.asarray(translation, dtype=np.float64), part.faces, part.uvs)


def align_z_to(direction) -> np.ndarray:
    """3x3 rotation taking +Z onto the unit vector of ``direction`` (Rodrigues' formula)."""
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    c = float(d[2])
    if c > 1.0 - 1e-12:
        return np.eye(3)
    if c < -1.0 + 1e-12:
        return rotation_x(math.pi)
    axis = np.array([-d[1], d[0], 0.0])  # z x d
    s = float(np.linalg.norm(axis))
    k = axis / s
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + s * kx + (1.0 - c) * (kx @ kx)


def smooth_profile(control_radii, height: float, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Radii and heights of a smooth curve through evenly spaced control radii (zero slope at each control).

    Returns ``samples`` points from z = 0 to z = ``height``; used for vases and bottles.
    """
    ctrl = np.asarray(control_radii, dtype=np.float64)
    z = np.linspace(0.0, height, samples)
    pos = z / height * (ctrl.shape[0] - 1)
    i0 = np.minimum(np.floor(pos).astype(np.int64), ctrl.shape[0] - 2)
    f = pos - i0
    f = f * f * (3.0 - 2.0 * f)
    return ctrl[i0] * (1.0 - f) + ctrl[i0 + 1] * f, z


def hollow_lathe(outer_radii, heights, wall: float, floor: float, segments: int) -> Part:
    """A vessel: the outer profile (bottom to top) revolved with a wall of ``wall`` and a floor of ``floor``.

    The inner surface follows the outer one, ``wall`` closer to the axis, down to height
    ``floor``; the rim is flat. The result is one closed surface.
    """
    r_out = np.asarray(outer_radii, dtype=np.float64)
    z = np.asarray(heights, dtype=np.float64)
    keep = z >= floor
    r_in = np.maximum(r_out[keep] - wall, 0.2 * wall)[::-1]
    z_in = z[keep][::-1]
    r = np.concatenate([[0.0], r_out, r_in, [0.0]])
    zz = np.concatenate([[z[0]], z, z_in, [z_in[-1]]])
    return lathe(r, zz, segments)


def shell_ring(bottom_radius: float, top_radius: float, height: float, wall: float, segments: int) -> Part:
    """An open tube (a lamp shade) as a closed thin wall: a frustum surface of thickness ``wall``."""
    r = [bottom_radius, top_radius, top_radius - wall, bottom_radius - wall, bottom_radius]
    z = [0.0, height, height, 0.0, 0.0]
    return lathe(r, z, segments)
