"""Earlier jobs in the jobs folder: list, re-import, delete, and keep the folder under a size limit.

No ``bpy``. Every job folder the add-on makes holds ``job.json`` (written when the job is sent,
rewritten when it ends): the settings, the state, the input picture and the result files.
Only folders with that file are ever listed or deleted, so a jobs folder set to a place that
holds other things never loses them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from . import atomic

log = logging.getLogger(__name__)

JOB_FILE = "job.json"


@dataclass(frozen=True)
class HistoryEntry:
    """One earlier job, as its ``job.json`` describes it."""

    folder: Path
    name: str
    kind: str
    state: str
    modified: float  # seconds since the epoch, the job file's modification time
    picture: Path | None
    results: tuple[Path, ...]  # result.json files that exist
    settings: dict = field(default_factory=dict)


def write_record(folder: Path, record: dict) -> None:
    """Write ``folder/job.json`` whole or not at all (a temporary file, then a rename)."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(folder / JOB_FILE, json.dumps(record, indent=2).encode("utf-8"))


def read_entry(folder: Path) -> HistoryEntry | None:
    """The job in ``folder``, or None when it has no readable ``job.json``."""
    path = folder / JOB_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        modified = path.stat().st_mtime
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    results = tuple(p for p in (folder / str(r) for r in record.get("results", []) if isinstance(r, str))
                    if p.is_file())
    picture = record.get("image")
    return HistoryEntry(folder=folder, name=str(record.get("name", folder.name)),
                        kind=str(record.get("kind", "generate")), state=str(record.get("state", "")),
                        modified=modified, picture=Path(picture) if isinstance(picture, str) else None,
                        results=results, settings=record)


def list_jobs(jobs_dir: Path, limit: int | None = None) -> list[HistoryEntry]:
    """The jobs in ``jobs_dir``, newest first (``limit`` of them)."""
    try:
        folders = [p for p in jobs_dir.iterdir() if p.is_dir()]
    except OSError:
        return []
    entries = [e for e in (read_entry(f) for f in folders) if e is not None]
    entries.sort(key=lambda e: e.modified, reverse=True)
    return entries[:limit] if limit is not None else entries


def folder_size(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except OSError:
                pass
    return total


def delete_job(jobs_dir: Path, folder: Path) -> None:
    """Delete one job folder; refuses anything that is not a job folder directly in ``jobs_dir``."""
    folder = Path(folder)
    if folder.resolve().parent != Path(jobs_dir).resolve() or not (folder / JOB_FILE).is_file():
        raise ValueError(f"{folder} is not a TRELLIS.2 job folder in {jobs_dir}")
    shutil.rmtree(folder)


def prune(jobs_dir: Path, max_bytes: int, keep: frozenset[Path] = frozenset()) -> list[Path]:
    """Delete the oldest job folders until all of them together take at most ``max_bytes``.

    Folders in ``keep`` (e.g. a running job's) stay. Returns the deleted folders.
    """
    entries = sorted(list_jobs(jobs_dir), key=lambda e: e.modified)
    sizes = {e.folder: folder_size(e.folder) for e in entries}
    total = sum(sizes.values())
    kept = {Path(k).resolve() for k in keep}
    removed = []
    for entry in entries:
        if total <= max_bytes:
            break
        if entry.folder.resolve() in kept:
            continue
        try:
            delete_job(jobs_dir, entry.folder)
        except OSError as exc:
            log.warning("cannot delete old job %s: %s", entry.folder, exc)
            continue
        total -= sizes[entry.folder]
        removed.append(entry.folder)
    return removed
