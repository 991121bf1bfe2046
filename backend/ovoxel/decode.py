"""O-Voxel -> triangles: flexible dual contouring with the split-weight quad rule.

The core (:func:`flexible_dual_contour`) is pure torch and runs on any device;
:func:`ovoxel_to_mesh` wraps it for an :class:`OVoxel` and applies the optional clean-ups.
"""

from __future__ import annotations

import torch

from backend.geometry import TriangleMesh

from .lookup import CoordIndex
from .types import OVoxel

# For each axis, the offsets of the 4 voxels around the +1,+1-corner edge of a voxel, in cyclic order.
_QUAD_OFFSETS = (
    ((0, 0, 0), (0, 0, 1), (0, 1, 1), (0, 1, 0)),  # edge along x
    ((0, 0, 0), (1, 0, 0), (1, 0, 1), (0, 0, 1)),  # edge along y
    ((0, 0, 0), (0, 1, 0), (1, 1, 0), (1, 0, 0)),  # edge along z
)


def _quads(coords: torch.Tensor, intersected: torch.Tensor, index: CoordIndex) -> torch.Tensor:
    """[Q, 4] int64 voxel indices of the quads around every crossed edge with 4 active voxels."""
    out = []
    for axis in range(3):
        sel = torch.nonzero(intersected[:, axis]).squeeze(1)  # [E]
        offs = torch.tensor(_QUAD_OFFSETS[axis], device=coords.device)  # [4, 3]
        nb = coords[sel].long()[:, None, :] + offs[None]  # [E, 4, 3]
        idx = index.find(nb)  # [E, 4]
        out.append(idx[(idx >= 0).all(dim=1)])
    return torch.cat(out)


def _split(quads: torch.Tensor, verts: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Two triangles per quad: diagonal 0-2 if w0·w2 > w1·w3 (or, without weights, if its
    two triangle normals are more parallel than those of diagonal 1-3), else diagonal 1-3."""
    if weight is not None:
        w = weight.reshape(-1)[quads]  # [Q, 4]
        use02 = w[:, 0] * w[:, 2] > w[:, 1] * w[:, 3]
    else:
        p = verts[quads]  # [Q, 4, 3]

        def cos(a, b, c, d):  # |cos| between normals of triangles (a,b,c) and (a,c,d)-like pairs
            n1 = torch.linalg.cross(p[:, b] - p[:, a], p[:, c] - p[:, a])
            n2 = torch.linalg.cross(p[:, c] - p[:, a], p[:, d] - p[:, a])
            den = (n1.norm(dim=1) * n2.norm(dim=1)).clamp(min=1e-30)
            return ((n1 * n2).sum(dim=1) / den).abs()

        use02 = cos(0, 1, 2, 3) > cos(1, 2, 3, 0)
    t02 = torch.stack([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]], dim=1)  # [Q, 2, 3]
    t13 = torch.stack([quads[:, [0, 1, 3]], quads[:, [3, 1, 2]]], dim=1)
    return torch.where(use02[:, None, None], t02, t13).reshape(-1, 3)


def flexible_dual_contour(coords: torch.Tensor, dual_vertices: torch.Tensor, intersected: torch.Tensor,
                          resolution: int, *, aabb_min=(-0.5, -0.5, -0.5), voxel_size=None,
                          split_weight: torch.Tensor | None = None, drop_unreferenced: bool = True,
                          index: CoordIndex | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Triangles of a flexible dual grid, on the tensors' device.

    Args:
        coords: [N, 3] int voxel coordinates.
        dual_vertices: [N, 3] float voxel-local vertex offsets in [0, 1].
        intersected: [N, 3] bool edge flags.
        resolution: grid size.
        aabb_min: grid origin; voxel_size defaults to 1 / resolution.
        split_weight: [N] or [N, 1] positive quad split weights, or None (normal-alignment rule).
        drop_unreferenced: remove vertices no triangle uses (the reference keeps them).
        index: prebuilt :class:`CoordIndex` of ``coords``.

    Returns:
        vertices [V, 3] float32 in world units, faces [F, 3] int64. Faces are not
        consistently oriented (winding depends only on the edge axis).
    """
    dev = dual_vertices.device
    vs = 1.0 / resolution if voxel_size is None else voxel_size
    vs_t = torch.as_tensor(vs, dtype=torch.float32, device=dev)
    origin = torch.as_tensor(aabb_min, dtype=torch.float32, device=dev)
    verts = (coords.float() + dual_vertices.float()) * vs_t + origin  # [N, 3]
    index = index or CoordIndex(coords, resolution)
    quads = _quads(coords, intersected.bool(), index)  # [Q, 4]
    faces = _split(quads, verts, split_weight)  # [2Q, 3]
    if drop_unreferenced:
        # On the contouring's device (GPU in the pipeline): the numpy home of this step,
        # backend.geometry.topology.remove_unreferenced, would cost a round trip to the host.
        used = torch.zeros(verts.shape[0], dtype=torch.bool, device=dev)
        used[faces.reshape(-1)] = True
        remap = torch.cumsum(used.long(), 0) - 1
        verts, faces = verts[used], remap[faces]
    return verts, faces


def flexible_dual_contour_fan(coords: torch.Tensor, dual_vertices: torch.Tensor, intersected: torch.Tensor,
                              split_weight: torch.Tensor, resolution: int, *, aabb_min=(-0.5, -0.5, -0.5),
                              index: CoordIndex | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The training variant of :func:`flexible_dual_contour`: differentiable.

    Instead of choosing a diagonal, every quad gets a mid-vertex, the mean of its two diagonal
    midpoints weighted by ``w0 w2`` and ``w1 w3``, and four triangles fanned around it. The
    topology (which quads exist) depends only on ``coords`` and ``intersected``; vertex
    positions are differentiable in ``dual_vertices`` and, through the mid-vertices, in
    ``split_weight``, which is how a rendered loss reaches both network outputs.

    Args:
        coords: [N, 3] int voxel coordinates.
        dual_vertices: [N, 3] float voxel-local offsets (any range; the decoder's lie in
            ``(-margin, 1 + margin)``).
        intersected: [N, 3] bool edge flags.
        split_weight: [N] or [N, 1] positive weights.
        resolution: grid size; the voxel size is ``1 / resolution``.
        aabb_min: grid origin.
        index: prebuilt :class:`CoordIndex` of ``coords``.

    Returns:
        vertices [N + Q, 3] (the N dual vertices, unreferenced ones kept, then one mid-vertex
        per quad) in ``dual_vertices``' dtype, and faces [4Q, 3] int64.
    """
    dev = dual_vertices.device
    origin = torch.as_tensor(aabb_min, dtype=dual_vertices.dtype, device=dev)
    verts = (coords.to(dual_vertices.dtype) + dual_vertices) / resolution + origin  # [N, 3]
    index = index or CoordIndex(coords, resolution)
    quads = _quads(coords, intersected.bool(), index)  # [Q, 4]
    n = verts.shape[0]
    corners = verts[quads]  # [Q, 4, 3]
    w = split_weight.reshape(-1).to(verts.dtype)[quads]  # [Q, 4]
    w02, w13 = (w[:, 0] * w[:, 2])[:, None], (w[:, 1] * w[:, 3])[:, None]  # [Q, 1]
    mid02 = (corners[:, 0] + corners[:, 2]) / 2
    mid13 = (corners[:, 1] + corners[:, 3]) / 2
    mids = (w02 * mid02 + w13 * mid13) / (w02 + w13)  # [Q, 3]
    centre = torch.arange(n, n + quads.shape[0], device=dev)  # [Q]
    faces = torch.stack([torch.stack([quads[:, k], quads[:, (k + 1) % 4], centre], 1) for k in range(4)],
                        1).reshape(-1, 3)  # [4Q, 3]
    return torch.cat([verts, mids]), faces


def ovoxel_to_mesh(ov: OVoxel, *, device: str | torch.device = "cpu", drop_unreferenced: bool = True,
                   orient: bool = False, fill_holes_perimeter: float | None = None) -> TriangleMesh:
    """Extract the triangle mesh of an O-Voxel.

    Args:
        ov: the O-Voxel.
        device: where the contouring runs ("cpu", "cuda").
        drop_unreferenced: remove unused vertices.
        orient: make face orientation consistent per connected component (outward for closed ones).
        fill_holes_perimeter: if set, fill boundary loops shorter than this (world units; the
            reference uses 0.03 in the unit cube).
    """
    from backend.geometry.topology import orient_faces

    from .cleanup import fill_holes

    ov.validate()
    t = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    sw = None if ov.split_weight is None else t(ov.split_weight)
    v, f = flexible_dual_contour(t(ov.coords), t(ov.dual_vertices), t(ov.intersected), ov.resolution,
                                 aabb_min=tuple(ov.aabb[0]), voxel_size=tuple(ov.voxel_size),
                                 split_weight=sw, drop_unreferenced=drop_unreferenced)
    mesh = TriangleMesh(v.cpu().double().numpy(), f.cpu().numpy())
    if fill_holes_perimeter is not None:
        mesh = fill_holes(mesh, fill_holes_perimeter)
    if orient:
        mesh = TriangleMesh(mesh.vertices, orient_faces(mesh.vertices, mesh.faces))
    return mesh
