"""UV-space triangle rasterization: which face covers each texel, and where.

Two back ends with one result format:

- :func:`rasterize_uv` (ours, MIT): vectorised torch; every triangle's bounding
  box of texel centres is enumerated in chunks, barycentrics come from edge
  functions, and texels whose centre lies inside (or on an edge) are written.
  Runs on CPU or GPU. This is the licence-clean default path.
- :func:`rasterize_uv_nvdiffrast`: NVIDIA's nvdiffrast (non-commercial licence)
  when it is installed and can run on CUDA (``rasterizer="auto"`` prefers it there).

Conventions: ``uvs`` follow glTF (texel column = u * W, texel row = v * H, row 0
at the top); texel ``(i, j)`` has its centre at ``((j + 0.5) / W, (i + 0.5) / H)``.
Output: ``face [H, W]`` int64 (-1 where uncovered) and ``bary [H, W, 3]`` float32
weights of the face's three vertices. Where triangles overlap, a later face wins.
"""

from __future__ import annotations

import functools
import logging

import torch

logger = logging.getLogger(__name__)

CHUNK_TEXELS = 1 << 24  # candidate texels enumerated per chunk (memory ~ 0.5 GB on CPU)


def rasterize_uv(uvs: torch.Tensor, faces: torch.Tensor, height: int, width: int,
                 chunk_texels: int = CHUNK_TEXELS) -> tuple[torch.Tensor, torch.Tensor]:
    """Rasterize ``faces [F, 3]`` at ``uvs [V, 2]`` into a ``height x width`` texel grid."""
    device = uvs.device
    p = uvs.double() * torch.tensor([width, height], dtype=torch.float64, device=device)  # [V, 2] px
    tri = p[faces.long()]  # [F, 3, 2]
    # Texel-centre index ranges: centre c = j + 0.5 lies in [min, max] <=> j in [ceil(min-.5), floor(max-.5)].
    j0 = torch.ceil(tri[..., 0].amin(1) - 0.5).clamp(0, width - 1).long()
    j1 = torch.floor(tri[..., 0].amax(1) - 0.5).clamp(-1, width - 1).long()
    i0 = torch.ceil(tri[..., 1].amin(1) - 0.5).clamp(0, height - 1).long()
    i1 = torch.floor(tri[..., 1].amax(1) - 0.5).clamp(-1, height - 1).long()
    nx, ny = (j1 - j0 + 1).clamp_min(0), (i1 - i0 + 1).clamp_min(0)
    # Twice the signed area; degenerate triangles cover nothing.
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    area2 = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]  # [F]
    count = torch.where(area2.abs() > 1e-12, nx * ny, torch.zeros_like(nx))

    face_img = torch.full((height * width,), -1, dtype=torch.int64, device=device)
    bary_img = torch.zeros((height * width, 3), dtype=torch.float32, device=device)
    cum = torch.cumsum(count, 0)
    start = 0
    while start < len(count):
        base = int(cum[start - 1]) if start > 0 else 0
        stop = int(torch.searchsorted(cum, base + chunk_texels, right=True))
        stop = max(stop, start + 1)
        _raster_chunk(tri, area2, j0, i0, nx, count, start, stop, width, face_img, bary_img)
        start = stop
    return face_img.view(height, width), bary_img.view(height, width, 3)


def _raster_chunk(tri, area2, j0, i0, nx, count, start, stop, width, face_img, bary_img) -> None:
    ids = torch.arange(start, stop, device=tri.device)
    c = count[start:stop]
    if int(c.sum()) == 0:
        return
    f = torch.repeat_interleave(ids, c)  # [M] face of each candidate texel
    offsets = torch.cumsum(c, 0) - c
    local = torch.arange(len(f), device=tri.device) - torch.repeat_interleave(offsets, c)  # [M]
    jj = j0[f] + local % nx[f]
    ii = i0[f] + torch.div(local, nx[f], rounding_mode="floor")
    px = torch.stack([jj + 0.5, ii + 0.5], -1).double()  # [M, 2]
    t = tri[f]  # [M, 3, 2]

    def edge(a, b):  # twice the signed area of (a, b, px)
        return (b[:, 0] - a[:, 0]) * (px[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (px[:, 0] - a[:, 0])

    a2 = area2[f]
    w0 = edge(t[:, 1], t[:, 2]) / a2
    w1 = edge(t[:, 2], t[:, 0]) / a2
    w2 = 1.0 - w0 - w1
    eps = -1e-9
    inside = (w0 >= eps) & (w1 >= eps) & (w2 >= eps)
    flat = (ii * width + jj)[inside]
    face_img[flat] = f[inside]
    bary_img[flat] = torch.stack([w0, w1, w2], -1)[inside].float()


@functools.cache
def _expose_nvdiffrast_build_dir() -> None:
    """Put the folder nvdiffrast compiles its plugin into on ``sys.path``.

    nvdiffrast builds the plugin with ``torch.utils.cpp_extension.load`` and then imports
    it by module name. Recent torch loaders no longer register that module or its folder,
    so the import failed on torch 2.11 ("No module named nvdiffrast_plugin_*") even though
    the build had succeeded, and every process paid the ~20 s build for nothing.
    """
    import re
    import sys

    import nvdiffrast
    from torch.utils import cpp_extension

    # The name nvdiffrast gives its plugin (ops.py: version and torch version, sanitised).
    name = re.sub(r"\W|^(?=\d)", "_", f"nvdiffrast_plugin_{nvdiffrast.__version__}_torch{torch.__version__}")
    folder = cpp_extension._get_build_directory(name, verbose=False)
    if folder not in sys.path:
        sys.path.append(folder)


@functools.cache
def _nvdiffrast_context():
    """The CUDA rasterizer context, or None (reason logged once) when nvdiffrast can't run here.

    Probed once per process: a failed probe costs a plugin build attempt (~20 s).
    Export must fall back to our rasterizer rather than fail, so availability means
    "a context could be made".
    """
    if not torch.cuda.is_available():
        return None
    try:
        import nvdiffrast.torch as dr
    except ImportError:
        return None
    try:
        _expose_nvdiffrast_build_dir()
        return dr.RasterizeCudaContext()
    except Exception as err:  # noqa: BLE001 - any failure means: use our rasterizer
        logger.warning("nvdiffrast unusable (%s); using our own rasterizer", err)
        return None


def nvdiffrast_available() -> bool:
    """True when nvdiffrast is installed, CUDA is present and its plugin loads."""
    return _nvdiffrast_context() is not None


def rasterize_uv_nvdiffrast(uvs: torch.Tensor, faces: torch.Tensor, height: int,
                            width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as :func:`rasterize_uv`, via nvdiffrast on CUDA (non-commercial licence)."""
    import nvdiffrast.torch as dr

    uv = uvs.cuda().float()
    # Clip space: x = 2u - 1, y = 2v - 1; nvdiffrast's row 0 is y = -1, so row = v * H (glTF rows).
    clip = torch.cat([uv * 2 - 1, torch.zeros_like(uv[:, :1]), torch.ones_like(uv[:, :1])], -1)[None]
    ctx = _nvdiffrast_context()
    if ctx is None:
        raise RuntimeError("nvdiffrast is not usable here (see the log); use the 'ours' rasterizer")
    rast, _ = dr.rasterize(ctx, clip, faces.cuda().int().contiguous(), resolution=[height, width])
    rast = rast[0]  # [H, W, 4]: (b1, b2, z, face + 1); point = b1 v0 + b2 v1 + (1 - b1 - b2) v2
    face = rast[..., 3].long() - 1
    b1, b2 = rast[..., 0], rast[..., 1]
    bary = torch.stack([b1, b2, 1 - b1 - b2], -1)
    bary[face < 0] = 0
    return face, bary
