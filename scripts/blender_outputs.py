"""Turn one backend result folder into ``<name>.blend`` and ``<name>_preview.png`` (bpy module).

Used by ``scripts/generate.py`` after the backend has written its direct result;
it goes through the add-on's own importer, so the .blend holds exactly what an
artist gets from the N-panel.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import bpy

from trellis2_blender import render, scene_io


def write_blend_and_preview(result_json: Path, out_dir: Path, *, preview_size: int = 512,
                            samples: int = 16) -> list[str]:
    """Import ``result_json`` into an empty scene; save the .blend and render a preview.

    Both files are written to a temporary name first and renamed into place, so a
    failure never leaves a half-written file behind.
    """
    bpy.ops.wm.read_factory_settings(use_empty=True)
    obj = scene_io.import_result(bpy.context, result_json, location=(0.0, 0.0, 0.0))
    name = obj.name
    blend = out_dir / f"{name}.blend"
    preview = out_dir / f"{name}_preview.png"

    tmp_png = preview.with_name(f".{preview.stem}.tmp.png")
    render.render_preview(obj, tmp_png, size=preview_size, samples=samples)
    os.replace(tmp_png, preview)

    tmp_blend = blend.with_name(f".{blend.stem}.tmp.blend")
    with _quiet_stdout():  # Blender prints "Saved copy as .<name>.tmp.blend", a name the user never sees
        bpy.ops.wm.save_as_mainfile(filepath=str(tmp_blend), copy=True, compress=True)
    os.replace(tmp_blend, blend)
    return [str(blend), str(preview)]


@contextlib.contextmanager
def _quiet_stdout():
    """Send file descriptor 1 (where Blender's C code prints) to the null device meanwhile."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
