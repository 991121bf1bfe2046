"""Where every file of a prepared data folder lives, and small atomic JSON/PNG/NPZ helpers.

Layout of ``DATA_DIR``::

    records/{id}.json                 per-asset record (see ``new_record``)
    metadata.jsonl                    every record, one per line, sorted by id (``merge``)
    statistics.json                   counts, voxel sizes, per-step timing (``merge``)
    ovoxel_{R}/{id}.npz               O-Voxel with PBR attributes (``backend.ovoxel.io``, uncompressed)
    ss_occupancy/{id}.npz             {"cells": uint8 [K, 3]} occupied cells of the 64^3 sparse-structure grid
    renders_cond/{id}/{k:03d}.png     RGBA condition renders, transparent background
    renders_cond/{id}/transforms.json {"views": [{"file", "fov", "camera_to_world", "radius", ...}]}
    ss_latents/{ENC}/{id}.npz         {"z": float32 [8, 16, 16, 16]}
    shape_latents/{ENC}/{id}.npz      {"feats": float32 [M, 32], "coords": int16 [M, 3] (x, y, z)}
    pbr_latents/{ENC}/{id}.npz        same keys, same coords in the same order as the shape latent
    latent_stats.json                 {"shape": {"mean", "std"}, "pbr": {...}, "encoders": {...}}
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from backend.fileio import write_atomic

MESH_SUFFIXES = (".glb", ".gltf", ".obj", ".ply")
SPLITS = ("train", "test")



SS_GRID = 64  # the sparse-structure occupancy grid (SS VAE input, SS decoder output)
# Evaluation pictures look like a product photo: the condition view nearest this pitch above the
# horizon (the condition sampler puts a quarter of its views below the horizon; view 0 always is).
PHOTO_PITCH_DEG = 25.0

def pooled_occupancy(cells: np.ndarray, grid: int, source_grid: int = SS_GRID) -> np.ndarray:
    """bool ``[grid]^3`` occupancy from ``[K, 3]`` cells of a ``source_grid``^3 grid (any child counts)."""
    if source_grid % grid:
        raise ValueError(f"grid {grid} does not divide the source grid {source_grid}")
    occ = np.zeros((grid,) * 3, dtype=bool)
    if len(cells):
        c = np.asarray(cells, dtype=np.int64) // (source_grid // grid)
        occ[c[:, 0], c[:, 1], c[:, 2]] = True
    return occ


class DataToolkitError(RuntimeError):
    """A data folder or mesh folder that cannot be processed; the message names it."""


class DataLayout:
    """Paths inside one data folder."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    @property
    def records_dir(self) -> Path:
        return self.root / "records"

    @property
    def metadata(self) -> Path:
        return self.root / "metadata.jsonl"

    @property
    def statistics(self) -> Path:
        return self.root / "statistics.json"

    @property
    def latent_stats(self) -> Path:
        return self.root / "latent_stats.json"

    def record(self, asset_id: str) -> Path:
        return self.records_dir / f"{asset_id}.json"

    def ovoxel(self, resolution: int, asset_id: str) -> Path:
        return self.root / f"ovoxel_{resolution}" / f"{asset_id}.npz"

    def ss_occupancy(self, asset_id: str) -> Path:
        return self.root / "ss_occupancy" / f"{asset_id}.npz"

    def renders(self, asset_id: str) -> Path:
        return self.root / "renders_cond" / asset_id

    def render_view(self, asset_id: str, view: int) -> Path:
        return self.renders(asset_id) / f"{view:03d}.png"

    def transforms(self, asset_id: str) -> Path:
        return self.renders(asset_id) / "transforms.json"

    def photo_view(self, asset_id: str, pitch_deg: float = PHOTO_PITCH_DEG) -> int:
        """The index of the asset's condition view whose camera pitch is nearest ``pitch_deg``."""
        path = self.transforms(asset_id)
        try:
            pitches = [float(v["pitch"]) for v in json.loads(path.read_text())["views"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataToolkitError(f"{path}: no view pitches to choose a picture from ({exc})") from exc
        if not pitches:
            raise DataToolkitError(f"{path}: no condition views")
        return int(np.argmin([abs(np.degrees(p) - pitch_deg) for p in pitches]))

    def latent(self, kind: str, encoder: str, asset_id: str) -> Path:
        """``kind`` is "ss", "shape" or "pbr"."""
        return self.root / f"{kind}_latents" / encoder / f"{asset_id}.npz"

    def read_records(self) -> list[dict[str, Any]]:
        """Every per-asset record, sorted by id (unreadable files raise with their path)."""
        records = []
        for path in sorted(self.records_dir.glob("*.json")) if self.records_dir.is_dir() else []:
            try:
                records.append(json.loads(path.read_text()))
            except (OSError, ValueError) as exc:
                raise DataToolkitError(f"{path}: unreadable record ({exc})") from exc
        records.sort(key=lambda r: r["id"])
        return records

    def read_record(self, asset_id: str) -> dict[str, Any] | None:
        path = self.record(asset_id)
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None  # a damaged record means "not done": the asset is processed again


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())


def write_png(path: Path, image: np.ndarray) -> None:
    """Write a uint8 [H, W, 3|4] image as PNG, atomically."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buf, format="PNG", compress_level=6)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buf.getvalue())


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write arrays to a compressed .npz, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda fh: np.savez_compressed(fh, **arrays))


def list_meshes(mesh_dir: Path) -> list[Path]:
    """Mesh files directly inside ``mesh_dir``, sorted by name.

    Raises:
        DataToolkitError: the folder is missing, holds no mesh file, or two files share a stem.
    """
    if not mesh_dir.is_dir():
        raise DataToolkitError(f"{mesh_dir}: no such mesh folder")
    paths = sorted(p for p in mesh_dir.iterdir() if p.is_file() and p.suffix.lower() in MESH_SUFFIXES)
    if not paths:
        raise DataToolkitError(f"{mesh_dir}: no mesh files ({', '.join(MESH_SUFFIXES)}) in this folder")
    seen: dict[str, Path] = {}
    for p in paths:
        if p.stem in seen:
            raise DataToolkitError(f"{mesh_dir}: {seen[p.stem].name} and {p.name} would both be asset "
                                   f"{p.stem!r}; rename one")
        seen[p.stem] = p
    return paths


def read_split(mesh_dir: Path) -> dict[str, str]:
    """Asset id -> "train" | "test" from ``mesh_dir/split.json`` (empty if there is none)."""
    path = mesh_dir / "split.json"
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataToolkitError(f"{path}: unreadable split file ({exc})") from exc
    split = {}
    for name in SPLITS:
        for asset_id in doc.get(name, []):
            if split.get(str(asset_id), name) != name:
                raise DataToolkitError(f"{path}: asset {asset_id!r} is in both train and test")
            split[str(asset_id)] = name
    return split
