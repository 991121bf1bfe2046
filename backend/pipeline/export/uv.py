"""UV unwrapping with xatlas (charts + packing), returning the seam-split mesh.

Stands in for CuMesh's ``uv_unwrap`` (spec §8 step 3): xatlas charts and packs
the mesh; vertices on chart seams are duplicated, and ``vmap`` maps every new
vertex back to the input vertex it came from (to carry normals over).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unwrapped:
    vmap: np.ndarray  # [V'] int64, input vertex of each output vertex
    faces: np.ndarray  # [F, 3] int64 into the output vertices
    uvs: np.ndarray  # [V', 2] float32 in [0, 1], glTF convention (v down the image)


def unwrap(vertices: np.ndarray, faces: np.ndarray, texture_size: int = 2048, padding: int = 2,
           chart_iterations: int = 1) -> Unwrapped:
    """Chart and pack ``faces`` for a ``texture_size`` square texture (``padding`` texels between charts).

    Args:
        chart_iterations: xatlas chart-growing iterations (1 is fastest; more = fewer charts).
    """
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_mesh(vertices.astype(np.float32), faces.astype(np.uint32))
    chart = xatlas.ChartOptions()
    chart.max_iterations = chart_iterations
    pack = xatlas.PackOptions()
    pack.resolution = int(texture_size)
    pack.padding = int(padding)
    pack.bilinear = True
    pack.blockAlign = True
    atlas.generate(chart, pack)
    vmap, idx, uvs = atlas[0]
    log.debug("unwrapped %d faces into %d charts, %d vertices", len(faces), atlas.chart_count, len(vmap))
    return Unwrapped(vmap.astype(np.int64), idx.astype(np.int64), uvs.astype(np.float32))


_AXES = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=np.float64)
# In-plane axes (u, v) per projection direction, chosen so projected triangles keep their winding.
_PLANE = {0: (1, 2, 1.0), 1: (1, 2, -1.0), 2: (2, 0, 1.0), 3: (2, 0, -1.0), 4: (0, 1, 1.0), 5: (0, 1, -1.0)}


def fast_unwrap(vertices: np.ndarray, faces: np.ndarray, texture_size: int = 2048,
                padding: int = 2, fill: float = 1.0) -> Unwrapped:
    """Axis-projection charts + shelf packing: seconds for a million faces (xatlas takes minutes).

    Each face joins the one of six axis directions its normal is closest to; the
    edge-connected groups of faces with equal direction become charts, projected
    orthographically along that axis (normals within ~55 degrees of it, so the
    stretch is bounded). Charts keep one texel density and are packed in shelves
    with ``padding`` texels around each.
    """
    from scipy import sparse
    from scipy.sparse import csgraph

    F = len(faces)
    tri = vertices[faces].astype(np.float64)  # [F, 3, 3]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # [F, 3]
    label = np.argmax(normal @ _AXES.T, axis=1)  # [F]
    # Charts: faces sharing an edge and a label.
    e = np.sort(np.stack([faces, np.roll(faces, -1, axis=1)], -1).reshape(-1, 2), axis=1)  # [3F, 2]
    fid = np.repeat(np.arange(F), 3)
    order = np.lexsort((fid, e[:, 1], e[:, 0]))
    e, fid = e[order], fid[order]
    same = (e[1:] == e[:-1]).all(1) & (label[fid[1:]] == label[fid[:-1]])
    a, b = fid[:-1][same], fid[1:][same]
    n_charts, chart = csgraph.connected_components(
        sparse.coo_matrix((np.ones(len(a)), (a, b)), shape=(F, F)), directed=False)
    # Vertex instances: one per (chart, input vertex).
    key = chart[:, None].astype(np.int64) * len(vertices) + faces  # [F, 3]
    uniq, new_faces = np.unique(key.reshape(-1), return_inverse=True)
    vmap = uniq % len(vertices)
    v_chart = uniq // len(vertices)
    # Projected 2-D coordinates (world units).
    c_label = np.zeros(n_charts, dtype=np.int64)
    c_label[chart] = label
    lab = c_label[v_chart]
    p = vertices[vmap].astype(np.float64)
    ua = np.array([_PLANE[k][0] for k in range(6)])[lab]
    va = np.array([_PLANE[k][1] for k in range(6)])[lab]
    sign = np.array([_PLANE[k][2] for k in range(6)])[lab]
    xy = np.stack([p[np.arange(len(p)), ua] * sign, p[np.arange(len(p)), va]], -1)  # [V', 2]
    lo = np.full((n_charts, 2), np.inf)
    hi = np.full((n_charts, 2), -np.inf)
    np.minimum.at(lo, v_chart, xy)
    np.maximum.at(hi, v_chart, xy)
    size = hi - lo  # [C, 2] world units
    offsets, scale = _shelf_pack(size, texture_size, padding, fill)
    uv = ((xy - lo[v_chart]) * scale + offsets[v_chart]) / texture_size
    log.debug("fast unwrap: %d faces, %d charts, %d vertices", F, n_charts, len(vmap))
    return Unwrapped(vmap.astype(np.int64), new_faces.reshape(-1, 3).astype(np.int64),
                     uv.astype(np.float32))


def _shelf_pack(size: np.ndarray, texture_size: int, padding: int, fill: float) -> tuple[np.ndarray, float]:
    """Texel offsets ``[C, 2]`` of each chart's corner and the world->texel scale that fits them all.

    Charts sorted by height fill rows left to right (each row is the longest prefix of the
    remaining charts that fits the width); the scale shrinks by 5% until all rows fit.
    """
    total = float((size[:, 0] * size[:, 1]).sum()) + 1e-12
    scale = np.sqrt(fill * texture_size**2 / total)
    order = np.argsort(-size[:, 1], kind="stable")
    while True:
        box = np.ceil(size[order] * scale) + 2 * padding + 1  # [C, 2] texels incl. padding
        placed = _rows(box, texture_size)
        if placed is not None:
            offsets = np.empty_like(size)
            offsets[order] = placed + padding + 0.5
            return offsets, float(scale)
        scale *= 0.95


def _rows(box: np.ndarray, width: int) -> np.ndarray | None:
    """Corner of every box (in order) packed in shelves, or None if they overflow ``width`` x ``width``."""
    out = np.empty_like(box)
    start, y = 0, 0.0
    while start < len(box):
        if box[start, 0] > width:
            return None
        end_x = np.cumsum(box[start:, 0])
        n = max(1, int(np.searchsorted(end_x, width, side="right")))
        h = box[start, 1]  # sorted by height: the first box is the tallest in its row
        if y + h > width:
            return None
        out[start:start + n, 0] = end_x[:n] - box[start:start + n, 0]
        out[start:start + n, 1] = y
        y += h
        start += n
    return out
