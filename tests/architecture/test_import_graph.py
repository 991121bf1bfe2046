"""No import circle anywhere, and the add-on's core stays free of Blender.

The import graph is read from the source (every ``import`` statement, those inside functions
included, since a deferred import still ties two modules together). A circle is a set of
modules that reach each other; importing a submodule first runs its package's ``__init__``,
so the edge from a module to the package that contains it is not counted.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("trellis2_blender", "backend", "kernels", "scripts", "tests")
CORE = "trellis2_blender.core"
CONTRACT = "trellis2_blender.protocol"


def module_files(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file under ``packages``."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            found[".".join(parts)] = path
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the modules of ``packages`` it imports."""
    modules = module_files(root, packages)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: "." is this package, ".." its parent
                    anchor = package[:len(package) - node.level + 1]
                    base = ".".join([*anchor, node.module] if node.module else anchor)
                else:
                    base = node.module or ""
                for alias in node.names:  # "from pkg import mod" imports the submodule when there is one
                    targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        resolved = {_resolve(t, modules) for t in targets}
        graph[name] = {t for t in resolved if t and t != name and not name.startswith(t + ".")}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_circle_anywhere():
    assert circles(import_graph(ROOT)) == []


def test_a_circle_through_a_deferred_import_is_found(tmp_path):
    """The check itself: ``a -> b`` at the top, ``b -> a`` inside a function, is reported."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from . import b\n")
    (package / "b.py").write_text("def f():\n    from .a import thing\n")
    (package / "c.py").write_text("from pkg import a\n")  # depends on the circle, is not part of it
    assert circles(import_graph(tmp_path, ("pkg",))) == [["pkg.a", "pkg.b"]]


def test_addon_core_imports_only_itself_and_the_contract():
    graph = import_graph(ROOT)
    outside = {name: sorted(t for t in targets if not t.startswith(CORE) and t != CONTRACT)
               for name, targets in graph.items() if name.startswith(CORE)}
    assert {name: targets for name, targets in outside.items() if targets} == {}
    assert len(outside) > 5  # the core folder is where this test expects it


def test_addon_core_runs_without_blender():
    names = sorted(name for name in module_files(ROOT, ("trellis2_blender",)) if name.startswith(CORE))
    code = ("import importlib, json, sys\n"
            f"for name in {names!r}:\n"
            "    importlib.import_module(name)\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert not set(json.loads(out.stdout.strip().splitlines()[-1])) & {"bpy", "torch", "backend", "kernels"}
