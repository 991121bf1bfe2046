"""``encode``: O-Voxels -> shape, PBR and sparse-structure latents with trained encoders.

- Shape: ``FlexiDualGridVaeEncoder(vertices, intersected)`` on the O-Voxel's dual vertices
  (voxel-local offsets in [0, 1]) and crossed-edge flags -> mean latent [M, 32] on the /16 grid.
- PBR: ``SparseUnetVaeEncoder`` on the attributes mapped to [-1, 1] -> [M, 32] on the same coords.
- Sparse structure: the 64^3 occupancy of ``coords // (R / 64)`` -> ``SparseStructureEncoder``
  mean [8, 16, 16, 16].

Several assets are packed into one sparse batch (batch index = position in the batch).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .layout import SS_GRID, DataLayout, DataToolkitError, write_json, write_npz
from .prepare import RunSummary, shard

log = logging.getLogger(__name__)

LATENT_DOWNSAMPLE = 16  # the SC-VAE encoders' total downsampling


@dataclass
class Encoder:
    """A loaded encoder and the checkpoint name its latents are filed under."""

    name: str
    model: nn.Module


def load_encoder(stem: str | Path, device: str | torch.device, conv_backend: str = "torch") -> Encoder:
    """Load ``STEM.json`` + ``STEM.safetensors`` in float32 on ``device``; the name is the stem's name."""
    from backend.models.loading import load_model

    stem = Path(stem)
    name = stem.name
    for suffix in (".json", ".safetensors"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    model = load_model(str(stem), device=device, dtype=torch.float32)
    if hasattr(model, "set_conv_backend"):
        # Data sets hold assets of every size: the Triton kernel would re-tune for each new size bucket,
        # while the gather-GEMM path needs no tuning and is as fast at these small widths.
        model.set_conv_backend(conv_backend)
    return Encoder(name, model)


def _load_ovoxel(layout: DataLayout, record: dict[str, Any]):
    from backend.ovoxel.encode import sort_voxels
    from backend.ovoxel.io import load_ovoxel

    ov = sort_voxels(load_ovoxel(layout.ovoxel(int(record["resolution"]), record["id"])))
    if ov.attributes is None:
        raise DataToolkitError(f"{layout.ovoxel(ov.resolution, record['id'])}: no PBR attributes")
    return ov


def _packed_coords(ovoxels: list, device: torch.device) -> torch.Tensor:
    """[N, 4] int32 (batch, x, y, z) of all assets, asset after asset."""
    rows = [np.concatenate([np.full((ov.num_voxels, 1), b, np.int32), ov.coords.astype(np.int32)], 1)
            for b, ov in enumerate(ovoxels)]
    return torch.from_numpy(np.concatenate(rows)).to(device)


def _split_latent(latent, batch_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per batch index: (feats float32 [M, C], coords int16 [M, 3])."""
    coords = latent.coords.cpu().numpy()
    feats = latent.feats.float().cpu().numpy()
    out = []
    for b in range(batch_size):
        sel = coords[:, 0] == b
        out.append((feats[sel].astype(np.float32), coords[sel, 1:].astype(np.int16)))
    return out


def occupancy_grid(ovoxels: list, device: torch.device) -> torch.Tensor:
    """[B, 1, 64, 64, 64] float32: 1 where a 64^3 cell holds any voxel."""
    occ = torch.zeros(len(ovoxels), 1, SS_GRID, SS_GRID, SS_GRID, dtype=torch.float32, device=device)
    for b, ov in enumerate(ovoxels):
        if ov.resolution % SS_GRID:
            raise DataToolkitError(f"resolution {ov.resolution} is not a multiple of {SS_GRID}")
        # Repeated cells just set the same 1 again: no unique() needed (it costs ~0.5 s per asset on the CPU).
        c = torch.from_numpy(ov.coords.astype(np.int64)).to(device) // (ov.resolution // SS_GRID)
        occ[b, 0, c[:, 0], c[:, 1], c[:, 2]] = 1.0
    return occ


@torch.no_grad()
def encode_batch(ovoxels: list, shape: Encoder | None, pbr: Encoder | None, ss: Encoder | None,
                 device: torch.device) -> list[dict[str, Any]]:
    """Latents of a batch of O-Voxels: per asset {"shape": (feats, coords), "pbr": ..., "ss": z}."""
    from backend.sparse import SparseTensor

    for ov in ovoxels:
        if ov.resolution % LATENT_DOWNSAMPLE:
            raise DataToolkitError(f"resolution {ov.resolution} is not a multiple of {LATENT_DOWNSAMPLE}")
    out: list[dict[str, Any]] = [{} for _ in ovoxels]
    coords = _packed_coords(ovoxels, device)
    size = len(ovoxels)
    if shape is not None:
        verts = torch.from_numpy(np.concatenate([ov.dual_vertices for ov in ovoxels]).astype(np.float32))
        inter = torch.from_numpy(np.concatenate([ov.intersected for ov in ovoxels]).astype(np.float32))
        latent = shape.model(SparseTensor(coords, verts.to(device), size),
                             SparseTensor(coords, inter.to(device), size))
        for b, part in enumerate(_split_latent(latent, size)):
            out[b]["shape"] = part
    if pbr is not None:
        attrs = torch.from_numpy(np.concatenate([ov.attributes for ov in ovoxels]).astype(np.float32))
        latent = pbr.model(SparseTensor(coords, (attrs * 2 - 1).to(device), size))
        for b, part in enumerate(_split_latent(latent, size)):
            out[b]["pbr"] = part
            if shape is not None and not np.array_equal(out[b]["shape"][1], part[1]):
                raise DataToolkitError("shape and PBR latents of one asset have different coords")
    if ss is not None:
        z = ss.model(occupancy_grid(ovoxels, device)).float().cpu().numpy()  # [B, 8, 16, 16, 16]
        for b in range(size):
            out[b]["ss"] = z[b].astype(np.float32)
    return out


def _done(layout: DataLayout, asset_id: str, encoders: dict[str, Encoder | None]) -> bool:
    return all(layout.latent(kind, enc.name, asset_id).is_file() for kind, enc in encoders.items() if enc)


def _write_latents(layout: DataLayout, group: list[dict[str, Any]], latents: list[dict[str, Any]],
                   encoders: dict[str, Encoder | None]) -> None:
    """Write one batch's latent files, then each asset's updated record (the record last)."""
    for rec, lat in zip(group, latents, strict=True):
        for kind in ("shape", "pbr"):
            if kind in lat:
                feats, coords = lat[kind]
                write_npz(layout.latent(kind, encoders[kind].name, rec["id"]), feats=feats, coords=coords)
                rec.setdefault(f"{kind}_latent_tokens", {})[encoders[kind].name] = int(len(feats))
        if "ss" in lat:
            write_npz(layout.latent("ss", encoders["ss"].name, rec["id"]), z=lat["ss"])
            rec.setdefault("ss_latent_tokens", {})[encoders["ss"].name] = int(lat["ss"][0].size)
        write_json(layout.record(rec["id"]), rec)


def encode_dataset(data_dir: str | Path, shape: Encoder | None, pbr: Encoder | None, ss: Encoder | None,
                   device: str | torch.device = "cpu", rank: int = 0, world_size: int = 1,
                   batch: int = 4) -> RunSummary:
    """Encode this rank's share of the ok assets; write latents, update records, then (single rank)
    merge and write ``latent_stats.json`` (per-channel mean/std over the train split).

    Raises:
        DataToolkitError: no encoder given, no ok records, or inconsistent data.
    """
    from .merge import merge_records

    t_start = time.perf_counter()
    encoders = {"shape": shape, "pbr": pbr, "ss": ss}
    if not any(encoders.values()):
        raise DataToolkitError("give at least one encoder (shape, PBR or sparse structure)")
    device = torch.device(device)
    layout = DataLayout(data_dir)
    records = [r for r in layout.read_records() if r.get("status") == "ok"]
    if not records:
        raise DataToolkitError(f"{layout.records_dir}: no prepared (ok) assets to encode")
    mine = shard(records, rank, world_size)
    todo = [r for r in mine if not _done(layout, r["id"], encoders)]
    summary = RunSummary(total=len(mine), skipped=len(mine) - len(todo))
    log.info("encode rank %d/%d: %d assets, %d already encoded, %d to do (%s)", rank, world_size,
             len(mine), summary.skipped, len(todo),
             ", ".join(f"{k}={e.name}" for k, e in encoders.items() if e))
    groups = [todo[i:i + max(1, batch)] for i in range(0, len(todo), max(1, batch))]
    # Reading the next batch's files overlaps with encoding this one (the device would otherwise wait).
    with ThreadPoolExecutor(max_workers=max(1, batch)) as readers:
        def read(group: list[dict[str, Any]]) -> list[Future]:
            return [readers.submit(_load_ovoxel, layout, r) for r in group]

        pending = read(groups[0]) if groups else []
        for k, group in enumerate(groups):
            ovoxels = [f.result() for f in pending]
            pending = read(groups[k + 1]) if k + 1 < len(groups) else []
            latents = encode_batch(ovoxels, shape, pbr, ss, device)
            _write_latents(layout, group, latents, encoders)
            summary.done += len(group)
            elapsed = time.perf_counter() - t_start
            log.info("[%d/%d] encoded  %.2f assets/s", summary.done, len(todo),
                     summary.done / max(elapsed, 1e-9))
    summary.seconds = time.perf_counter() - t_start
    log.info("encode done: %d encoded, %d skipped of %d in %.1f s", summary.done, summary.skipped,
             summary.total, summary.seconds)
    if world_size == 1:
        merge_records(layout.root, {k: e.name if e else None for k, e in encoders.items()})
    return summary
