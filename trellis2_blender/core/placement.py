"""Where new objects go: beside what is already in the scene, not inside it. No ``bpy``.

A generated object is about a unit cube around its origin. Dropped at the 3D cursor it would
sit inside whatever is there (Blender's default cube, an earlier result); instead the objects of
one job are laid out in a row along +X starting at the cursor, and the row is moved along +X
until it overlaps none of the boxes already in the scene.
"""

from __future__ import annotations

from collections.abc import Sequence

Vector3 = tuple[float, float, float]
Box = tuple[Vector3, Vector3]  # (min corner, max corner), world space

GAP = 0.25  # free space between neighbours, in scene units


def _overlaps(a: Box, b: Box) -> bool:
    return all(a[0][i] < b[1][i] and b[0][i] < a[1][i] for i in range(3))


def _moved(box: Box, dx: float) -> Box:
    (x0, y0, z0), (x1, y1, z1) = box
    return (x0 + dx, y0, z0), (x1 + dx, y1, z1)


def row_locations(cursor: Vector3, sizes: Sequence[Box], occupied: Sequence[Box],
                  gap: float = GAP) -> list[Vector3]:
    """Locations for objects whose local bounding boxes are ``sizes``, in a row along +X.

    The first object's origin is at ``cursor`` when that spot is free; otherwise the whole row
    moves along +X, just past the boxes in ``occupied`` that it would hit.
    """
    offsets: list[float] = []
    right = None  # the previous object's max x, relative to the cursor
    for lo, hi in sizes:
        offset = 0.0 if right is None else right + gap - lo[0]
        offsets.append(offset)
        right = offset + hi[0]
    cx, cy, cz = cursor
    shift = 0.0
    for _ in range(len(occupied) + 1):
        boxes = [_moved(((cx + off + lo[0], cy + lo[1], cz + lo[2]),
                         (cx + off + hi[0], cy + hi[1], cz + hi[2])), shift)
                 for off, (lo, hi) in zip(offsets, sizes)]
        hits = [o for o in occupied if any(_overlaps(b, o) for b in boxes)]
        if not hits:
            break
        # Start the row just past the furthest box it hits, and check again.
        shift += max(o[1][0] for o in hits) - min(b[0][0] for b in boxes) + gap
    return [(cx + off + shift, cy, cz) for off in offsets]
