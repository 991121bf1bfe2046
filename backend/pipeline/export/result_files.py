"""Putting an asset's files in place as a whole, and choosing names that replace nothing.

An asset is ``<out>/<name>.glb`` plus the result folder ``<out>/<name>/``. They are written
into a hidden staging folder inside ``<out>`` (the same file system, so moves are renames)
and moved into place only once every file is complete: a failure while writing (a full
disk, a folder that cannot be written) leaves the earlier result as it was and no partial
files. Replacing an earlier result moves its folder aside, moves the new one in, then
replaces the GLB; if a move fails, the earlier result is put back.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from ..api import check_output_name

log = logging.getLogger(__name__)

STAGING_SUFFIX = ".staging"
STALE_STAGING_S = 3600.0  # a staging folder this old belongs to an export that was killed


def free_name(out_dir: Path, base: str, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """``base``, or ``base-2``, ``base-3``, ... : the first whose files do not exist in ``out_dir``
    and that is not in ``taken`` (names already given in the same job)."""
    name, k = base, 1
    while name in taken or (out_dir / f"{name}.glb").exists() or (out_dir / name).exists():
        k += 1
        name = check_output_name(f"{base}-{k}")
    return name


class StagedAsset:
    """The staging paths of one asset; :meth:`commit` moves them into place, :meth:`discard` drops them.

    Use as a context manager: leaving the block with an exception discards the staging folder.
    """

    def __init__(self, out_dir: Path, name: str) -> None:
        self.name = check_output_name(name)
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.final_glb = self.out_dir / f"{name}.glb"
        self.final_folder = self.out_dir / name
        self._check_targets()
        _remove_stale_staging(self.out_dir, name)
        self.stage = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=STAGING_SUFFIX, dir=self.out_dir))
        self.glb = self.stage / f"{name}.glb"
        self.folder = self.stage / name

    def _check_targets(self) -> None:
        """Refuse to replace anything but an earlier result: a file where the folder goes, a folder
        where the GLB goes."""
        if self.final_folder.exists() and not self.final_folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "a file is in the way of the result folder",
                                     str(self.final_folder))
        if self.final_glb.is_dir():
            raise IsADirectoryError(errno.EISDIR, "a folder is in the way of the GLB", str(self.final_glb))

    def __enter__(self) -> StagedAsset:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.discard()

    def commit(self) -> None:
        """Move the staged GLB and folder (those that were written) into place."""
        aside = self.stage / ".previous"
        moved_old = moved_new = False
        try:
            self._check_targets()
            if self.folder.exists():
                if self.final_folder.exists():
                    os.replace(self.final_folder, aside)
                    moved_old = True
                os.replace(self.folder, self.final_folder)
                moved_new = True
            if self.glb.exists():
                os.replace(self.glb, self.final_glb)
        except OSError:
            if moved_new:
                os.replace(self.final_folder, self.folder)
            if moved_old:
                os.replace(aside, self.final_folder)
            raise
        finally:
            self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)


def _remove_stale_staging(out_dir: Path, name: str) -> None:
    now = time.time()
    for old in out_dir.glob(f".{name}.*{STAGING_SUFFIX}"):
        try:
            if now - old.stat().st_mtime > STALE_STAGING_S:
                shutil.rmtree(old)
                log.info("removed %s, left by an export that did not finish", old)
        except OSError:
            pass
