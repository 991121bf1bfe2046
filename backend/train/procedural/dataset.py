"""Writing a procedural data set: one GLB per object, ``split.json`` and ``objects.jsonl``.

GLB files are glTF's Y-up; the objects are built Z-up and rotated with
:func:`backend.meshio.axes.z_up_to_y_up` on the way out, so
``y_up_to_z_up(read_mesh(path))`` gives the generated mesh back. Every file is written
atomically, so an existing file is complete and a re-run skips it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.fileio import write_atomic
from backend.meshio import write_glb, z_up_to_y_up

from .generator import GENERATOR_VERSION, KIND_NAMES, SPLIT_STREAM, ProceduralObject, generate_object, kind_of
from .generator import object_id as make_object_id

log = logging.getLogger(__name__)


def held_out_indices(count: int, seed: int, test_count: int) -> list[int]:
    """The held-out indices among ``range(count)``: a fixed, kind-balanced choice drawn from the seed.

    Kinds take turns (in a seeded order), each giving up a random one of its objects,
    until ``test_count`` are chosen. Returns the indices sorted.
    """
    if not 0 <= test_count <= count:
        raise ValueError(f"test_count must lie in [0, count={count}], got {test_count}")
    stream = np.random.SeedSequence([SPLIT_STREAM, seed, count, test_count])
    rng = np.random.Generator(np.random.PCG64(stream))
    by_kind: dict[tuple[str, str], list[int]] = {k: [] for k in KIND_NAMES}
    for index in range(count):
        by_kind[kind_of(index, seed)].append(index)
    pools = [list(rng.permutation(by_kind[KIND_NAMES[k]])) for k in rng.permutation(len(KIND_NAMES))]
    chosen: list[int] = []
    while len(chosen) < test_count:
        for pool in pools:
            if pool and len(chosen) < test_count:
                chosen.append(int(pool.pop()))
    return sorted(chosen)


def object_record(obj: ProceduralObject) -> dict:
    """The ``objects.jsonl`` line of ``obj``: id, kind, sizes and a summary of each material."""
    materials = [
        {"name": m.name, "alpha_mode": m.alpha_mode, "alpha": round(float(m.base_color_factor[3]), 4),
         "metallic": round(float(m.metallic_factor), 4), "roughness": round(float(m.roughness_factor), 4),
         "metallic_roughness_texture": m.metallic_roughness_texture is not None}
        for m in obj.mesh.materials
    ]
    return {"id": obj.object_id, "index": obj.index, "category": obj.category, "name": obj.name,
            "parts": obj.part_count, "faces": obj.mesh.num_faces, "vertices": obj.mesh.num_vertices,
            "materials": materials}


def write_object(out_dir: str | os.PathLike, index: int, seed: int) -> dict:
    """Generate object ``index`` and write ``{id}.glb`` unless it exists; returns its record."""
    obj = generate_object(index, seed)
    path = Path(out_dir) / f"{obj.object_id}.glb"
    if not path.exists():
        write_glb(path, z_up_to_y_up(obj.mesh), generator=f"trellis2-blender procedural v{GENERATOR_VERSION}")
    return object_record(obj)


def _write_object_task(job: tuple[str, int, int]) -> dict:
    return write_object(*job)


@dataclass
class DatasetSummary:
    """What :func:`write_dataset` did."""

    written: int
    skipped: int
    train: list[str]
    test: list[str]


def _read_records(path: Path) -> dict[str, dict]:
    """Records of an earlier run; unreadable lines are ignored (they are regenerated)."""
    records: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                records[record["id"]] = record
            except (ValueError, KeyError, TypeError):
                continue
    return records


def write_dataset(out_dir: str | os.PathLike, count: int, seed: int, test_count: int,
                  workers: int = 1) -> DatasetSummary:
    """Write objects ``0 .. count - 1`` of ``seed`` as GLBs into ``out_dir``, plus the split and records.

    ``split.json`` holds ``{"seed", "count", "generator_version", "train": [ids], "test": [ids]}``
    with ``test_count`` held-out ids (:func:`held_out_indices`). ``objects.jsonl`` has one
    :func:`object_record` per object, in index order. Objects whose GLB and record both
    exist are skipped; ``workers`` > 1 generates in that many processes (same output).
    """
    if count < 0 or seed < 0:
        raise ValueError(f"count and seed must be non-negative, got count={count}, seed={seed}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records_path = out / "objects.jsonl"
    records = _read_records(records_path)
    todo = [i for i in range(count)
            if not ((out / f"{make_object_id(i)}.glb").is_file() and make_object_id(i) in records)]
    skipped = count - len(todo)
    log.info("procedural set: %d objects (seed %d) in %s, %d to write, %d already there",
             count, seed, out, len(todo), skipped)
    written = 0
    for record in _generate(str(out), todo, seed, workers):
        records[record["id"]] = record
        written += 1
        if written % 200 == 0:
            log.info("procedural set: %d / %d written", written, len(todo))
    ids = [make_object_id(i) for i in range(count)]
    lines = "".join(json.dumps(records[i], separators=(",", ":")) + "\n" for i in ids)
    write_atomic(records_path, lines.encode("utf-8"))
    test_set = set(held_out_indices(count, seed, test_count))
    split = {"seed": seed, "count": count, "generator_version": GENERATOR_VERSION,
             "train": [make_object_id(i) for i in range(count) if i not in test_set],
             "test": [make_object_id(i) for i in sorted(test_set)]}
    write_atomic(out / "split.json", (json.dumps(split, indent=1) + "\n").encode("utf-8"))
    return DatasetSummary(written=written, skipped=skipped, train=split["train"], test=split["test"])


def _generate(out: str, indices: list[int], seed: int, workers: int) -> Iterator[dict]:
    jobs = [(out, i, seed) for i in indices]
    if workers <= 1 or len(jobs) < 2:
        yield from map(_write_object_task, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_write_object_task, jobs, chunksize=16)
