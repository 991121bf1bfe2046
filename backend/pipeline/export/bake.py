"""Baking in UV space: texel -> surface point -> (reprojected) attribute -> dilated texture.

Mirrors steps 4-7 of ``o_voxel.postprocess.to_glb``: interpolate the
3-D position of every covered texel, move it to the closest point of the
high-resolution reference mesh (compensates decimation; the reference uses a
BVH, here a cKDTree over triangle centroids narrows the candidates and the
exact closest point on each candidate triangle is taken), sample the attribute
volume there, and fill uncovered texels. Instead of OpenCV's Telea inpainting
the fill is a few rings of averaging dilation followed by nearest-texel
filling (an exact Euclidean distance transform) of the rest.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

AttributeFn = Callable[[np.ndarray], np.ndarray]  # points [N, 3] -> attributes [N, C]


def texel_points(vertices: np.ndarray, faces: np.ndarray, face_img: np.ndarray,
                 bary_img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3-D points of covered texels. Returns ``(points [M, 3] float64, mask [H, W] bool)``.

    Each point is ``v0 w0 + v1 w1 + v2 w2`` in float64, added in that order. Coordinates are
    gathered one axis at a time from contiguous columns: the ``[M, 3, 3]`` gather and
    reduction this replaces took ~0.8 s for 2.4M texels, this ~0.3 s, with the same bits.
    """
    mask = face_img >= 0
    texels = np.flatnonzero(mask)
    f = faces[face_img.reshape(-1)[texels]].T  # [3, M]
    w = bary_img.reshape(-1, 3)[texels].T.astype(np.float64)  # [3, M]
    columns = np.ascontiguousarray(np.asarray(vertices).T, np.float64)  # [3, V]
    pts = np.empty((3, len(texels)))
    for axis, c in enumerate(columns):
        np.multiply(c[f[0]], w[0], out=pts[axis])
        pts[axis] += c[f[1]] * w[1]
        pts[axis] += c[f[2]] * w[2]
    return np.ascontiguousarray(pts.T), mask


def closest_point_on_triangles(p, a, b, c):
    """Closest points of triangles ``(a, b, c)`` to points ``p`` (all ``[N, 3]``), by Voronoi regions.

    Accepts numpy arrays (returns numpy) or torch tensors (stays on their device).
    """
    if isinstance(p, np.ndarray):
        args = [torch.from_numpy(np.ascontiguousarray(x, np.float64)) for x in (p, a, b, c)]
        return closest_point_on_triangles(*args).numpy()
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = (ab * ap).sum(-1), (ac * ap).sum(-1)
    bp = p - b
    d3, d4 = (ab * bp).sum(-1), (ac * bp).sum(-1)
    cp = p - c
    d5, d6 = (ab * cp).sum(-1), (ac * cp).sum(-1)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    denom = va + vb + vc
    safe = torch.where(denom.abs() > 1e-30, denom, torch.ones_like(denom))
    out = a + ab * (vb / safe)[:, None] + ac * (vc / safe)[:, None]  # interior

    def ratio(num, den):  # num / den with 0 where den == 0
        return torch.where(den != 0, num / torch.where(den != 0, den, torch.ones_like(den)),
                           torch.zeros_like(num))[:, None]

    # Lower-priority regions first; later assignments win (regions are disjoint except on ties).
    on_bc = (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0)
    out = torch.where(on_bc[:, None], b + (c - b) * ratio(d4 - d3, (d4 - d3) + (d5 - d6)), out)
    on_ac = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
    out = torch.where(on_ac[:, None], a + ac * ratio(d2, d2 - d6), out)
    out = torch.where(((d6 >= 0) & (d5 <= d6))[:, None], c, out)
    on_ab = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
    out = torch.where(on_ab[:, None], a + ab * ratio(d1, d1 - d3), out)
    out = torch.where(((d3 >= 0) & (d4 <= d3))[:, None], b, out)
    out = torch.where(((d1 <= 0) & (d2 <= 0))[:, None], a, out)
    return out


class SurfaceProjector:
    """Closest points on a reference mesh: k nearest triangle centroids (cKDTree, all cores),
    then the exact point-triangle closest point for each candidate (torch, on ``device``)."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, k: int = 6, device: str = "cpu") -> None:
        tri = vertices[faces].astype(np.float64)  # [F, 3, 3]
        self.tree = cKDTree(tri.mean(1))
        self.device = torch.device(device)
        dtype = torch.float64 if self.device.type == "cpu" else torch.float32
        self.tri = torch.from_numpy(tri).to(self.device, dtype)
        self.k = min(k, len(faces))

    def project(self, points: np.ndarray, chunk: int = 1 << 19) -> np.ndarray:
        """The closest reference-surface point of each of ``points [N, 3]``."""
        return self.closest(points, chunk)[0]

    def closest(self, points: np.ndarray, chunk: int = 1 << 19) -> tuple[np.ndarray, np.ndarray]:
        """``(closest points [N, 3] float64, the reference face each lies on [N] int64)``."""
        out = np.empty_like(points, dtype=np.float64)
        out_face = np.empty(len(points), dtype=np.int64)
        for s in range(0, len(points), chunk):
            p_np = points[s:s + chunk].astype(np.float64)  # [n, 3]
            _, idx = self.tree.query(p_np, k=self.k, workers=-1)
            idx = torch.from_numpy(idx.reshape(len(p_np), self.k)).to(self.device)
            p = torch.from_numpy(p_np).to(self.device, self.tri.dtype)
            best = torch.full((len(p),), float("inf"), dtype=p.dtype, device=self.device)
            res = p.clone()
            face = idx[:, 0].clone()
            for j in range(self.k):
                t = self.tri[idx[:, j]]  # [n, 3, 3]
                q = closest_point_on_triangles(p, t[:, 0], t[:, 1], t[:, 2])
                d = ((q - p) ** 2).sum(-1)
                better = d < best
                best = torch.where(better, d, best)
                res = torch.where(better[:, None], q, res)
                face = torch.where(better, idx[:, j], face)
            out[s:s + chunk] = res.double().cpu().numpy()
            out_face[s:s + chunk] = face.cpu().numpy()
        return out, out_face


def dilate(image: np.ndarray, mask: np.ndarray, rings: int = 4, device: str = "cpu") -> np.ndarray:
    """Fill texels outside ``mask``: ``rings`` of 8-neighbour averaging, then the nearest texel.

    Each ring gives every unfilled texel that touches a filled one the mean of its filled
    3x3 neighbours, summed in float32 in a fixed order (row sums left to right, then rows top
    to bottom). Only the ring's texels are visited (a few percent of a packed atlas): the
    dense whole-image version took ~2 s of a 1M-face, 2048^2 export on 2 CPU cores, this one
    gives the same bits in a few tens of milliseconds. The rest take the value of the
    nearest filled texel (an exact Euclidean distance transform).

    Args:
        image: ``[H, W, C]`` float array; values outside ``mask`` are ignored.
        mask: ``[H, W]`` bool, True where ``image`` is valid.
        device: accepted for callers that pass one; the work runs in numpy on the CPU.
    """
    del device  # the ring work is too small to be worth a device round trip
    if mask.all() or not mask.any():
        return image.copy()
    out = np.array(image, dtype=np.float32)  # [H, W, C]; unfilled values are never read
    _fill_in_place(out, mask, rings)
    return out.astype(image.dtype, copy=False)


def _fill_in_place(out: np.ndarray, mask: np.ndarray, rings: int) -> None:
    """:func:`dilate` on a float32 ``out [H, W, C]`` itself (no copy of the image)."""
    h, w = mask.shape
    known = np.array(mask, dtype=bool)  # [H, W], grows ring by ring
    ring = np.flatnonzero(_touches(known) & ~known)  # flat texels of the first ring
    for r in range(rings):
        if not len(ring):
            break
        total, count = _neighbour_sums(out, known, ring // w, ring % w)
        out.reshape(h * w, -1)[ring] = total / np.maximum(count, np.float32(1))[:, None]
        known.reshape(-1)[ring] = True
        if r + 1 < rings:  # the next ring: unfilled neighbours of this one
            ring = _unknown_neighbours(known, ring // w, ring % w)
    if not known.all():
        ri, ci = ndimage.distance_transform_edt(~known, return_distances=False, return_indices=True)
        hole = np.flatnonzero(~known)  # filled texels are their own nearest: only holes move
        flat = out.reshape(h * w, -1)
        flat[hole] = flat[ri.reshape(-1)[hole] * w + ci.reshape(-1)[hole]]


def _touches(known: np.ndarray) -> np.ndarray:
    """``[H, W]`` True where a texel or one of its 8 neighbours is in ``known``."""
    near = known.copy()
    near[1:] |= known[:-1]
    near[:-1] |= known[1:]
    rows = near.copy()  # vertical neighbours first, then both of those shifted sideways
    near[:, 1:] |= rows[:, :-1]
    near[:, :-1] |= rows[:, 1:]
    return near


def _neighbour_sums(values: np.ndarray, known: np.ndarray, ii: np.ndarray,
                    jj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sums of ``values [H, W, C]`` and of ``known`` over the 3x3 neighbourhood of texels ``(ii, jj)``.

    Texels outside the image or ``known`` add zero; float32, added as a separable box sum over
    a zero-filled image adds them (each row left + centre + right, then top + middle + bottom
    rows), so results match it bit for bit.
    """
    h, w = known.shape
    total = count = None
    for di in (-1, 0, 1):
        row_total = row_count = None
        for dj in (-1, 0, 1):
            i, j = ii + di, jj + dj
            inside = (i >= 0) & (i < h) & (j >= 0) & (j < w)
            i, j = np.clip(i, 0, h - 1), np.clip(j, 0, w - 1)
            use = inside & known[i, j]
            v = np.where(use[:, None], values[i, j], np.float32(0))  # [N, C]
            k = use.astype(np.float32)  # [N]
            row_total = v if row_total is None else row_total + v
            row_count = k if row_count is None else row_count + k
        total = row_total if total is None else total + row_total
        count = row_count if count is None else count + row_count
    return total, count


def _unknown_neighbours(known: np.ndarray, ii: np.ndarray, jj: np.ndarray) -> np.ndarray:
    """Sorted flat indices of the texels outside ``known`` among the 8 neighbours of ``(ii, jj)``."""
    h, w = known.shape
    found = []
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            i, j = ii + di, jj + dj
            inside = (i >= 0) & (i < h) & (j >= 0) & (j < w)
            flat = i[inside] * w + j[inside]
            found.append(flat[~known.reshape(-1)[flat]])
    return np.unique(np.concatenate(found))


def bake(vertices: np.ndarray, faces: np.ndarray, face_img: np.ndarray, bary_img: np.ndarray,
         attributes: AttributeFn, reference: SurfaceProjector | None = None,
         rings: int = 4, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Bake ``attributes`` into a texture.

    Args:
        vertices, faces: the mesh that was rasterized (in the attribute function's frame).
        face_img, bary_img: the rasterizer's output (numpy).
        attributes: maps surface points ``[M, 3]`` to values ``[M, C]``.
        reference: if given, texel points are first moved onto this high-resolution surface.
        device: where the dilation runs (torch device string).

    Returns:
        ``(texture [H, W, C] float32 with every texel filled, coverage mask [H, W])``.
    """
    pts, mask = texel_points(vertices, faces, face_img, bary_img)
    if reference is not None and len(pts):
        pts = reference.project(pts)
    return bake_points(pts, mask, attributes, rings, device)


def bake_points(points: np.ndarray, mask: np.ndarray, attributes: AttributeFn, rings: int = 4,
                device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Bake ``attributes`` sampled at ``points [M, 3]``, the surface points of the ``M`` texels where
    ``mask [H, W]`` is True (row-major order); returns what :func:`bake` returns."""
    del device  # see dilate
    vals = attributes(points).astype(np.float32, copy=False)  # [M, C]
    tex = np.zeros((*mask.shape, vals.shape[1]), np.float32)
    tex.reshape(-1, vals.shape[1])[np.flatnonzero(mask)] = vals
    if mask.any() and not mask.all():
        _fill_in_place(tex, mask, rings)  # the texture is ours: no copy, as dilate would make
    return tex, mask
