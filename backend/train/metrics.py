"""Surface metrics of a generated mesh against its ground truth: Chamfer, F-scores, base-colour error.

All are computed after *canonical normalization*: each mesh's bounding box is centred at the
origin and its longest side scaled to 1, independently for prediction and ground truth; no
rotation is searched for, so a prediction must come out in the training frame to score well.

- Surfaces are compared through ``num_points`` area-weighted uniform samples per mesh
  (:func:`sample_surface`); each sample carries the mesh's base colour at that point.
- **Chamfer distance**: the mean of the two directed means of nearest-neighbour distances, with
  plain (not squared) Euclidean distances: ``(mean_p d(p, G) + mean_g d(g, P)) / 2``.
- **F-score at tau**: precision = share of predicted samples within ``tau`` (``<=``) of a
  ground-truth sample, recall = share of ground-truth samples within ``tau`` of a predicted one,
  ``F = 2PR / (P + R)`` (0 when both are 0). Reported at tau = 1% and 5% of the ground truth's
  bounding-box diagonal (after normalization).
- **Base-colour error**: for every ground-truth sample, the mean absolute difference over R, G, B
  between its colour and the colour of the nearest predicted sample, in **sRGB** values in [0, 1].
  Alpha is ignored.

Base colour of a surface point: glTF semantics, ``texture (sRGB decoded to linear, bilinear with
REPEAT wrap) x base_color_factor x vertex colour`` in linear light, re-encoded to sRGB; faces
without a material use the glTF default material (white).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from backend.colorspace import linear_to_srgb, srgb_to_linear
from backend.geometry import MeshError, TriangleMesh
from backend.ovoxel.normalize import normalize_to_unit_cube

# F-score thresholds as fractions of the ground truth's bounding-box diagonal.
F_SCORE_FRACTIONS = (0.01, 0.05)
# Elements of one distance block in the torch nearest-neighbour search (2^26 float32 = 256 MiB).
NN_CHUNK_ELEMENTS = 1 << 26

@dataclass(frozen=True)
class SurfaceSamples:
    """Points sampled on a mesh surface.

    Attributes:
        points: [N, 3] float64 positions.
        face_ids: [N] int64 triangle of each sample.
        barycentrics: [N, 3] float64 weights of the triangle's three vertices (sum 1, all >= 0).
        colors: [N, 3] float64 base colour in sRGB [0, 1].
    """

    points: np.ndarray
    face_ids: np.ndarray
    barycentrics: np.ndarray
    colors: np.ndarray


def triangle_areas(mesh: TriangleMesh) -> np.ndarray:
    """[F] float64 area of every triangle."""
    tri = np.asarray(mesh.vertices, dtype=np.float64)[np.asarray(mesh.faces, dtype=np.int64)]
    return 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)


def sample_surface(mesh: TriangleMesh, count: int, rng: np.random.Generator) -> SurfaceSamples:
    """``count`` points uniformly distributed over the surface area of ``mesh``, with base colours.

    A triangle is drawn with probability proportional to its area (inverse CDF of the cumulative
    areas), then a point uniformly inside it from two uniforms ``(r1, r2)`` folded into the
    triangle (``r1 + r2 > 1 -> (1 - r1, 1 - r2)``), barycentrics ``(1 - r1 - r2, r1, r2)``.
    Deterministic given the generator's state.

    Raises:
        MeshError: the mesh has no faces or zero total area; ValueError: ``count < 1``.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    mesh.validate()
    areas = triangle_areas(mesh)
    cumulative = np.cumsum(areas)
    total = float(cumulative[-1])
    if not total > 0:
        raise MeshError("the mesh has zero surface area")
    face_ids = np.searchsorted(cumulative, rng.random(count) * total, side="right")
    face_ids = np.minimum(face_ids, len(areas) - 1).astype(np.int64)
    r1, r2 = rng.random(count), rng.random(count)
    folded = r1 + r2 > 1.0
    r1[folded], r2[folded] = 1.0 - r1[folded], 1.0 - r2[folded]
    bary = np.stack([1.0 - r1 - r2, r1, r2], axis=1)
    corners = np.asarray(mesh.vertices, dtype=np.float64)[np.asarray(mesh.faces, dtype=np.int64)[face_ids]]
    points = np.einsum("nk,nkd->nd", bary, corners)
    return SurfaceSamples(points, face_ids, bary, surface_colors(mesh, face_ids, bary))


def _interpolate(values: np.ndarray, mesh: TriangleMesh, face_ids: np.ndarray,
                 bary: np.ndarray) -> np.ndarray:
    corners = np.asarray(values, dtype=np.float64)[np.asarray(mesh.faces, dtype=np.int64)[face_ids]]
    return np.einsum("nk,nkc->nc", bary, corners)


def surface_colors(mesh: TriangleMesh, face_ids: np.ndarray, barycentrics: np.ndarray) -> np.ndarray:
    """[N, 3] float64 sRGB base colour in [0, 1] at the given surface points (see the module docstring)."""
    from backend.render.mesh_render import sample_texture

    linear = np.ones((len(face_ids), 3))
    material_of_sample = mesh.material_of_faces()[face_ids]
    uv = None if mesh.uvs is None else _interpolate(mesh.uvs, mesh, face_ids, barycentrics)
    for index, material in enumerate(mesh.materials):
        chosen = material_of_sample == index
        if not chosen.any():
            continue
        color = np.tile(np.asarray(material.base_color_factor[:3], dtype=np.float64), (int(chosen.sum()), 1))
        if material.base_color_texture is not None and uv is not None:
            texture = torch.from_numpy(material.base_color_texture.astype(np.float64) / 255.0)
            texel = sample_texture(texture, torch.from_numpy(uv[chosen]))[:, :3]
            color = color * srgb_to_linear(texel.numpy())
        linear[chosen] = color
    if mesh.vertex_colors is not None:
        linear = linear * _interpolate(mesh.vertex_colors, mesh, face_ids, barycentrics)[:, :3]
    return linear_to_srgb(linear)


def canonical_normalize(mesh: TriangleMesh) -> TriangleMesh:
    """The mesh with its bounding box centred at the origin and its longest side scaled to exactly 1."""
    return normalize_to_unit_cube(mesh, fill=1.0)[0]


def bounding_box_diagonal(mesh: TriangleMesh) -> float:
    """Length of the diagonal of the bounding box of the vertices that faces use."""
    lo, hi = mesh.bounds()
    return float(np.linalg.norm(hi - lo))


# ================================================================================ metrics


def nearest_neighbors(query: np.ndarray, reference: np.ndarray, device: str | torch.device | None = None,
                      chunk_elements: int = NN_CHUNK_ELEMENTS) -> tuple[np.ndarray, np.ndarray]:
    """For each query point, the Euclidean distance to and index of the nearest reference point.

    Args:
        query: [N, 3] points; reference: [M, 3] points (M >= 1).
        device: None uses a k-d tree on the CPU (scipy, exact in float64); a torch device uses
            exhaustive ``torch.cdist`` in blocks of about ``chunk_elements`` distances (float64 on
            the CPU, float32 elsewhere), without the matrix-product shortcut, so small distances
            keep their precision.

    Returns:
        distances [N] float64 and indices [N] int64 into ``reference``.
    """
    query = np.asarray(query, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if len(reference) == 0:
        raise ValueError("nearest_neighbors: the reference set is empty")
    if len(query) == 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    if device is None:
        from scipy.spatial import cKDTree

        distances, indices = cKDTree(reference).query(query, k=1)
        return np.asarray(distances, dtype=np.float64), np.asarray(indices, dtype=np.int64)
    device = torch.device(device)
    dtype = torch.float64 if device.type == "cpu" else torch.float32
    ref = torch.as_tensor(reference, dtype=dtype, device=device)
    qry = torch.as_tensor(query, dtype=dtype, device=device)
    rows = max(1, chunk_elements // len(ref))
    distances, indices = [], []
    for start in range(0, len(qry), rows):
        block = torch.cdist(qry[start:start + rows], ref, compute_mode="donot_use_mm_for_euclid_dist")
        best, where = block.min(dim=1)
        distances.append(best.double().cpu())
        indices.append(where.cpu())
    return torch.cat(distances).numpy(), torch.cat(indices).numpy().astype(np.int64)


def chamfer_from_distances(pred_to_gt: np.ndarray, gt_to_pred: np.ndarray) -> float:
    """``(mean(pred_to_gt) + mean(gt_to_pred)) / 2`` of plain (unsquared) nearest distances."""
    return 0.5 * (float(np.mean(pred_to_gt)) + float(np.mean(gt_to_pred)))


def f_score_from_distances(pred_to_gt: np.ndarray, gt_to_pred: np.ndarray, threshold: float) -> float:
    """``2PR / (P + R)`` with P, R the shares of directed distances ``<= threshold`` (0 when P + R = 0)."""
    precision = float(np.mean(pred_to_gt <= threshold))
    recall = float(np.mean(gt_to_pred <= threshold))
    if precision + recall == 0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


def chamfer_distance(pred_points: np.ndarray, gt_points: np.ndarray,
                     device: str | torch.device | None = None) -> float:
    """Chamfer distance of two point sets: the mean of both directed mean nearest distances (unsquared)."""
    return chamfer_from_distances(nearest_neighbors(pred_points, gt_points, device)[0],
                                  nearest_neighbors(gt_points, pred_points, device)[0])


def f_score(pred_points: np.ndarray, gt_points: np.ndarray, threshold: float,
            device: str | torch.device | None = None) -> float:
    """F-score of two point sets at distance ``threshold`` (see :func:`f_score_from_distances`)."""
    return f_score_from_distances(nearest_neighbors(pred_points, gt_points, device)[0],
                                  nearest_neighbors(gt_points, pred_points, device)[0], threshold)


@dataclass(frozen=True)
class SurfaceMetrics:
    """Scores of one prediction against its ground truth (see the module docstring).

    Attributes:
        chamfer: mean of the two directed mean nearest distances (unsquared; normalized units).
        f_score_1pct, f_score_5pct: F-score at 1% / 5% of the ground truth's bounding-box diagonal.
        color_error: mean absolute sRGB [0, 1] difference, ground-truth sample -> nearest prediction.
    """

    chamfer: float
    f_score_1pct: float
    f_score_5pct: float
    color_error: float


def compare_samples(pred: SurfaceSamples, gt: SurfaceSamples, gt_diagonal: float,
                    device: str | torch.device | None = None) -> SurfaceMetrics:
    """All metrics of ``pred`` against ``gt`` from their samples (one nearest search per direction)."""
    pred_to_gt, _ = nearest_neighbors(pred.points, gt.points, device)
    gt_to_pred, nearest_pred = nearest_neighbors(gt.points, pred.points, device)
    f1, f5 = (f_score_from_distances(pred_to_gt, gt_to_pred, fraction * gt_diagonal)
              for fraction in F_SCORE_FRACTIONS)
    color_error = float(np.mean(np.abs(gt.colors - pred.colors[nearest_pred])))
    return SurfaceMetrics(chamfer_from_distances(pred_to_gt, gt_to_pred), f1, f5, color_error)


@dataclass(frozen=True)
class SurfaceReference:
    """A canonically normalized mesh's samples and bounding-box diagonal, reused across methods."""

    samples: SurfaceSamples
    diagonal: float


def surface_reference(mesh: TriangleMesh, num_points: int, seed: int) -> SurfaceReference:
    """Normalize ``mesh`` canonically and sample it with a fresh generator seeded by ``seed``."""
    normalized = canonical_normalize(mesh)
    samples = sample_surface(normalized, num_points, np.random.default_rng(seed))
    return SurfaceReference(samples, bounding_box_diagonal(normalized))


def compare_meshes(pred: TriangleMesh, gt: TriangleMesh, num_points: int, seed: int,
                   device: str | torch.device | None = None) -> SurfaceMetrics:
    """Normalize both meshes canonically, sample each with a generator seeded by ``seed``, compare.

    Identical meshes therefore get identical samples: Chamfer 0, F-scores 1, colour error 0.
    """
    gt_ref = surface_reference(gt, num_points, seed)
    pred_ref = surface_reference(pred, num_points, seed)
    return compare_samples(pred_ref.samples, gt_ref.samples, gt_ref.diagonal, device)
