#!/usr/bin/env bash
# The main job: image(s) -> 3D asset (.glb, .blend, preview .png) in an output folder.
# Sets up .venv first (reused when present). Arguments: see `bash scripts/generate.sh --help`.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="$(python3 "$ROOT/scripts/bootstrap.py" --extras blender)"
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" "$ROOT/scripts/generate.py" "$@"
