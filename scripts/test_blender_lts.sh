#!/usr/bin/env bash
# The Blender tests against Blender 4.2 LTS, the oldest Blender the extension supports
# (blender_version_min in blender_manifest.toml), using the bpy 4.2 wheel in a venv of its own.
# pytest, the tiny checkpoint and the backend stay on .venv (set up first: bash scripts/test.sh);
# only the bpy scripts run under 4.2 (the --bpy-python option of the test suite).
#
#   bash scripts/test_blender_lts.sh [extra pytest arguments]
#
# The 4.2 venv (bpy 4.2.23, the newest 4.2 LTS wheel, with numpy 1.26.4 as Blender 4.2 bundles it)
# is made on first use in ~/.cache/trellis2-blender/venv-bpy-4.2 and reused.
#
# Deselected: the two batch-script tests that export GLB. The bpy 4.2 *module* crashes (SIGSEGV in
# its C++ exit-time destructors, bpy_class_free after Python is finalized) at interpreter exit
# once any glTF export ran, even in a script that only exports a cube; their reports are complete
# but the exit code is lost. Blender 4.2 itself exits through its own shutdown and is expected not to
# be affected (not tested: there is no Blender 4.2 program here, only the bpy module).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="4.2.23"
VENV="$HOME/.cache/trellis2-blender/venv-bpy-4.2"
if [ ! -x .venv/bin/python ]; then
    echo "no .venv: run bash scripts/test.sh once first" >&2
    exit 2
fi
if ! "$VENV/bin/python" -c "import bpy, sys; sys.exit(bpy.app.version_string.split()[0] != '$VERSION')" 2>/dev/null; then
    BASE="$(.venv/bin/python -c 'import sys; print(sys._base_executable)')"
    "$BASE" -m venv --clear "$VENV"
    "$VENV/bin/python" -m pip install --quiet "bpy==$VERSION" "numpy==1.26.4"
fi
exec .venv/bin/python -m pytest tests/blender --bpy-python "$VENV/bin/python" \
    --deselect tests/blender/test_batch.py::test_batch_folder_report_exit_code_and_rerun \
    --deselect tests/blender/test_real_backend.py::test_batch_on_the_tiny_checkpoint_with_preview \
    "$@"
