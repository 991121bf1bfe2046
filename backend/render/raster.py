"""A z-buffered triangle rasterizer in plain torch (CPU or CUDA).

Two passes:

1. Visibility (no gradients, float64): every triangle's bounding box of pixel centres is
   enumerated in chunks; edge functions give screen-space barycentrics; pixels whose
   centre lies inside (or on an edge of) the triangle become candidates with their
   perspective-correct depth; ``scatter_reduce(amin)`` keeps the nearest candidate per
   pixel (equal depths: the lowest face id wins, so the result is deterministic).
2. Attributes (differentiable): with the winning face ids fixed, barycentrics and depth are
   recomputed from the vertex positions, so gradients reach the vertices through anything
   interpolated with them (depth, normals, UVs). There is no antialiasing, so silhouette
   positions themselves carry no gradient.

Input is clip space (see :mod:`backend.render.cameras`): ``w > 0`` in front of the camera.
Triangles with a vertex at ``w <= 0`` (behind the camera) are dropped rather than clipped;
the data-preparation cameras never get that close to the unit cube. Both windings are
rasterized (no back-face culling).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

CHUNK_CANDIDATES = 1 << 22  # candidate pixels per chunk (~ 300 MB of float64 temporaries)
_MIN_W = 1e-9


@dataclass
class Rasterization:
    """Per-pixel result of :func:`rasterize` for an ``H x W`` image.

    Attributes:
        face_id: [H, W] int64 index of the visible triangle, -1 for background.
        bary: [H, W, 3] perspective-correct barycentric weights of the triangle's vertices
            (zero for background); differentiable w.r.t. the clip-space vertices.
        depth: [H, W] camera-space depth (clip ``w``, the distance along the viewing axis),
            zero for background; differentiable.
    """

    face_id: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """[H, W] bool: pixels covered by a triangle."""
        return self.face_id >= 0


def _to_pixels(clip: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip [..., 4] -> pixel coordinates [..., 2] (x right, y down, pixel centres at +0.5) and w [...]."""
    w = clip[..., 3]
    x = (clip[..., 0] / w + 1.0) * (0.5 * width)
    y = (1.0 - clip[..., 1] / w) * (0.5 * height)
    return torch.stack([x, y], -1), w


def _edge(a: torch.Tensor, b: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Twice the signed area of triangle (a, b, p); all [..., 2]."""
    ab, ap = b - a, p - a
    return ab[..., 0] * ap[..., 1] - ab[..., 1] * ap[..., 0]


def _screen_barycentrics(tri_px: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
    """Screen-space barycentrics [M, 3] of points px [M, 2] in triangles tri_px [M, 3, 2]."""
    area2 = _edge(tri_px[:, 0], tri_px[:, 1], tri_px[:, 2])
    b0 = _edge(tri_px[:, 1], tri_px[:, 2], px) / area2
    b1 = _edge(tri_px[:, 2], tri_px[:, 0], px) / area2
    return torch.stack([b0, b1, 1.0 - b0 - b1], -1)


def _perspective(bary_screen: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Screen barycentrics [M, 3] and vertex w [M, 3] -> perspective-correct barycentrics and depth.

    1/w is affine in screen space, so depth = 1 / sum(b_i / w_i) and the true weights are
    (b_i / w_i) * depth.
    """
    q = bary_screen / w
    depth = 1.0 / q.sum(-1)
    return q * depth[:, None], depth


@torch.no_grad()
def visible_faces(verts_clip: torch.Tensor, faces: torch.Tensor, height: int, width: int,
                  chunk_candidates: int = CHUNK_CANDIDATES,
                  depth_range: tuple[float, float] | None = None) -> torch.Tensor:
    """[H, W] int64 id of the nearest triangle covering each pixel centre (-1: none).

    With ``depth_range = (near, far)``, a triangle covers only the pixel centres where its
    depth lies in that range: the per-pixel equivalent of clipping at the near and far planes.
    """
    device = verts_clip.device
    faces = faces.long()
    px_v, w_v = _to_pixels(verts_clip.detach().double(), height, width)
    tri = px_v[faces]  # [F, 3, 2]
    tri_w = w_v[faces]  # [F, 3]
    j0 = torch.ceil(tri[..., 0].amin(1) - 0.5).clamp(0, width - 1).long()
    j1 = torch.floor(tri[..., 0].amax(1) - 0.5).clamp(-1, width - 1).long()
    i0 = torch.ceil(tri[..., 1].amin(1) - 0.5).clamp(0, height - 1).long()
    i1 = torch.floor(tri[..., 1].amax(1) - 0.5).clamp(-1, height - 1).long()
    nx, ny = (j1 - j0 + 1).clamp_min(0), (i1 - i0 + 1).clamp_min(0)
    area2 = _edge(tri[:, 0], tri[:, 1], tri[:, 2])
    usable = (area2.abs() > 1e-12) & (tri_w > _MIN_W).all(1) & torch.isfinite(tri).all(2).all(1)
    count = torch.where(usable, nx * ny, torch.zeros_like(nx))

    cand_pix, cand_face, cand_depth = [], [], []
    cum = torch.cumsum(count, 0)
    start, num_faces = 0, len(count)
    while start < num_faces:
        base = int(cum[start - 1]) if start > 0 else 0
        stop = max(int(torch.searchsorted(cum, base + chunk_candidates, right=True)), start + 1)
        ids = torch.arange(start, stop, device=device)
        c = count[start:stop]
        start = stop
        if int(c.sum()) == 0:
            continue
        f = torch.repeat_interleave(ids, c)
        offsets = torch.cumsum(c, 0) - c
        local = torch.arange(len(f), device=device) - torch.repeat_interleave(offsets, c)
        jj = j0[f] + local % nx[f]
        ii = i0[f] + torch.div(local, nx[f], rounding_mode="floor")
        centre = torch.stack([jj + 0.5, ii + 0.5], -1).double()
        b = _screen_barycentrics(tri[f], centre)
        inside = (b >= -1e-9).all(-1)
        if not bool(inside.any()):
            continue
        f, b, pix = f[inside], b[inside], ii[inside] * width + jj[inside]
        _, depth = _perspective(b, tri_w[f])
        if depth_range is not None:
            kept = (depth >= depth_range[0]) & (depth <= depth_range[1])
            f, depth, pix = f[kept], depth[kept], pix[kept]
        cand_pix.append(pix)
        cand_face.append(f)
        cand_depth.append(depth)

    face_img = torch.full((height * width,), -1, dtype=torch.int64, device=device)
    if not cand_pix:
        return face_img.view(height, width)
    pix, face, depth = torch.cat(cand_pix), torch.cat(cand_face), torch.cat(cand_depth)
    zbuf = torch.full((height * width,), float("inf"), dtype=torch.float64, device=device)
    zbuf.scatter_reduce_(0, pix, depth, reduce="amin")
    win = depth <= zbuf[pix]
    best = torch.full((height * width,), num_faces, dtype=torch.int64, device=device)
    best.scatter_reduce_(0, pix[win], face[win], reduce="amin")
    face_img = torch.where(best < num_faces, best, face_img)
    return face_img.view(height, width)


def barycentrics_at(verts_clip: torch.Tensor, faces: torch.Tensor, face_id: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable perspective-correct barycentrics and depth for fixed face ids.

    Args:
        verts_clip: [V, 4] clip-space vertices (any float dtype; gradients flow to them).
        faces: [F, 3] vertex indices.
        face_id: [H, W] int64 triangle per pixel, -1 for background.

    Returns:
        bary [H, W, 3] and depth [H, W] in ``verts_clip``'s dtype, zero on background.
    """
    height, width = face_id.shape
    flat = face_id.reshape(-1)
    pix = torch.nonzero(flat >= 0).squeeze(1)
    bary = verts_clip.new_zeros(height * width, 3)
    depth = verts_clip.new_zeros(height * width)
    if len(pix):
        tri = faces.long()[flat[pix]]  # [M, 3]
        px_v, w_v = _to_pixels(verts_clip, height, width)
        ii = torch.div(pix, width, rounding_mode="floor")
        jj = pix - ii * width
        centre = torch.stack([jj + 0.5, ii + 0.5], -1).to(verts_clip.dtype)
        b_screen = _screen_barycentrics(px_v[tri], centre)
        b, d = _perspective(b_screen, w_v[tri])
        bary = bary.index_put((pix,), b)
        depth = depth.index_put((pix,), d)
    return bary.view(height, width, 3), depth.view(height, width)


def rasterize(verts_clip: torch.Tensor, faces: torch.Tensor, height: int, width: int,
              chunk_candidates: int = CHUNK_CANDIDATES,
              depth_range: tuple[float, float] | None = None) -> Rasterization:
    """Rasterize ``faces [F, 3]`` with clip-space vertices ``verts_clip [V, 4]`` into ``height x width``.

    Face ids are found without gradients; barycentrics and depth are then recomputed
    differentiably (see the module docstring). ``depth_range`` clips per pixel (see
    :func:`visible_faces`).
    """
    if verts_clip.ndim != 2 or verts_clip.shape[1] != 4:
        raise ValueError(f"verts_clip must be [V, 4], got {tuple(verts_clip.shape)}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be [F, 3], got {tuple(faces.shape)}")
    face_id = visible_faces(verts_clip, faces, height, width, chunk_candidates, depth_range)
    bary, depth = barycentrics_at(verts_clip, faces, face_id)
    return Rasterization(face_id, bary, depth)


def interpolate(attributes: torch.Tensor, faces: torch.Tensor, rast: Rasterization) -> torch.Tensor:
    """Per-vertex ``attributes [V, C]`` -> per-pixel ``[H, W, C]`` (zero on background)."""
    height, width = rast.face_id.shape
    fid = rast.face_id.clamp_min(0)
    corner = attributes[faces.long()[fid]]  # [H, W, 3, C]
    out = (corner * rast.bary[..., None].to(attributes.dtype)).sum(-2)
    return torch.where(rast.mask[..., None], out, torch.zeros_like(out))


def project(verts_world: torch.Tensor, world_to_clip: torch.Tensor) -> torch.Tensor:
    """World positions [V, 3] -> clip space [V, 4] with a [4, 4] matrix (differentiable)."""
    homo = torch.cat([verts_world, torch.ones_like(verts_world[:, :1])], 1)
    return homo @ world_to_clip.to(verts_world).T
