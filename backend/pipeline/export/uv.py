"""UV unwrapping with xatlas (charts + packing), returning the seam-split mesh.

Stands in for CuMesh's ``uv_unwrap`` (step 3 of ``o_voxel.postprocess.to_glb``): xatlas charts and packs
the mesh; vertices on chart seams are duplicated, and ``vmap`` maps every new
vertex back to the input vertex it came from (to carry normals over).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from backend.geometry.topology import shared_edge_pairs

from ..api import CancelToken
from ..errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unwrapped:
    vmap: np.ndarray  # [V'] int64, input vertex of each output vertex
    faces: np.ndarray  # [F, 3] int64 into the output vertices
    uvs: np.ndarray  # [V', 2] float32 in [0, 1], glTF convention (v down the image)


XATLAS_TIMEOUT_S = 900.0  # xatlas on the largest "auto" mesh takes well under a minute
XATLAS_MEMORY_BYTES = 8 << 30


def unwrap(vertices: np.ndarray, faces: np.ndarray, texture_size: int = 2048, padding: int = 2,
           chart_iterations: int = 1, cancel: CancelToken | None = None,
           timeout_s: float = XATLAS_TIMEOUT_S) -> Unwrapped:
    """Chart and pack ``faces`` for a ``texture_size`` square texture (``padding`` texels between charts).

    xatlas runs in a child process (:func:`backend.pipeline.isolation.run_isolated`) that a
    cancel or ``timeout_s`` stops, on the mesh scaled into the unit cube: charts do not depend
    on scale, and xatlas's fixed tolerances fail on extreme ones (at 1e30 it never returns).

    Args:
        chart_iterations: xatlas chart-growing iterations (1 is fastest; more = fewer charts).
        cancel: checked while xatlas runs.

    Raises:
        InputError: non-finite coordinates, or faces so degenerate that no UVs come out.
    """
    from ..isolation import run_isolated

    v = np.asarray(vertices, np.float64)
    used = v[np.unique(faces)]
    if not np.isfinite(used).all():
        raise InputError("the mesh has NaN or infinite vertex coordinates")
    lo, hi = used.min(0), used.max(0)
    extent = float((hi - lo).max())
    unit = (v - (lo + hi) / 2) / (extent if extent > 0 else 1.0)  # [V, 3] within [-0.5, 0.5]^3
    vmap, idx, uvs, charts = run_isolated(
        _xatlas_charts, unit.astype(np.float32), np.asarray(faces).astype(np.uint32), int(texture_size),
        int(padding), int(chart_iterations), what="UV unwrapping (xatlas)", timeout_s=timeout_s,
        cancel=cancel, memory_bytes=XATLAS_MEMORY_BYTES)
    if not np.isfinite(uvs).all():
        raise InputError("UV unwrapping failed: the mesh's faces are degenerate (no area)",
                         "clean up the mesh, or give it UVs")
    log.debug("unwrapped %d faces into %d charts, %d vertices", len(faces), charts, len(vmap))
    return Unwrapped(vmap.astype(np.int64), idx.astype(np.int64), uvs.astype(np.float32))


def _xatlas_charts(vertices: np.ndarray, faces: np.ndarray, texture_size: int, padding: int,
                   chart_iterations: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The xatlas call itself (run in a child process): (vmap, faces, uvs, chart count)."""
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_mesh(vertices, faces)
    chart = xatlas.ChartOptions()
    chart.max_iterations = chart_iterations
    pack = xatlas.PackOptions()
    pack.resolution = texture_size
    pack.padding = padding
    pack.bilinear = True
    pack.blockAlign = True
    atlas.generate(chart, pack)
    vmap, idx, uvs = atlas[0]
    return vmap, idx, uvs, atlas.chart_count


_AXES = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=np.float64)
# In-plane axes (u, v) per projection direction, chosen so projected triangles keep their winding.
_PLANE = {0: (1, 2, 1.0), 1: (1, 2, -1.0), 2: (2, 0, 1.0), 3: (2, 0, -1.0), 4: (0, 1, 1.0), 5: (0, 1, -1.0)}


def fast_unwrap(vertices: np.ndarray, faces: np.ndarray, texture_size: int = 2048,
                padding: int = 2, fill: float = 1.0,
                pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> Unwrapped:
    """Axis-projection charts + shelf packing: seconds for a million faces (xatlas takes minutes).

    Each face joins the one of six axis directions its normal is closest to; isolated faces
    then take the direction most of their neighbours have (while it still faces them), so a
    noisy surface does not shatter into single-face charts. The edge-connected groups of
    faces with equal direction become charts, projected orthographically along that axis.
    Charts keep one texel density and are packed in shelves with ``padding`` texels around
    each (less padding when there are too many charts for it; see :func:`_shelf_pack`).
    ``pairs`` is :func:`backend.geometry.topology.shared_edge_pairs` of ``faces``, or of the
    same faces before windings were flipped (only the face of each half-edge is used), when
    the caller already has it.
    """
    from scipy import sparse
    from scipy.sparse import csgraph

    F = len(faces)
    tri = vertices[faces].astype(np.float64)  # [F, 3, 3]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # [F, 3]
    cosines = normal @ _AXES.T / np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-30)  # [F, 6]
    # Face pairs sharing an edge.
    ha, hb, _ = pairs if pairs is not None else shared_edge_pairs(faces)
    a, b = ha // 3, hb // 3
    label = _smooth_labels(np.argmax(cosines, axis=1), cosines, a, b)
    # Charts: faces sharing an edge and a label.
    same = label[a] == label[b]
    n_charts, chart = csgraph.connected_components(
        sparse.coo_matrix((np.ones(int(same.sum())), (a[same], b[same])), shape=(F, F)), directed=False)
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
    # Per-chart bounds: v_chart is sorted (uniq is), so each chart is one run of rows.
    starts = np.flatnonzero(np.r_[True, v_chart[1:] != v_chart[:-1]])
    lo = np.minimum.reduceat(xy, starts, axis=0)  # [C, 2]
    hi = np.maximum.reduceat(xy, starts, axis=0)
    size = hi - lo  # [C, 2] world units
    offsets, scale = _shelf_pack(size, texture_size, padding, fill)
    uv = ((xy - lo[v_chart]) * scale + offsets[v_chart]) / texture_size
    log.debug("fast unwrap: %d faces, %d charts, %d vertices", F, n_charts, len(vmap))
    return Unwrapped(vmap.astype(np.int64), new_faces.reshape(-1, 3).astype(np.int64),
                     uv.astype(np.float32))


def _smooth_labels(label: np.ndarray, cosines: np.ndarray, a: np.ndarray, b: np.ndarray,
                   passes: int = 3, min_cos: float = 0.2) -> np.ndarray:
    """Projection axis per face after ``passes`` of majority relabelling over edge neighbours.

    A face moves to the axis that at least two of its neighbours share, when its normal is
    within ~78 degrees of that axis (cosine > ``min_cos``): it still projects with its
    winding kept and at most 5x stretch, and joins their chart instead of being one alone.
    """
    label = label.copy()
    rows = np.arange(len(label))
    for _ in range(passes):
        # Neighbour labels per face; bincount on flat (face, label) slots (np.add.at is ~10x slower).
        slots = np.concatenate([a * 6 + label[b], b * 6 + label[a]])
        counts = np.bincount(slots, minlength=6 * len(label)).reshape(-1, 6)
        best = np.argmax(counts, axis=1)
        move = (best != label) & (counts[rows, best] >= 2) & (cosines[rows, best] > min_cos)
        if not move.any():
            break
        label[move] = best[move]
    return label


def _shelf_pack(size: np.ndarray, texture_size: int, padding: int, fill: float) -> tuple[np.ndarray, float]:
    """Texel offsets ``[C, 2]`` of each chart's corner and the world->texel scale that fits them all.

    Charts sorted by height fill rows left to right (each row is the longest prefix of the
    remaining charts that fits the width). The scale starts at the one that would fill the
    texture by area and is bisected down until every row fits. When even tiny charts cannot
    fit with ``padding`` texels around each (hundreds of thousands of charts), the padding
    is lowered; a chart count beyond one texel each is an error.
    """
    total = float((size[:, 0] * size[:, 1]).sum()) + 1e-12
    top = np.sqrt(fill * texture_size**2 / total)
    order = np.argsort(-size[:, 1], kind="stable")
    sorted_size = size[order]
    for pad in range(padding, -1, -1):
        def place(scale: float, pad: int = pad) -> np.ndarray | None:
            return _rows(np.ceil(sorted_size * scale) + 2 * pad + 1, texture_size)

        if place(0.0) is None:
            continue
        if pad < padding:
            log.warning("fast unwrap: %d charts do not fit %d px with %d px padding; using %d px",
                        len(size), texture_size, padding, pad)
        scale, placed = top, place(top)
        if placed is None:  # bisect: the largest scale (within 0.01%) whose rows fit
            lo, hi, placed = 0.0, top, place(0.0)
            while hi - lo > 1e-4 * top:
                mid = 0.5 * (lo + hi)
                trial = place(mid)
                if trial is None:
                    hi = mid
                else:
                    lo, placed = mid, trial
            scale = lo
        offsets = np.empty_like(size)
        offsets[order] = placed + pad + 0.5
        return offsets, float(scale)
    raise ValueError(f"cannot pack {len(size)} UV charts into a {texture_size} px texture; "
                     "use a larger texture size or fewer faces")


def _rows(box: np.ndarray, width: int) -> np.ndarray | None:
    """Corner of every box (in order) packed in shelves, or None if they overflow ``width`` x ``width``."""
    out = np.empty_like(box)
    if (box[:, 0] > width).any():
        return None
    end_x = np.cumsum(box[:, 0])  # one prefix sum; each row is a window of it
    start, y = 0, 0.0
    while start < len(box):
        base = end_x[start - 1] if start else 0.0
        stop = max(start + 1, int(np.searchsorted(end_x, base + width, side="right")))
        h = box[start, 1]  # sorted by height: the first box is the tallest in its row
        if y + h > width:
            return None
        out[start:stop, 0] = end_x[start:stop] - base - box[start:stop, 0]
        out[start:stop, 1] = y
        y += h
        start = stop
    return out
