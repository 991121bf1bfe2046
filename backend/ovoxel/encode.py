"""Mesh -> O-Voxel: the flexible dual grid (one dual vertex per voxel) plus the PBR volume.

The scan conversion, face/boundary quadrics and the per-voxel solve are numba
kernels (``_encode_kernels``, ``_qef``); this module validates input and glues them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from backend.geometry import MeshError, TriangleMesh
from backend.geometry.topology import boundary_edges

from .types import DEFAULT_AABB, OVoxel, check_resolution

log = logging.getLogger(__name__)

# The mesh is shifted by this many voxels before the scan. Synthetic meshes often put
# vertices, edges or whole faces exactly on grid planes and lines, where crossings of
# different axes tie in ways no single tie-break rule resolves consistently (holes,
# stray boundary edges). A tiny generic shift makes such coincidences vanish; the
# solved vertices are shifted back, so the result moves by nothing measurable.
GRID_JITTER = np.array([1.37e-6, 1.73e-6, 2.29e-6])


@dataclass(frozen=True)
class DualGridWeights:
    """QEF term weights; the defaults are the ones data preparation and texturing use."""

    face: float = 1.0  # only an on/off switch: the face term is added with weight 1 (as upstream)
    boundary: float = 0.2
    regularization: float = 1e-2


def _grid_vertices(mesh: TriangleMesh, resolution: int, aabb: np.ndarray) -> np.ndarray:
    """[V, 3] float64 vertex positions in grid units; warns if the mesh leaves the box."""
    aabb = np.asarray(aabb, dtype=np.float64)
    gv = (np.asarray(mesh.vertices, dtype=np.float64) - aabb[0]) * (resolution / (aabb[1] - aabb[0]))
    lo, hi = gv.min(axis=0), gv.max(axis=0)
    if (lo < 0).any() or (hi > resolution).any():
        log.warning("the mesh extends outside the aabb %s; the outside part is dropped "
                    "(normalize it first with normalize_to_unit_cube)", aabb.tolist())
    return np.ascontiguousarray(gv + GRID_JITTER)


# The parts of mesh_to_ovoxel, in words (for progress reports).
ENCODE_STEPS = ("finding where the surface crosses the voxel grid", "fitting the surface in each voxel",
                "weighting open edges", "placing the voxel vertices")


def mesh_to_ovoxel(
    mesh: TriangleMesh,
    resolution: int,
    *,
    aabb: np.ndarray = DEFAULT_AABB,
    weights: DualGridWeights = DualGridWeights(),  # noqa: B008 (frozen dataclass)
    attributes: bool = True,
    on_step: Callable[[int, str], None] | None = None,
) -> OVoxel:
    """Convert a mesh (already inside ``aabb``) to an O-Voxel.

    Args:
        mesh: triangles; PBR materials/UVs/vertex colors are used for the attributes.
        resolution: grid size in [64, 2048].
        aabb: [2, 3] grid box; the pipelines use [-0.5, 0.5]^3.
        weights: QEF term weights (face term on/off, boundary, regularisation).
        attributes: also compute the [N, 6] PBR attribute volume (same voxel set).
        on_step: called as each of :data:`ENCODE_STEPS` starts, with its index and words (progress
            for large meshes, where this takes minutes on a CPU).

    Raises:
        MeshError: the mesh is unusable (no faces, NaN/Inf coordinates, bad indices).
        OVoxelError: resolution outside [64, 2048].
    """
    from . import _encode_kernels as K
    from ._qef import solve_dual_vertices

    resolution = check_resolution(resolution)
    mesh.validate()
    step = on_step or (lambda _i, _words: None)
    faces = np.ascontiguousarray(mesh.faces, dtype=np.int64)
    gv = _grid_vertices(mesh, resolution, aabb)

    t0 = time.perf_counter()
    step(0, ENCODE_STEPS[0])
    keys, vals, coords, flags, acc, pairs = K.scan_crossings(gv, faces, resolution, attributes)
    if coords.shape[0] == 0:
        raise MeshError("the mesh crosses no grid edge at this resolution (it is too small or flat)")
    t1 = time.perf_counter()
    step(1, ENCODE_STEPS[1])
    if weights.face > 0:
        K.face_term(gv, faces, resolution, keys, vals, acc)
    t2 = time.perf_counter()
    step(2, ENCODE_STEPS[2])
    if weights.boundary > 0:
        edges = boundary_edges(faces)
        if len(edges):
            K.boundary_term(gv, edges, resolution, keys, vals, acc, float(weights.boundary))
    t3 = time.perf_counter()
    step(3, ENCODE_STEPS[3])
    offsets = solve_dual_vertices(coords, acc, float(weights.regularization))
    t4 = time.perf_counter()
    log.debug("encode %d voxels: crossings %.3fs, face %.3fs, boundary %.3fs, solve %.3fs",
              coords.shape[0], t1 - t0, t2 - t1, t3 - t2, t4 - t3)

    bits = np.array([1, 2, 4], dtype=np.uint8)
    ov = OVoxel(
        resolution=resolution,
        coords=coords,
        dual_vertices=np.clip(offsets - GRID_JITTER, 0.0, 1.0).astype(np.float32),
        intersected=(flags[:, None] & bits) != 0,
        aabb=np.asarray(aabb, dtype=np.float64).copy(),
    )
    if attributes:
        from .attributes import voxel_attributes

        ov.attributes = voxel_attributes(mesh, gv, coords, pairs, float(np.mean(ov.voxel_size)))
        log.debug("attributes for %d (triangle, voxel) pairs: %.3fs", len(pairs), time.perf_counter() - t4)
    return sort_voxels(ov)


def sort_voxels(ov: OVoxel) -> OVoxel:
    """The same O-Voxel with voxels in lexicographic (x, y, z) order (``ov`` itself if already so)."""
    r = np.int64(ov.resolution)
    c = ov.coords.astype(np.int64)
    keys = (c[:, 0] * r + c[:, 1]) * r + c[:, 2]
    if np.all(keys[1:] >= keys[:-1]):  # already in order (every saved O-Voxel is): skip the O(N log N) sort
        return ov
    order = np.argsort(keys, kind="stable")
    take = lambda a: None if a is None else a[order]  # noqa: E731
    return OVoxel(ov.resolution, ov.coords[order], ov.dual_vertices[order], ov.intersected[order],
                  take(ov.split_weight), take(ov.attributes), ov.aabb)
