"""``merge``: per-asset records -> ``metadata.jsonl``, ``statistics.json`` (and latent statistics)."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from backend.fileio import write_atomic

from .layout import DataLayout, DataToolkitError, write_json

log = logging.getLogger(__name__)


def _latent_counts(records: list[dict[str, Any]], kind: str) -> dict[str, int]:
    """Encoder name -> number of records with a ``kind`` latent from it."""
    counts: dict[str, int] = defaultdict(int)
    for r in records:
        for name in r.get(f"{kind}_latent_tokens") or {}:
            counts[name] += 1
    return dict(sorted(counts.items()))


def dataset_statistics(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts, voxel/face sizes and per-step timing of a list of records."""
    ok = [r for r in records if r.get("status") == "ok"]
    voxels = [int(r["num_voxels"]) for r in ok if r.get("num_voxels") is not None]
    faces = [int(r["num_faces"]) for r in ok if r.get("num_faces") is not None]
    steps: dict[str, list[float]] = defaultdict(list)
    for r in ok:
        for step, seconds in (r.get("timing") or {}).items():
            steps[step].append(float(seconds))
    return {
        "counts": {
            "total": len(records),
            "ok": len(ok),
            "failed": sum(r.get("status") == "failed" for r in records),
            "train": sum(r.get("split") == "train" for r in ok),
            "test": sum(r.get("split") == "test" for r in ok),
        },
        "voxels": {"mean": float(np.mean(voxels)) if voxels else 0.0, "max": max(voxels, default=0)},
        "faces": {"mean": float(np.mean(faces)) if faces else 0.0, "max": max(faces, default=0)},
        "timing_seconds": {step: {"mean": float(np.mean(v)), "total": float(np.sum(v)), "count": len(v)}
                           for step, v in sorted(steps.items())},
        "latents": {kind: _latent_counts(ok, kind) for kind in ("ss", "shape", "pbr")},
    }


def latent_statistics(layout: DataLayout, records: list[dict[str, Any]], kind: str, encoder: str
                      ) -> dict[str, list[float]] | None:
    """Per-channel mean/std of ``kind`` latents over every token of the ok TRAIN assets (None if none)."""
    total = total_sq = None
    count = 0
    for r in records:
        if r.get("status") != "ok" or r.get("split") != "train":
            continue
        path = layout.latent(kind, encoder, r["id"])
        if not path.is_file():
            continue
        with np.load(path) as f:
            feats = f["feats"].astype(np.float64)
        if total is None:
            total, total_sq = np.zeros(feats.shape[1]), np.zeros(feats.shape[1])
        total += feats.sum(0)
        total_sq += (feats * feats).sum(0)
        count += feats.shape[0]
    if not count:
        return None
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
    return {"mean": mean.tolist(), "std": std.tolist(), "tokens": count}


def _single_encoder(root: Path, kind: str) -> str | None:
    folder = root / f"{kind}_latents"
    names = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if len(names) > 1:
        log.warning("%s holds latents of several encoders (%s); name one to get %s statistics",
                    folder, ", ".join(names), kind)
        return None
    return names[0] if names else None


def write_latent_stats(layout: DataLayout, records: list[dict[str, Any]], encoders: dict[str, str | None]
                       ) -> dict[str, Any] | None:
    """Write ``latent_stats.json`` for the shape/PBR encoders named (or found alone on disk)."""
    names = {kind: encoders.get(kind) or _single_encoder(layout.root, kind)
             for kind in ("shape", "pbr", "ss")}
    doc: dict[str, Any] = {"encoders": names}
    for kind in ("shape", "pbr"):
        if names[kind]:
            stats = latent_statistics(layout, records, kind, names[kind])
            if stats is not None:
                doc[kind] = stats
    if "shape" not in doc and "pbr" not in doc:
        return None
    write_json(layout.latent_stats, doc)
    return doc


def merge_records(data_dir: str | Path, encoders: dict[str, str | None] | None = None) -> dict[str, Any]:
    """Rebuild ``metadata.jsonl`` and ``statistics.json`` (and ``latent_stats.json`` if latents exist).

    Returns the statistics. Raises :class:`DataToolkitError` if the folder has no records.
    """
    layout = DataLayout(data_dir)
    records = layout.read_records()
    if not records:
        raise DataToolkitError(f"{layout.records_dir}: no records (run prepare first)")
    lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    write_atomic(layout.metadata, lines.encode())
    stats = dataset_statistics(records)
    write_json(layout.statistics, stats)
    write_latent_stats(layout, records, encoders or {})
    c = stats["counts"]
    log.info("merged %d records (%d ok, %d failed; %d train, %d test) into %s",
             c["total"], c["ok"], c["failed"], c["train"], c["test"], layout.metadata)
    return stats
