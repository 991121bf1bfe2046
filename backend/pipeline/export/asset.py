"""Write one asset: clean + decimate + unwrap + bake + GLB + Blender result folder.

Two entry points:

- :func:`export_generated`: a generated mesh in the working frame (Z-up unit
  cube) plus its attribute function; cleaned as ``ExportOptions`` asks (floaters,
  inner shells, small holes), decimated to the face target, re-oriented,
  unwrapped, baked with re-projection onto the full-resolution mesh (plus, when
  decimation removed faces and ``bake_normal_map`` is on, a tangent-space normal
  map of the full-resolution surface, see :mod:`.normal_map`), written as a Y-up
  GLB ``(x, y, z) -> (x, z, -y)`` and as a Z-up direct result.
- :func:`export_retextured`: a user's mesh in its own file frame; topology,
  UVs, normals and placement are kept (UVs are generated only when it has
  none); the bake samples attributes through ``to_work`` (file frame ->
  working frame) and the GLB keeps the file frame.

Both record a QA report of the written mesh in ``result.json`` (``"qa"``: the counts of
:mod:`backend.geometry.inspect`, ``uv_overlap``, ``texel_density``; for generated meshes also
``"cleanup"``, the clean-ups done).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from backend.geometry import TriangleMesh, topology
from backend.geometry.axes import Z_UP_TO_Y_UP
from backend.geometry.inspect import MeshReport, mesh_report, remove_shells, uv_report
from backend.meshio.images import encode_image
from backend.ovoxel.cleanup import fill_holes

from ..api import AssetResult, CancelToken, ExportOptions
from . import mesh_ops
from .bake import AttributeFn, SurfaceProjector, bake, bake_points, texel_points
from .direct import write_direct
from .material import TextureSet, material, pack_textures
from .normal_map import DenseSurface, bake_normal_map
from .raster import nvdiffrast_available, rasterize_uv, rasterize_uv_nvdiffrast
from .result_files import StagedAsset
from .tangents import vertex_tangents
from .uv import Unwrapped, fast_unwrap, unwrap

log = logging.getLogger(__name__)

XATLAS_MAX_FACES = 20_000  # "auto" unwrapping uses xatlas up to this size, the fast charts above
# ``fill_holes``: holes whose perimeter is under a tenth of the unit cube's side (the decoder
# already closes the smallest ones, under 0.03).
SMALL_HOLE_PERIMETER = 0.1


@dataclass
class ExportTimings:
    seconds: dict[str, float] = field(default_factory=dict)

    def mark(self, key: str, start: float) -> float:
        now = time.perf_counter()
        self.seconds[key] = self.seconds.get(key, 0.0) + now - start
        return now


def rasterize(uvs: np.ndarray, faces: np.ndarray, size: int, options: ExportOptions,
              device: str) -> tuple[np.ndarray, np.ndarray]:
    """UV raster with the configured back end; returns numpy ``(face [H, W], bary [H, W, 3])``."""
    use_nv = options.rasterizer == "nvdiffrast" or (
        options.rasterizer == "auto" and device.startswith("cuda") and nvdiffrast_available())
    if options.rasterizer == "nvdiffrast" and not nvdiffrast_available():
        raise RuntimeError("rasterizer 'nvdiffrast' requested but nvdiffrast.torch (or CUDA) is unavailable")
    uv_t = torch.from_numpy(np.ascontiguousarray(uvs))
    f_t = torch.from_numpy(np.ascontiguousarray(faces))
    if use_nv:
        face, bary = rasterize_uv_nvdiffrast(uv_t, f_t, size, size)
    else:
        dev = device if device.startswith("cuda") and torch.cuda.is_available() else "cpu"
        face, bary = rasterize_uv(uv_t.to(dev), f_t.to(dev), size, size)
    return face.cpu().numpy(), bary.cpu().numpy()


def _compute_device(device: str) -> str:
    return device if device.startswith("cuda") and torch.cuda.is_available() else "cpu"


def _unwrap(vertices: np.ndarray, faces: np.ndarray, options: ExportOptions,
            cancel: CancelToken | None = None, pairs: tuple | None = None) -> Unwrapped:
    method = options.unwrap
    if method == "auto":
        method = "xatlas" if len(faces) <= XATLAS_MAX_FACES else "fast"
    if method == "xatlas":
        return unwrap(vertices, faces, options.texture_size, cancel=cancel)
    return fast_unwrap(vertices, faces, options.texture_size, pairs=pairs)


def clean_generated(vertices: np.ndarray, faces: np.ndarray,
                    options: ExportOptions) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The clean-ups ``options`` asks for, on a welded mesh; returns the mesh and what was done."""
    done = []
    if options.remove_floaters or options.remove_inner_shells:
        kept = remove_shells(vertices, faces, floaters=options.remove_floaters,
                             inner=options.remove_inner_shells)
        done.append(f"removed {len(faces) - len(kept)} faces of floaters/inner shells")
        vertices, faces, _ = topology.remove_unreferenced(vertices, kept)
    if options.fill_holes:
        before = len(faces)
        filled = fill_holes(TriangleMesh(vertices, faces), SMALL_HOLE_PERIMETER)
        vertices, faces = filled.vertices, filled.faces
        done.append(f"filled holes with {len(faces) - before} faces")
    return vertices, faces, done


def qa_report(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, face_img: np.ndarray,
              texture_size: int, topology_report: MeshReport | None = None) -> dict:
    """The asset's QA report (``result.json``'s ``"qa"``): topology and UV facts of the written mesh.

    ``topology_report`` is ``mesh_report(vertices, faces)`` when the caller already has it.
    """
    covered = float((face_img >= 0).mean())
    report = topology_report if topology_report is not None else mesh_report(vertices, faces)
    return {**report.as_json(), **uv_report(vertices, faces, uvs, covered, texture_size)}


def _start(pool: ThreadPoolExecutor | None, fn: Callable, *args) -> Future:
    """``fn(*args)`` on ``pool``; without a pool it runs now and the future is already done."""
    if pool is not None:
        return pool.submit(fn, *args)
    done: Future = Future()
    done.set_result(fn(*args))
    return done


def _write(mesh: TriangleMesh, tex: TextureSet, blender_positions: np.ndarray | None,
           blender_normals: np.ndarray | None, out_dir: Path, name: str, options: ExportOptions,
           double_sided: bool, result_fields: Mapping[str, object] | None = None,
           pool: ThreadPoolExecutor | None = None) -> AssetResult:
    """GLB of ``mesh`` (already in the GLB frame, material attached) and the direct result folder
    (``result_fields`` are added to its ``result.json``). ``name`` must be one safe file-name
    component (see :func:`backend.pipeline.api.check_output_name`): every file lands inside
    ``out_dir``. The files replace an earlier asset of the same name as a whole, or not at all.
    With a ``pool`` the textures are encoded on it while the mesh buffers are written."""
    wanted = ((options.texture_format, options.write_glb), ("png", options.write_direct))
    formats = {fmt for fmt, on in wanted if on}
    encode = _encode_once(tex, formats, pool, max(options.threads, 1))
    result = AssetResult(name=name, faces=mesh.num_faces, vertices=mesh.num_vertices,
                         texture_size=int(tex.base_color.shape[0]), alpha_mode=tex.alpha_mode)
    with StagedAsset(out_dir, name) as staged:  # all files in place, or none
        if options.write_glb:
            from backend.meshio import write_glb

            write_glb(staged.glb, mesh, texture_format=options.texture_format, encode=encode)
            result.glb = staged.final_glb
        if options.write_direct:
            write_direct(staged.folder, name, blender_positions, mesh.faces, mesh.uvs, blender_normals, tex,
                         double_sided, encode=encode, fields=result_fields)
            result.direct = staged.final_folder / "result.json"
        staged.commit()
    return result


def _encode_once(tex: TextureSet, formats: set[str], pool: ThreadPoolExecutor | None = None,
                 threads: int = 1) -> Callable[[np.ndarray, str], bytes]:
    """An encoder that hands out each texture's file bytes, encoded once per format.

    The GLB and the direct folder embed the same PNGs. With a ``pool`` every encode starts
    on it at once (zlib releases the GIL; at 2048^2 they were a quarter of export time) and
    the encoder waits for the one asked for; without one they run here, in turn. Each PNG
    encode deflates its row bands on ``threads`` threads of its own (not the pool's: an
    encode waiting on its bands from a pool worker could starve that pool).
    """
    images = [img for img in (tex.base_color, tex.metallic_roughness, tex.normal) if img is not None]
    encoded = {(id(img), fmt): _start(pool, encode_image, img, fmt, threads)
               for fmt in sorted(formats) for img in images}

    def encode(img: np.ndarray, fmt: str) -> bytes:
        job = encoded.get((id(img), fmt))
        return job.result() if job is not None else encode_image(img, fmt, threads)

    return encode


def export_generated(vertices: np.ndarray, faces: np.ndarray, attributes: AttributeFn, out_dir: Path,
                     name: str, options: ExportOptions, device: str = "cpu",
                     on_step: Callable[[str], None] | None = None,
                     result_fields: Mapping[str, object] | None = None,
                     cancel: CancelToken | None = None) -> AssetResult:
    """Export a generated mesh given in the working frame (Z-up, unit cube).

    Args:
        vertices, faces: the full-resolution extracted mesh (``[V, 3]``, ``[F, 3]``).
        attributes: working-frame points ``[N, 3]`` -> ``[N, 6]`` PBR attributes in [0, 1].
        on_step: called with the name of each sub-step as it starts (for progress).
        result_fields: extra top-level fields of the direct result's ``result.json`` (``"model"``).
        cancel: stops the job while decimation or UV unwrapping runs.
    """
    with ThreadPoolExecutor(options.threads) if options.threads > 0 else contextlib.nullcontext() as pool:
        return _export_generated(vertices, faces, attributes, out_dir, name, options, device, on_step,
                                 result_fields, cancel, pool)


def _export_generated(vertices: np.ndarray, faces: np.ndarray, attributes: AttributeFn, out_dir: Path,
                      name: str, options: ExportOptions, device: str,
                      on_step: Callable[[str], None] | None, result_fields: Mapping[str, object] | None,
                      cancel: CancelToken | None, pool: ThreadPoolExecutor | None) -> AssetResult:
    """:func:`export_generated` with its thread pool (None: every step in turn)."""
    step = on_step or (lambda _s: None)
    timings = ExportTimings()
    t = time.perf_counter()
    step("clean")
    hi_v, hi_f = mesh_ops.weld(np.asarray(vertices, np.float64), np.asarray(faces, np.int64))
    hi_v, hi_f, cleaned = clean_generated(hi_v, hi_f, options)
    projector = dense = None
    if len(hi_f) > options.faces:  # decimation will move the surface: the bake re-projects onto this one
        # Built while the decimation's child process runs (this process only waits for it).
        build = functools.partial(SurfaceProjector, device=_compute_device(device))
        projector = _start(pool, build, hi_v, hi_f)
        if options.bake_normal_map:
            dense = _start(pool, DenseSurface.from_mesh, hi_v, hi_f)
    v, f = mesh_ops.decimate(hi_v, hi_f, options.faces, cancel)
    if (options.remove_floaters or options.remove_inner_shells) and len(f) < len(hi_f):
        # Decimation can break thin parts into crumbs: the result must be free of what was asked.
        kept = remove_shells(v, f, floaters=options.remove_floaters, inner=options.remove_inner_shells)
        if len(kept) < len(f):
            cleaned.append(f"removed {len(f) - len(kept)} faces of floaters/inner shells after decimation")
            f = kept
    # Re-projection onto the full-resolution surface only matters when decimation moved it.
    reference = projector if projector is not None and len(f) < len(hi_f) else None
    v, f, _ = topology.remove_unreferenced(v, f)
    pairs = topology.shared_edge_pairs(f)  # for orienting and for the UV charts
    f = topology.orient_faces(v, f, pairs=pairs)
    t = timings.mark("clean_decimate", t)
    step("unwrap")
    uw = _unwrap(v, f, options, cancel, pairs)
    v_uv = v[uw.vmap]  # [V', 3] seam-split vertices
    normals = topology.vertex_normals(v, f)[uw.vmap]  # smooth normals shared across seams
    topology_qa = _start(pool, mesh_report, v_uv, uw.faces)  # needs nothing of the bake: runs beside it
    t = timings.mark("unwrap", t)
    step("bake")
    face_img, bary_img = rasterize(uw.uvs, uw.faces, options.texture_size, options, device)
    tangents = None
    if reference is None:
        attrs, mask = bake(v_uv, uw.faces, face_img, bary_img, attributes, device=_compute_device(device))
        tex = pack_textures(attrs, mask, options.alpha_mode)
    else:
        pts, mask = texel_points(v_uv, uw.faces, face_img, bary_img)
        hit_points, hit_faces = reference.result().closest(pts)
        attrs, mask = bake_points(hit_points, mask, attributes, device=_compute_device(device))
        tex = pack_textures(attrs, mask, options.alpha_mode)
        if options.bake_normal_map:
            tangents = vertex_tangents(v_uv, uw.faces, uw.uvs, normals)
            normal_tex = bake_normal_map(uw.faces, normals, tangents, face_img, bary_img,
                                         dense.result(), hit_points, hit_faces,
                                         device=_compute_device(device))
            tex = dataclasses.replace(tex, normal=normal_tex)
    t = timings.mark("bake", t)
    qa = {**qa_report(v_uv, uw.faces, uw.uvs, face_img, options.texture_size, topology_qa.result()),
          "cleanup": cleaned}
    result_fields = {**(result_fields or {}), "qa": qa}
    step("write")
    glb_tangents = None
    if tangents is not None:  # xyz turn with the frame; w (handedness) is frame-independent
        glb_tangents = np.concatenate([tangents[:, :3] @ Z_UP_TO_Y_UP.T, tangents[:, 3:]], 1)
        glb_tangents = glb_tangents.astype(np.float32)
    glb_mesh = TriangleMesh(v_uv @ Z_UP_TO_Y_UP.T, uw.faces, uvs=uw.uvs,
                            normals=(normals.astype(np.float64) @ Z_UP_TO_Y_UP.T).astype(np.float32),
                            tangents=glb_tangents,
                            materials=[material(tex, options.double_sided)])
    result = _write(glb_mesh, tex, v_uv, normals, out_dir, name, options, options.double_sided,
                    result_fields, pool)
    timings.mark("write", t)
    result.extra["export_seconds"] = timings.seconds
    result.extra["coverage"] = float(mask.mean())
    result.extra["qa"] = qa
    log.info("exported %s: %d faces, %d px textures, %s", name, result.faces, options.texture_size,
             tex.alpha_mode)
    return result


def export_retextured(mesh: TriangleMesh, to_work: Callable[[np.ndarray], np.ndarray],
                      attributes: AttributeFn, out_dir: Path, name: str, options: ExportOptions,
                      to_blender: np.ndarray, device: str = "cpu",
                      result_fields: Mapping[str, object] | None = None,
                      cancel: CancelToken | None = None) -> AssetResult:
    """Bake new PBR textures onto ``mesh`` (its own frame), keeping topology, UVs and placement.

    Args:
        mesh: the input mesh as read from its file.
        to_work: file-frame points -> working-frame points (where ``attributes`` is defined).
        to_blender: 3x3 rotation from the file frame to Blender's Z-up frame (direct result).
        result_fields: extra top-level fields of the direct result's ``result.json`` (``"model"``).
        cancel: stops the job while UV unwrapping runs.
    """
    verts = np.asarray(mesh.vertices, np.float64)
    faces = np.asarray(mesh.faces, np.int64)
    normals = mesh.normals
    if mesh.uvs is not None:
        uvs, out_v, out_f = np.asarray(mesh.uvs, np.float32), verts, faces
    else:
        uw = _unwrap(verts, faces, options, cancel)
        uvs, out_v, out_f = uw.uvs, verts[uw.vmap], uw.faces
        normals = None if normals is None else np.asarray(normals)[uw.vmap]
    if normals is None:
        normals = topology.vertex_normals(out_v, out_f)
    # UVs outside [0, 1] (tiling) are baked modulo 1.
    face_img, bary_img = rasterize(np.mod(uvs, 1.0), out_f, options.texture_size, options, device)
    work_v = to_work(out_v)
    attrs, mask = bake(work_v, out_f, face_img, bary_img, attributes, reference=None,
                       device=_compute_device(device))
    tex = pack_textures(attrs, mask, options.alpha_mode)
    qa = qa_report(out_v, out_f, np.mod(uvs, 1.0), face_img, options.texture_size)
    result_fields = {**(result_fields or {}), "qa": qa}
    out = TriangleMesh(out_v, out_f, uvs=uvs, normals=np.asarray(normals, np.float32),
                       materials=[material(tex, double_sided=True)])
    blender_normals = (np.asarray(normals, np.float64) @ to_blender.T).astype(np.float32)
    with ThreadPoolExecutor(options.threads) if options.threads > 0 else contextlib.nullcontext() as pool:
        result = _write(out, tex, out_v @ to_blender.T, blender_normals, out_dir, name, options, True,
                        result_fields, pool)
    result.extra["coverage"] = float(mask.mean())
    result.extra["kept_uvs"] = mesh.uvs is not None
    result.extra["qa"] = qa
    return result
