"""The dependency direction stays true: add-on -> protocol only; backend -> kernels; kernels -> torch/triton.

Two kinds of check: a static scan of every import statement (catches imports
hidden inside functions), and a fresh interpreter that imports each package
and reports what ended up in ``sys.modules``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _imported_roots(package: str) -> dict[str, set[str]]:
    """Top-level module names imported anywhere in ``package``, per file (relative imports skipped)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        roots: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots.add(node.module.split(".")[0])
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module" \
                    and node.args and isinstance(node.args[0], ast.Constant):
                roots.add(str(node.args[0].value).split(".")[0])
        found[str(path.relative_to(ROOT))] = roots
    return found


def _violations(package: str, forbidden: set[str]) -> list[str]:
    return [f"{file} imports {sorted(roots & forbidden)}"
            for file, roots in _imported_roots(package).items() if roots & forbidden]


def test_addon_never_imports_torch_triton_backend_or_kernels():
    assert _violations("trellis2_blender", {"torch", "triton", "backend", "kernels"}) == []


def test_kernels_import_neither_backend_nor_blender():
    assert _violations("kernels", {"backend", "bpy", "trellis2_blender"}) == []


def test_backend_never_imports_blender_or_the_addon():
    assert _violations("backend", {"bpy", "bmesh", "mathutils", "trellis2_blender"}) == []


def _modules_after_import(modules: list[str]) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _all_modules(package: str) -> list[str]:
    names = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        if "__main__" in parts:
            continue
        names.append(".".join(parts))
    return names


def test_backend_package_import_is_light():
    loaded = _modules_after_import(["backend"])
    assert not loaded & {"torch", "triton", "bpy", "numpy"}


@pytest.mark.slow
def test_every_backend_and_kernels_module_imports_without_blender():
    loaded = _modules_after_import(_all_modules("kernels") + _all_modules("backend"))
    assert "bpy" not in loaded and "trellis2_blender" not in loaded


def test_addon_stdlib_modules_import_without_blender():
    """The add-on's client and protocol modules run in tests and tools outside Blender."""
    loaded = _modules_after_import(["trellis2_blender.protocol", "trellis2_blender.core.client"])
    assert not loaded & {"bpy", "torch", "triton", "numpy", "backend", "kernels"}
