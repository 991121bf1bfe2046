"""The extension zip builds, installs into Blender, enables, and registers symmetrically."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from scripts import build_extension
from tests.blender.runner import run_bpy

pytestmark = pytest.mark.blender


def test_zip_layout(tmp_path):
    zip_path = build_extension.build(tmp_path)
    assert zip_path.name == "trellis2_blender-0.1.0.zip"
    names = set(zipfile.ZipFile(zip_path).namelist())
    assert {"blender_manifest.toml", "__init__.py", "preferences.py", "ui.py"} <= names
    assert "payload/backend/__init__.py" in names
    assert "payload/pyproject.toml" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if n.startswith("trellis2_blender/")], "add-on files must be at the root"
    assert list(tmp_path.glob("*.tmp")) == []


def test_zip_is_readable_by_others_as_any_new_file(tmp_path):
    import os
    import stat

    umask = os.umask(0o022)
    try:
        mode = stat.S_IMODE(build_extension.build(tmp_path).stat().st_mode)
    finally:
        os.umask(umask)
    assert mode == 0o644


def test_zip_carries_the_contract_from_backend_even_over_a_stale_placed_copy(tmp_path):
    """The add-on's ``protocol`` module in the zip is ``backend/protocol.py``, once."""
    placed = build_extension.place_contract()
    placed.write_text("# a stale copy from an earlier checkout\n")
    try:
        with zipfile.ZipFile(build_extension.build(tmp_path)) as zf:
            entries = [n for n in zf.namelist() if n == "protocol.py"]
            assert entries == ["protocol.py"]
            assert zf.read("protocol.py") == (build_extension.ROOT / "backend" / "protocol.py").read_bytes()
    finally:
        build_extension.place_contract()


INSTALL_SCRIPT = """
import sys
from pathlib import Path
import bpy
import addon_utils

zip_path = sys.argv[-1]
repo = next(r for r in bpy.context.preferences.extensions.repos if r.module == "user_default")
ret = bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default",
                                               enable_on_install=True)
module = "bl_ext.user_default.trellis2_blender"
installed = Path(repo.directory, "trellis2_blender")
enabled = module in {a.module for a in bpy.context.preferences.addons}
mod = sys.modules[module]
prefs = bpy.context.preferences.addons[module].preferences if enabled else None
prefs_idname = type(prefs).bl_idname if prefs is not None else None
cycles = []
for _ in range(2):
    mod.unregister()
    gone = not hasattr(bpy.types.Scene, "trellis2") and not hasattr(bpy.types, "VIEW3D_PT_trellis2")
    mod.register()
    back = hasattr(bpy.types.Scene, "trellis2") and hasattr(bpy.types, "VIEW3D_PT_trellis2")
    cycles.append([gone, back])
addon_utils.disable(module)
emit({
    "ret": sorted(ret),
    "repo_dir": repo.directory,
    "installed": installed.is_dir(),
    "payload": (installed / "payload" / "backend" / "__init__.py").is_file(),
    "enabled": enabled,
    "prefs_idname": prefs_idname,
    "cycles": cycles,
    "disabled_clean": not hasattr(bpy.types.Scene, "trellis2"),
    "torch_imported": "torch" in sys.modules,
})
"""


def test_install_enable_register_twice(tmp_path, bpy_python):
    zip_path = build_extension.build(tmp_path / "dist")
    run = run_bpy(INSTALL_SCRIPT, tmp_path, python=bpy_python, args=(str(zip_path),))
    assert run.returncode == 0, run.describe()
    res = run.result
    assert res is not None, run.describe()
    assert res["ret"] == ["FINISHED"]
    assert res["repo_dir"].startswith(str(tmp_path)), "must install into the private user folder"
    assert res["installed"] and res["payload"]
    assert res["enabled"]
    assert res["prefs_idname"] == "bl_ext.user_default.trellis2_blender"
    assert res["cycles"] == [[True, True], [True, True]]
    assert res["disabled_clean"]
    assert not res["torch_imported"]


BLENDER_PLATFORMS = {"windows-x64", "windows-arm64", "macos-x64", "macos-arm64", "linux-x64"}


def _blender_ext_cli() -> Path:
    """Blender's own extension tool (``blender --command extension``) from the bpy module."""
    spec = importlib.util.find_spec("bpy")
    found = sorted(Path(spec.origin).parent.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    if not found:
        pytest.skip("this bpy has no bl_pkg command-line tool")
    return found[-1]


def test_zip_passes_blenders_validator_and_carries_the_licences(tmp_path):
    zip_path = build_extension.build(tmp_path)
    run = subprocess.run([sys.executable, str(_blender_ext_cli()), "validate", str(zip_path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    names = set(zipfile.ZipFile(zip_path).namelist())
    assert {"LICENSE", "NOTICE"} <= names


def test_manifest_is_ours_and_its_platforms_are_blenders():
    manifest = build_extension.read_manifest()
    assert "microsoft" not in manifest.get("website", "").lower()  # our bugs must not go upstream
    assert "microsoft" not in manifest["maintainer"].lower()
    assert manifest["platforms"] and set(manifest["platforms"]) <= BLENDER_PLATFORMS
    assert manifest["license"] == ["SPDX:GPL-3.0-or-later"]
    licence = (build_extension.ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "GNU GENERAL PUBLIC LICENSE" in licence and "MIT License" in licence
    notice = (build_extension.ROOT / "NOTICE").read_text(encoding="utf-8")
    for part in ("TRELLIS.2-4B", "dinov3", "RMBG-2.0", "nvdiffrast", "NON-COMMERCIAL"):
        assert part in notice
