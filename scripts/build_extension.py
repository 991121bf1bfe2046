"""Build the installable Blender extension zip (standard library only).

The repository keeps ``blender_manifest.toml`` at its root and the add-on code in
``trellis2_blender/``; an extension zip needs both side by side at its root. The
backend sources travel inside the add-on as payload, so an installed extension can
start its own backend once a backend Python environment exists::

    blender_manifest.toml
    __init__.py, preferences.py, ...       (from trellis2_blender/)
    protocol.py                            (the job contract, from backend/protocol.py)
    payload/backend/...                    (from backend/)
    payload/kernels/...                    (from kernels/)
    payload/pyproject.toml                 (the backend's dependency list)
    LICENSE, NOTICE                        (which licence covers what; third-party licences)

The job contract is written once, in ``backend/protocol.py`` (stdlib only); the add-on
imports it as its own ``protocol`` module, because an installed extension cannot import the
backend by name. The zip gets it from ``backend/``. A checkout has no committed copy: whatever
runs the add-on from the source folder (the test harness, ``scripts/batch_generate.py``)
calls :func:`place_contract` first, which writes ``trellis2_blender/protocol.py`` (ignored by
git) when it is missing or differs from the source.

Usage: ``python scripts/build_extension.py [--output DIR] [--place-contract]``; prints the
zip's path (or the placed contract's). The zip is written to a temporary file next to the
target and then renamed, so a half-written archive never carries the final name.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.fileio import write_atomic  # noqa: E402  (stdlib only: no environment needed)

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = "blender_manifest.toml"
ADDON_DIR = "trellis2_blender"
# (source relative to the repository root, destination inside the zip)
PAYLOAD = (("backend", "payload/backend"), ("kernels", "payload/kernels"),
           ("pyproject.toml", "payload/pyproject.toml"), ("LICENSE", "LICENSE"), ("NOTICE", "NOTICE"))
ALWAYS_EXCLUDED = ("__pycache__/", "*.pyc", "*.pyo", ".DS_Store")
# The job contract: its one source, and its module name inside the add-on package.
CONTRACT_SOURCE = "backend/protocol.py"
CONTRACT_MODULE = "protocol.py"


def place_contract(root: Path = ROOT) -> Path:
    """Write the contract into the checkout's add-on folder when it is missing or stale.

    Written to a temporary file and renamed, so a concurrent importer sees the old file or
    the new one, never half of one. Returns the placed file.
    """
    source_path = root / CONTRACT_SOURCE
    source = source_path.read_bytes()
    target = root / ADDON_DIR / CONTRACT_MODULE
    if target.is_file() and target.read_bytes() == source:
        return target
    return write_atomic(target, source)


def read_manifest(root: Path = ROOT) -> dict:
    with open(root / MANIFEST, "rb") as fh:
        return tomllib.load(fh)


def is_excluded(rel_path: str, is_dir: bool, patterns: list[str]) -> bool:
    """A small subset of gitignore matching, as the manifest's ``paths_exclude_pattern`` uses.

    ``dir/`` matches directories only, a leading ``/`` anchors the pattern at the
    source's top, anything else matches the last path component.
    """
    name = rel_path.rsplit("/", 1)[-1]
    for pattern in patterns:
        dir_only = pattern.endswith("/")
        pat = pattern.rstrip("/")
        if dir_only and not is_dir:
            continue
        if pat.startswith("/"):
            if fnmatch.fnmatchcase(rel_path, pat[1:]):
                return True
        elif fnmatch.fnmatchcase(name, pat):
            return True
    return False


def _walk(source: Path, patterns: list[str]) -> Iterator[tuple[Path, str]]:
    """Yield (file, path relative to ``source``) for every file that is not excluded."""
    if source.is_file():
        yield source, ""
        return
    for dirpath, dirnames, filenames in os.walk(source):
        base = Path(dirpath)
        rel_base = base.relative_to(source).as_posix()
        rel_base = "" if rel_base == "." else rel_base + "/"
        dirnames[:] = sorted(d for d in dirnames if not is_excluded(rel_base + d, True, patterns))
        for filename in sorted(filenames):
            if not is_excluded(rel_base + filename, False, patterns):
                yield base / filename, rel_base + filename


def staged_files(root: Path = ROOT) -> list[tuple[Path, str]]:
    """Every (source file, name in the zip) that the extension contains, in a stable order."""
    manifest = read_manifest(root)
    patterns = list(ALWAYS_EXCLUDED) + list(manifest.get("build", {}).get("paths_exclude_pattern", []))
    files: list[tuple[Path, str]] = [(root / MANIFEST, MANIFEST)]
    # A contract placed in the checkout is left out: the zip takes the source itself.
    files += [(file, rel) for file, rel in _walk(root / ADDON_DIR, patterns) if rel != CONTRACT_MODULE]
    files.append((root / CONTRACT_SOURCE, CONTRACT_MODULE))
    for src, dest in PAYLOAD:
        path = root / src
        if not path.exists():
            continue
        for file, rel in _walk(path, patterns):
            files.append((file, f"{dest}/{rel}" if rel else dest))
    if not any(name == "__init__.py" for _, name in files):
        raise SystemExit(f"build_extension: {ADDON_DIR}/__init__.py is missing")
    return files


def build(output_dir: Path, root: Path = ROOT) -> Path:
    manifest = read_manifest(root)
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / f"{manifest['id']}-{manifest['version']}.zip"

    def write_zip(handle) -> None:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for file, name in staged_files(root):
                zf.write(file, name)

    return write_atomic(target, write_zip)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "build",
                        help="folder for the zip (default: build/)")
    parser.add_argument("--place-contract", action="store_true",
                        help=f"only write {ADDON_DIR}/{CONTRACT_MODULE} from {CONTRACT_SOURCE}, to run the "
                             "add-on from this checkout")
    args = parser.parse_args(argv)
    print(place_contract() if args.place_contract else build(args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
