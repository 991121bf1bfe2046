"""Differentiable mask, depth and normal maps of a triangle mesh, for rendered training losses.

What the maps are (one camera, ``size x size`` pixels):

- ``mask``: coverage in [0, 1].
- ``depth``: camera-space depth (distance along the viewing axis), 0 on background.
- ``normal``: the flat face normal in camera space (OpenGL axes: x right, y up, z towards the
  viewer), flipped to face the camera (meshes from the dual grid are not consistently
  oriented), stored as ``(n + 1) / 2``; background 0.5.

Gradients reach the vertex positions in two ways:

1. Inside each triangle, through the differentiable barycentrics and depth of
   :func:`backend.render.raster.rasterize` (depth) and the face normals (normal).
2. At silhouettes, through :func:`antialias_silhouettes`: the visibility pass alone gives a
   binary mask whose edges carry no gradient, so each pair of neighbouring pixels with one
   covered and one background centre is blended by where the mesh's silhouette edge crosses
   the segment between the two centres (a one-dimensional box filter, the idea of nvdiffrast's
   analytic antialiasing; the segment is followed across interior edges to the silhouette).
   The crossing moves with the edge's vertices, so the mask, depth and normal near a
   silhouette are differentiable in them. Boundaries where one surface occludes another (both
   pixels covered) are not blended: their gradient is the interior one only.

Near and far planes clip per pixel (``camera.near`` / ``camera.far``), so a near plane inside
the object shows the cut-open interior, as the reference's loss cameras do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .cameras import Camera
from .raster import _edge, _to_pixels, project, rasterize

BACKGROUND_NORMAL = 0.5


@dataclass
class GeometryMaps:
    """Maps of one view (see the module docstring); all ``[H, W]`` or ``[H, W, 3]``, float."""

    mask: torch.Tensor
    depth: torch.Tensor
    normal: torch.Tensor


def _camera_matrices(camera: Camera, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """World -> clip and world -> camera [4, 4] matrices in ``like``'s dtype and device."""
    to_clip = torch.as_tensor(camera.full_projection(), dtype=like.dtype, device=like.device)
    to_camera = torch.as_tensor(camera.world_to_camera(), dtype=like.dtype, device=like.device)
    return to_clip, to_camera


def camera_facing_normals(verts_camera: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """[F, 3] unit face normals in camera space, each flipped to point towards the camera (at 0)."""
    tri = verts_camera[faces]  # [F, 3, 3]
    n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # [F, 3]
    n = n / n.norm(dim=1, keepdim=True).clamp_min(1e-20)
    away = (n * tri[:, 0]).sum(1, keepdim=True) > 0  # the camera looks from the origin
    return torch.where(away, -n, n)


MAX_HOPS = 4  # interior edges a one-pixel segment may cross before it reaches the silhouette


def edge_neighbours(faces: torch.Tensor) -> torch.Tensor:
    """[F, 3] int64: the face across edge k (vertices k, k+1) of each face, -1 on boundary edges.

    Winding-independent (edges match by their unordered vertex pair); where more than two faces
    share an edge, faces pair up in sorted order.
    """
    faces = faces.long()
    a, b = faces, faces[:, [1, 2, 0]]
    num = int(faces.max()) + 1 if faces.numel() else 1
    key = (torch.minimum(a, b) * num + torch.maximum(a, b)).reshape(-1)  # [3F]
    order = torch.argsort(key)
    pair = torch.nonzero(key[order][1:] == key[order][:-1]).squeeze(1)
    neighbour = torch.full_like(key, -1)
    neighbour[order[pair]] = torch.div(order[pair + 1], 3, rounding_mode="floor")
    neighbour[order[pair + 1]] = torch.div(order[pair], 3, rounding_mode="floor")
    return neighbour.view(-1, 3)


def _segment_exit(tri_px: torch.Tensor, start: torch.Tensor, end: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the segment ``start -> end`` leaves each (convex) triangle it passes through.

    Returns t [M] (the exit is ``start + t (end - start)``; > 1 if ``end`` is inside) and the
    exit edge [M] in 0..2 (edge k joins corners k and k+1).
    """
    t_exit = torch.full_like(start[:, 0], float("inf"))
    edge = torch.zeros_like(start[:, 0], dtype=torch.long)
    for k in range(3):
        a, b, c = tri_px[:, k], tri_px[:, (k + 1) % 3], tri_px[:, (k + 2) % 3]
        inward = torch.sign(_edge(a, b, c))  # edge functions are positive inside
        e_start, e_end = _edge(a, b, start) * inward, _edge(a, b, end) * inward
        leaving = e_end < e_start
        t_k = e_start / torch.where(leaving, e_start - e_end, torch.ones_like(e_end))
        better = leaving & (t_k < t_exit)
        t_exit, edge = torch.where(better, t_k, t_exit), torch.where(better, torch.full_like(edge, k), edge)
    return t_exit, edge


def _silhouette_crossing(px: torch.Tensor, faces: torch.Tensor, neighbours: torch.Tensor,
                         face: torch.Tensor, start: torch.Tensor, end: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the segment from a covered pixel centre to a background one crosses the silhouette.

    Starting in the covering ``face``, the segment is followed across interior edges (at most
    :data:`MAX_HOPS`) until it leaves through a silhouette edge: a boundary edge, or one whose
    two faces fold onto the same side of it on screen. Returns t [M] in [0, 1] and valid [M]
    (False where the segment never reaches a silhouette, e.g. when ``end`` was cut away by the
    near plane while still inside the triangle).
    """
    t = torch.zeros_like(start[:, 0])
    valid = torch.zeros_like(face, dtype=torch.bool)
    active = torch.ones_like(valid)
    current = face.clone()
    for _ in range(MAX_HOPS + 1):
        tri = faces[current]  # [M, 3]
        t_exit, edge = _segment_exit(px[tri], start, end)
        inside_end = ~(t_exit <= 1)
        across = neighbours[current, edge]  # [M]
        va = tri.gather(1, edge[:, None]).squeeze(1)
        vb = tri.gather(1, ((edge + 1) % 3)[:, None]).squeeze(1)
        vc = tri.gather(1, ((edge + 2) % 3)[:, None]).squeeze(1)
        # The neighbour's corner off the shared edge; on a boundary edge (no neighbour) any valid
        # vertex does, since ``across < 0`` already makes it a silhouette.
        neighbour = faces[across.clamp_min(0)]  # [M, 3]
        off_edge = (neighbour != va[:, None]) & (neighbour != vb[:, None])
        other = neighbour.gather(1, off_edge.to(torch.uint8).argmax(1, keepdim=True)).squeeze(1)
        other = torch.where((across >= 0) & off_edge.any(1), other, vc)
        side_c = _edge(px[va], px[vb], px[vc])
        side_o = _edge(px[va], px[vb], px[other])
        silhouette = (across < 0) | (side_c * side_o > 0)
        done = active & ~inside_end & silhouette
        t = torch.where(done, t_exit, t)
        valid = valid | done
        active = active & ~inside_end & ~silhouette
        current = torch.where(active, across, current)
        if not bool(active.any()):
            break
    return t.clamp(0, 1), valid


def antialias_silhouettes(image: torch.Tensor, face_id: torch.Tensor, verts_clip: torch.Tensor,
                          faces: torch.Tensor, neighbours: torch.Tensor | None = None) -> torch.Tensor:
    """Blend ``image [H, W, C]`` across mesh silhouettes so the edges carry vertex gradients.

    For every horizontally or vertically adjacent pixel pair with one covered and one
    background centre, the silhouette crosses the segment between the centres at ``t`` (0 at
    the covered centre, 1 at the other; :func:`_silhouette_crossing`). Treating each pixel as
    a box of width 1, the covered pixel keeps ``min(1, t + 0.5)`` of its value and the
    background pixel receives ``max(0, t - 0.5)`` of it; both are linear in ``t``.

    Args:
        image: [H, W, C] rendered values (covered pixels) and background values.
        face_id: [H, W] int64 visible triangle per pixel, -1 for background.
        verts_clip: [V, 4] clip-space vertices (gradients flow to them).
        faces: [F, 3] vertex indices.
        neighbours: :func:`edge_neighbours` of ``faces`` if already known.

    Returns:
        [H, W, C] image with the silhouette blend added.
    """
    height, width, channels = image.shape
    faces = faces.long()
    neighbours = edge_neighbours(faces) if neighbours is None else neighbours
    px, _ = _to_pixels(verts_clip, height, width)  # [V, 2]
    flat = image.reshape(height * width, channels)
    fid = face_id.reshape(-1)
    index = torch.arange(height * width, device=image.device).view(height, width)
    targets, deltas = [], []
    for first, second in ((index[:, :-1], index[:, 1:]), (index[:-1, :], index[1:, :])):
        a, b = first.reshape(-1), second.reshape(-1)
        edge = (fid[a] >= 0) != (fid[b] >= 0)
        a, b = a[edge], b[edge]
        inner = torch.where(fid[a] >= 0, a, b)  # [M] covered pixel
        outer = torch.where(fid[a] >= 0, b, a)  # [M] background pixel

        def centre(i: torch.Tensor) -> torch.Tensor:
            row = torch.div(i, width, rounding_mode="floor")
            return torch.stack([i - row * width, row], -1).to(px.dtype) + 0.5

        t, valid = _silhouette_crossing(px, faces, neighbours, fid[inner], centre(inner), centre(outer))
        inner, outer, t = inner[valid], outer[valid], t[valid, None]
        step = flat[inner] - flat[outer]  # [M, C]: covered value minus background value
        targets += [outer, inner]
        deltas += [(t - 0.5).clamp_min(0) * step, -(0.5 - t).clamp_min(0) * step]
    if not targets:
        return image
    out = flat.index_add(0, torch.cat(targets), torch.cat(deltas).to(flat.dtype))
    return out.view(height, width, channels)


def empty_maps(size: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
               ) -> GeometryMaps:
    """The maps of a view where nothing is visible."""
    zeros = torch.zeros(size, size, device=device, dtype=dtype)
    return GeometryMaps(zeros, zeros.clone(), torch.full((size, size, 3), BACKGROUND_NORMAL, device=device,
                                                         dtype=dtype))


def render_geometry_maps(vertices: torch.Tensor, faces: torch.Tensor, camera: Camera, size: int,
                         antialias: bool = True) -> GeometryMaps:
    """Mask, depth and normal maps of the triangles ``faces [F, 3]`` over ``vertices [V, 3]``.

    Args:
        vertices: [V, 3] world positions (gradients flow to them; use float32 or float64).
        faces: [F, 3] vertex indices (any winding).
        camera: the view (square aspect); its near and far planes clip per pixel.
        size: image side in pixels.
        antialias: blend across silhouettes (:func:`antialias_silhouettes`); without it the
            mask has no gradient.

    Returns:
        :class:`GeometryMaps` in ``vertices``' dtype.
    """
    if faces.numel() == 0:
        return empty_maps(size, vertices.device, vertices.dtype)
    faces = faces.long()
    to_clip, to_camera = _camera_matrices(camera, vertices)
    clip = project(vertices, to_clip)  # [V, 4]
    rast = rasterize(clip, faces, size, size, depth_range=(camera.near, camera.far))
    verts_camera = project(vertices, to_camera)[:, :3]  # [V, 3]
    normals = camera_facing_normals(verts_camera, faces)  # [F, 3]
    covered = rast.mask[..., None]  # [H, W, 1]
    normal = torch.where(covered, normals[rast.face_id.clamp_min(0)], torch.zeros_like(normals[:1]))
    maps = torch.cat([covered.to(vertices.dtype), rast.depth[..., None], normal], -1)  # [H, W, 5]
    if antialias:
        maps = antialias_silhouettes(maps, rast.face_id, clip, faces)
    return GeometryMaps(maps[..., 0], maps[..., 1], (maps[..., 2:5] + 1) / 2)
