"""``prepare``: mesh folder -> O-Voxels, condition renders and per-asset records.

Per asset (id = file stem): read the mesh, turn it Z-up, normalise it into [-0.5, 0.5]^3,
convert it to an O-Voxel with PBR attributes (CPU-bound numba, in a process pool), then
render the condition views of the normalised mesh in the main process (on ``device``).
The record is written last, so "ok" implies every file of the asset exists.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .layout import (
    SS_GRID,
    DataLayout,
    DataToolkitError,
    list_meshes,
    read_split,
    write_json,
    write_npz,
    write_png,
)

log = logging.getLogger(__name__)

# Which files store Y-up positions, by the convention of their format (glTF says so; OBJ files
# are Y-up by common practice and Blender's importer; PLY files are usually Z-up scans).
Y_UP_SUFFIXES = (".glb", ".gltf", ".obj")
UP_AXES = ("auto", "y", "z")


@dataclass(frozen=True)
class PrepareOptions:
    """Settings of one ``prepare`` run (see the CLI for their meaning)."""

    input_dir: Path
    output_dir: Path
    resolution: int = 512
    views: int = 8
    render_size: int = 512
    supersample: int = 2
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    workers: int | None = None  # None: all cores
    device: str = "cpu"
    limit: int | None = None
    up_axis: str = "auto"
    # More O-Voxel grids of the same assets, e.g. (256,) for training the VAEs at a coarser grid
    # first, as the reference recipe does; latents and the SS occupancy come from ``resolution``.
    extra_resolutions: tuple[int, ...] = ()


@dataclass
class RunSummary:
    """Asset counts of one ``prepare`` or ``encode`` run over this rank's shard."""

    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0


@dataclass
class ConvertedAsset:
    """What a pool worker returns: the normalised Z-up mesh and the O-Voxel facts."""

    mesh: Any  # TriangleMesh
    num_faces: int
    num_voxels: int
    extra_voxels: dict[str, int]  # voxel count per extra resolution ("256": n)
    center: list[float]
    scale: float
    up_axis: str
    timing: dict[str, float]


def shard(items: list, rank: int, world_size: int) -> list:
    """The items whose index in ``items`` is ``rank`` modulo ``world_size``."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise DataToolkitError(f"rank must lie in [0, world_size), got rank {rank}, world size {world_size}")
    return [x for i, x in enumerate(items) if i % world_size == rank]


def source_up_axis(path: Path, up_axis: str) -> str:
    """"y" or "z": the up axis of the file's positions."""
    if up_axis not in UP_AXES:
        raise DataToolkitError(f"up axis must be one of {UP_AXES}, got {up_axis!r}")
    if up_axis != "auto":
        return up_axis
    return "y" if path.suffix.lower() in Y_UP_SUFFIXES else "z"


def convert_asset(source: str, ovoxel_path: str, resolution: int, up_axis: str,
                  occupancy_path: str, extra: tuple[tuple[int, str], ...] = ()) -> ConvertedAsset:
    """Read, orient, normalise and voxelise one mesh; save its O-Voxel, its 64^3 sparse-structure
    occupancy (the occupied cells ``unique(coords // (resolution / 64))``) and the O-Voxels of the
    ``extra`` ``(resolution, path)`` grids. Runs in a pool worker."""
    from backend.meshio import read_mesh, y_up_to_z_up
    from backend.ovoxel.encode import mesh_to_ovoxel
    from backend.ovoxel.io import save_ovoxel
    from backend.ovoxel.normalize import normalize_to_unit_cube

    t0 = time.perf_counter()
    mesh = read_mesh(source)
    axis = source_up_axis(Path(source), up_axis)
    if axis == "y":
        mesh = y_up_to_z_up(mesh)
    mesh, norm = normalize_to_unit_cube(mesh)
    t1 = time.perf_counter()
    ov = mesh_to_ovoxel(mesh, resolution, attributes=True)
    t2 = time.perf_counter()
    Path(ovoxel_path).parent.mkdir(parents=True, exist_ok=True)
    save_ovoxel(ovoxel_path, ov, compress=False)  # read every training step: speed over size
    cells = np.unique(ov.coords // (resolution // SS_GRID), axis=0).astype(np.uint8)
    Path(occupancy_path).parent.mkdir(parents=True, exist_ok=True)
    write_npz(Path(occupancy_path), cells=cells)
    t3 = time.perf_counter()
    extra_voxels = {}
    for res, path in extra:
        extra_ov = mesh_to_ovoxel(mesh, res, attributes=True)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_ovoxel(path, extra_ov, compress=False)
        extra_voxels[str(res)] = extra_ov.num_voxels
    timing = {"read": t1 - t0, "ovoxel": t2 - t1, "save_ovoxel": t3 - t2,
              "extra_resolutions": time.perf_counter() - t3}
    return ConvertedAsset(mesh, mesh.num_faces, ov.num_voxels, extra_voxels, [float(c) for c in norm.center],
                          float(norm.scale), axis, timing)


def view_rng(seed: int, asset_id: str) -> np.random.Generator:
    """A generator that depends only on the seed and the asset id (not on sharding or order)."""
    return np.random.default_rng([seed, zlib.crc32(asset_id.encode())])


def _downsample(rgba, factor: int):
    """Box-filter an [H*f, W*f, 4] straight-alpha float image by ``factor`` (averaging premultiplied)."""
    import torch

    if factor == 1:
        return rgba
    premul = torch.cat([rgba[..., :3] * rgba[..., 3:], rgba[..., 3:]], -1).permute(2, 0, 1)[None]
    small = torch.nn.functional.avg_pool2d(premul, factor)[0].permute(1, 2, 0)
    alpha = small[..., 3:]
    rgb = torch.where(alpha > 0, small[..., :3] / alpha.clamp_min(1e-8), torch.zeros_like(small[..., :3]))
    return torch.cat([rgb, alpha], -1)


def render_condition_views(mesh, asset_id: str, layout: DataLayout, opts: PrepareOptions) -> list[dict]:
    """Render ``opts.views`` condition images of the normalised mesh; returns the per-view entries."""
    import torch

    from backend.render import random_condition_lighting, render_mesh, sample_condition_views

    rng = view_rng(opts.seed, asset_id)
    entries = []
    size = opts.render_size * opts.supersample
    for k, view in enumerate(sample_condition_views(opts.views, rng)):
        lighting = random_condition_lighting(rng)
        with torch.no_grad():
            result = render_mesh(mesh, view.camera, size, lighting, device=opts.device)
            rgba = _downsample(result.rgba, opts.supersample)
        image = (rgba.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
        write_png(layout.render_view(asset_id, k), image)
        entries.append({"file": f"{k:03d}.png", "fov": view.camera.fov_y,
                        "camera_to_world": np.asarray(view.camera.camera_to_world).tolist(),
                        "radius": view.radius, "yaw": view.yaw, "pitch": view.pitch})
    return entries


def is_complete(layout: DataLayout, asset_id: str, opts: PrepareOptions) -> bool:
    """True when the asset's record says ok for these settings and all its files exist."""
    rec = layout.read_record(asset_id)
    if not rec or rec.get("status") != "ok":
        return False
    if (rec.get("resolution"), rec.get("views"), rec.get("render_size")) != (
            opts.resolution, opts.views, opts.render_size):
        return False
    if any(str(r) not in (rec.get("extra_voxels") or {}) for r in opts.extra_resolutions):
        return False
    files = [layout.ovoxel(opts.resolution, asset_id), layout.ss_occupancy(asset_id),
             layout.transforms(asset_id)]
    files += [layout.render_view(asset_id, k) for k in range(opts.views)]
    files += [layout.ovoxel(r, asset_id) for r in opts.extra_resolutions]
    return all(p.is_file() for p in files)


def _base_record(asset_id: str, source: Path, split: str, opts: PrepareOptions) -> dict[str, Any]:
    return {"id": asset_id, "source": str(source), "split": split, "status": "failed", "error": None,
            "num_faces": None, "resolution": opts.resolution, "num_voxels": None, "views": opts.views,
            "render_size": opts.render_size, "normalization": None, "up_axis": None, "timing": {}}


class _Progress:
    """Logs ``count/total``, rate and ETA at most every ``interval`` seconds (and at the end)."""

    def __init__(self, total: int, interval: float = 5.0) -> None:
        self.total, self.count, self.interval = total, 0, interval
        self.t0 = self.last = time.perf_counter()

    def step(self, asset_id: str, status: str) -> None:
        self.count += 1
        now = time.perf_counter()
        if now - self.last < self.interval and self.count < self.total and status != "failed":
            return
        self.last = now
        rate = self.count / max(now - self.t0, 1e-9)
        eta = (self.total - self.count) / rate if rate > 0 else math.inf
        log.info("[%d/%d] %s %s  %.2f assets/s  ETA %.0f s",
                 self.count, self.total, asset_id, status, rate, eta)


def _run_conversions(jobs: list[tuple[str, Path]], layout: DataLayout, opts: PrepareOptions
                     ) -> Iterator[tuple[str, Path, ConvertedAsset | None, str | None]]:
    """Yield ``(id, source, converted or None, error or None)`` as conversions finish."""
    args = lambda asset_id, src: (str(src), str(layout.ovoxel(opts.resolution, asset_id)),  # noqa: E731
                                  opts.resolution, opts.up_axis, str(layout.ss_occupancy(asset_id)),
                                  tuple((r, str(layout.ovoxel(r, asset_id))) for r in opts.extra_resolutions))
    workers = opts.workers if opts.workers is not None else (os.cpu_count() or 1)
    if workers <= 1 or len(jobs) <= 1:
        for asset_id, src in jobs:
            try:
                yield asset_id, src, convert_asset(*args(asset_id, src)), None
            except Exception as exc:  # any failure of one asset must not stop the run
                yield asset_id, src, None, f"{src}: {type(exc).__name__}: {exc}"
        return
    # spawn, not fork: the parent holds torch (threads, maybe CUDA), which fork would copy mid-state.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending: dict[Future, tuple[str, Path]] = {}
        queue = list(jobs)
        while queue or pending:
            while queue and len(pending) < 2 * workers:  # bounded: results hold whole meshes
                asset_id, src = queue.pop(0)
                pending[pool.submit(convert_asset, *args(asset_id, src))] = (asset_id, src)
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                asset_id, src = pending.pop(fut)
                exc = fut.exception()
                if exc is None:
                    yield asset_id, src, fut.result(), None
                else:
                    yield asset_id, src, None, f"{src}: {type(exc).__name__}: {exc}"


def prepare_dataset(opts: PrepareOptions) -> RunSummary:
    """Run ``prepare`` for this rank's shard; returns counts and seconds.

    Raises:
        DataToolkitError: the input folder is missing or holds no mesh (nothing else stops the run).
    """
    from backend.ovoxel.types import check_resolution

    from .merge import merge_records

    t_start = time.perf_counter()
    check_resolution(opts.resolution)
    for res in opts.extra_resolutions:
        check_resolution(res)
    if opts.views < 1 or opts.render_size < 8 or opts.supersample < 1:
        raise DataToolkitError("views must be >= 1, render size >= 8 and supersample >= 1")
    paths = list_meshes(Path(opts.input_dir))
    if opts.limit is not None:
        paths = paths[: opts.limit]
    split = read_split(Path(opts.input_dir))
    mine = shard(paths, opts.rank, opts.world_size)
    layout = DataLayout(opts.output_dir)
    layout.records_dir.mkdir(parents=True, exist_ok=True)

    summary = RunSummary(total=len(mine))
    todo = []
    for p in mine:
        if is_complete(layout, p.stem, opts):
            summary.skipped += 1
        else:
            todo.append((p.stem, p))
    log.info("prepare rank %d/%d: %d assets, %d already done, %d to do (resolution %d, %d views of %d px)",
             opts.rank, opts.world_size, len(mine), summary.skipped, len(todo), opts.resolution, opts.views,
             opts.render_size)
    progress = _Progress(len(todo))
    for asset_id, src, converted, error in _run_conversions(todo, layout, opts):
        rec = _base_record(asset_id, src, split.get(asset_id, "train"), opts)
        if converted is not None:
            try:
                t0 = time.perf_counter()
                views = render_condition_views(converted.mesh, asset_id, layout, opts)
                write_json(layout.transforms(asset_id), {
                    "views": views, "render_size": opts.render_size,
                    "convention": "world Z-up, mesh normalised into [-0.5, 0.5]^3; camera looks along -Z "
                                  "with +Y up (OpenGL/Blender); fov is vertical = horizontal (square)"})
                rec.update(status="ok", num_faces=converted.num_faces, num_voxels=converted.num_voxels,
                           extra_voxels=converted.extra_voxels,
                           normalization={"center": converted.center, "scale": converted.scale},
                           up_axis=converted.up_axis,
                           timing={**converted.timing, "render": time.perf_counter() - t0})
            except Exception as exc:  # a render failure is this asset's failure, not the run's
                error = f"{src}: rendering failed: {type(exc).__name__}: {exc}"
        if error is not None:
            rec["error"] = error
            summary.failed += 1
            log.warning("failed: %s", error)
        else:
            summary.done += 1
        write_json(layout.record(asset_id), rec)
        progress.step(asset_id, rec["status"])

    summary.seconds = time.perf_counter() - t_start
    log.info("prepare done: %d done, %d skipped, %d failed of %d in %.1f s",
             summary.done, summary.skipped, summary.failed, summary.total, summary.seconds)
    if opts.world_size == 1:
        merge_records(layout.root)
    return summary
