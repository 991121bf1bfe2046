"""The README's main command: image(s) -> .glb, .blend and a preview .png per asset.

Runs the backend (``python -m backend generate``) in a child process with this
interpreter, then imports each result into Blender (the ``bpy`` module) with
the add-on's own importer, saves a ``.blend`` and renders a preview picture.
Torch and Blender never share a process.

Usage: ``bash scripts/generate.sh IMAGE... -o OUT/ [--model PATH|REPO|mini] [backend options]``;
options other than ``-o`` go to ``python -m backend generate`` unchanged. ``--model mini`` uses the
small bundled model (trained on procedural objects); without ``--model``, the official weights are
used, or the bundled model with a warning when they are neither local nor downloadable. Each
asset's ``result.json`` records which (``"model": {"source", "path"}``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run_backend(argv: list[str]) -> int:
    cmd = [sys.executable, "-m", "backend", "generate", *argv]
    return subprocess.run(cmd, cwd=ROOT).returncode


def _result_files(out_dir: Path) -> dict[Path, int]:
    """Every direct result under ``out_dir`` (one folder per asset) and its modification time."""
    return {p: p.stat().st_mtime_ns for p in sorted(out_dir.glob("*/result.json"))}


def _blend_and_preview(results: list[Path], out_dir: Path) -> list[str]:
    """Import each of ``results`` into its own .blend plus a preview PNG in ``out_dir``."""
    from scripts.blender_outputs import write_blend_and_preview

    written = []
    for result_json in results:
        written += write_blend_and_preview(result_json, out_dir)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=False)
    parser.add_argument("-o", "--output", type=Path, required=False)
    parser.add_argument("-h", "--help", action="store_true")
    known, rest = parser.parse_known_args(argv)
    if known.help or known.output is None:
        sys.stdout.write(__doc__ + "\n")
        if known.output is None and not known.help:
            sys.stderr.write("error: -o/--output OUT/ is required\n")
            return 2
        return _run_backend(["--help"])
    out_dir = known.output.resolve()
    backend_args = [str(Path(a).resolve()) if Path(a).exists() else a for a in rest]
    before = _result_files(out_dir) if out_dir.is_dir() else {}
    rc = _run_backend([*backend_args, "-o", str(out_dir)])
    if rc != 0:
        return rc
    if "--no-direct" in rest:
        sys.stderr.write("note: --no-direct writes only the .glb files; no .blend or preview is made "
                         "(they are built from the direct result folder)\n")
    # Only what this run wrote: results already in OUT from earlier runs are left as they are.
    new = [p for p, stamp in _result_files(out_dir).items() if before.get(p) != stamp]
    written = _blend_and_preview(new, out_dir)
    sys.stdout.write(json.dumps({"output": str(out_dir), "blender_files": written}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
