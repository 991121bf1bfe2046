"""Mesh clean-up before baking: weld and decimate.

Stands in for CuMesh's steps in ``o_voxel.postprocess.to_glb`` (clean-up and decimation in
its branch without remeshing). The extracted O-Voxel mesh is not consistently oriented, so after
decimation the export re-orients it with :func:`backend.geometry.topology.orient_faces`;
welding, compaction and normals come from the same module.
"""

from __future__ import annotations

import logging

import numpy as np

from backend.geometry.topology import drop_bad_faces, weld_vertices

from ..api import CancelToken

log = logging.getLogger(__name__)


def weld(vertices: np.ndarray, faces: np.ndarray, decimals: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Merge vertices that coincide (after rounding) and drop faces that collapse or repeat."""
    v, f = weld_vertices(vertices, faces, decimals)
    return v, drop_bad_faces(f)


DECIMATE_TIMEOUT_S = 900.0  # millions of faces take well under a minute
DECIMATE_MEMORY_BYTES = 16 << 30


def decimate(vertices: np.ndarray, faces: np.ndarray, target_faces: int,
             cancel: CancelToken | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Quadric decimation to about ``target_faces`` (no-op when already below).

    fast_simplification runs in a child process that ``cancel`` or a time limit stops (see
    :func:`backend.pipeline.isolation.run_isolated`).
    """
    if len(faces) <= target_faces:
        return vertices, faces
    from ..isolation import run_isolated

    ratio = 1.0 - target_faces / len(faces)
    v, f = run_isolated(_simplify, vertices.astype(np.float32), faces.astype(np.int32), ratio,
                        what="decimation (fast_simplification)", timeout_s=DECIMATE_TIMEOUT_S, cancel=cancel,
                        memory_bytes=DECIMATE_MEMORY_BYTES)
    log.debug("decimated %d -> %d faces", len(faces), len(f))
    return v.astype(np.float64), drop_bad_faces(f.astype(np.int64))


def _simplify(vertices: np.ndarray, faces: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """The fast_simplification call itself (run in a child process)."""
    import fast_simplification

    return fast_simplification.simplify(vertices, faces, target_reduction=ratio)
