"""Nothing the backend, the kernels or the add-on import is tied to one operating system.

A static scan of every module: a POSIX-only module (``resource``, ``fcntl``, ...) or a
Windows-only one (``msvcrt``, ``winreg``, ...), and POSIX-only attributes such as
``os.fork`` or ``signal.SIGKILL``, may appear only under a guard: inside a ``try`` that
catches ``ImportError`` (or ``AttributeError`` for attributes), or under an ``if`` that tests
``sys.platform``, ``os.name`` or ``platform.system()``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("backend", "kernels", "trellis2_blender")

POSIX_ONLY_MODULES = {"resource", "fcntl", "termios", "tty", "pty", "pwd", "grp", "posix", "crypt",
                      "syslog", "spwd", "nis", "readline", "curses"}
WINDOWS_ONLY_MODULES = {"msvcrt", "winreg", "winsound", "_winapi"}
ONE_OS_MODULES = POSIX_ONLY_MODULES | WINDOWS_ONLY_MODULES
POSIX_ONLY_ATTRIBUTES = {("os", "fork"), ("os", "getuid"), ("os", "geteuid"), ("os", "getgid"),
                         ("os", "killpg"), ("os", "setsid"), ("os", "getpgid"), ("os", "setpgrp"),
                         ("os", "uname"), ("signal", "SIGKILL"), ("signal", "SIGHUP"),
                         ("signal", "SIGQUIT"), ("signal", "SIGUSR1"), ("signal", "SIGUSR2"),
                         ("signal", "SIGALRM"), ("signal", "alarm"), ("signal", "SIGCHLD")}
PLATFORM_TESTS = ("sys.platform", "os.name", "platform.system")
IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}
ATTRIBUTE_ERRORS = {"AttributeError", "Exception", "BaseException"}


def _caught(handler: ast.ExceptHandler) -> set[str]:
    if handler.type is None:
        return {"BaseException"}
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return {ast.unparse(n).split(".")[-1] for n in names}


def _guarded(ancestors: list[ast.AST], errors: set[str]) -> bool:
    for node in ancestors:
        if isinstance(node, ast.Try) and any(_caught(h) & errors for h in node.handlers):
            return True
        if isinstance(node, (ast.If, ast.IfExp)) and any(t in ast.unparse(node.test) for t in PLATFORM_TESTS):
            return True
    return False


def unguarded_platform_uses(source: str) -> list[str]:
    """``"line N: what"`` for each platform-specific import or attribute without a guard."""
    found: list[str] = []

    def visit(node: ast.AST, ancestors: list[ast.AST]) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if node.level == 0 else []
            for name in names:
                root = name.split(".")[0]
                if root in ONE_OS_MODULES and not _guarded(ancestors, IMPORT_ERRORS):
                    found.append(f"line {node.lineno}: import {name}")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and (node.value.id, node.attr) in POSIX_ONLY_ATTRIBUTES \
                and not _guarded(ancestors, ATTRIBUTE_ERRORS):
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
        for child in ast.iter_child_nodes(node):
            visit(child, [*ancestors, node])

    visit(ast.parse(source), [])
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_no_unguarded_platform_specific_code(package):
    problems = [f"{path.relative_to(ROOT)} {use}"
                for path in sorted((ROOT / package).rglob("*.py"))
                for use in unguarded_platform_uses(path.read_text(encoding="utf-8"))]
    assert problems == []


@pytest.mark.parametrize("source, expected", [
    ("import resource\n", ["line 1: import resource"]),
    ("def f():\n    from fcntl import flock\n", ["line 2: import fcntl"]),
    ("import os\nos.fork()\n", ["line 2: os.fork"]),
    ("import msvcrt\n", ["line 1: import msvcrt"]),
    ("try:\n    import resource\nexcept ImportError:\n    resource = None\n", []),
    ("import sys\nif sys.platform != 'win32':\n    import fcntl\n", []),
    ("import os, signal\nsig = signal.SIGKILL if os.name != 'nt' else signal.SIGTERM\n", []),
    ("try:\n    import resource\nexcept ValueError:\n    pass\n", ["line 2: import resource"]),
])
def test_the_scan_finds_unguarded_uses(source, expected):
    assert unguarded_platform_uses(source) == expected


def test_peak_memory_without_resource(monkeypatch):
    """The generator's CPU peak-memory figure works where ``resource`` does not exist (Windows)."""
    from backend.pipeline import process_memory

    monkeypatch.setitem(sys.modules, "resource", None)  # `import resource` now raises ImportError
    assert process_memory.peak_rss_bytes() == 0  # no psapi on Linux: 0, and no exception


def test_peak_memory_with_resource():
    from backend.pipeline import process_memory

    assert process_memory.peak_rss_bytes() > 10 * 2**20  # this interpreter holds more than 10 MiB
