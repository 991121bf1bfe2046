"""Run a script with Blender's ``bpy`` module in a child process and collect its JSON answer.

``bpy`` keeps global state and does not mix with torch, so the pytest process never
imports it. Each call starts the given interpreter (the ``bpy_python`` fixture: this venv's,
or another one with a different ``bpy`` wheel given by ``--bpy-python``) with a private
Blender user folder (``BLENDER_USER_RESOURCES``), so nothing reaches the real configuration.
``PYTHON``, the interpreter running pytest, is always the backend's.

The child script reports through :func:`emit` (defined in the prelude that is
prepended to every script): one line ``@@TRELLIS2_RESULT@@ <json>`` on stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYTHON = Path(sys.executable)
MARKER = "@@TRELLIS2_RESULT@@"

PRELUDE = textwrap.dedent(f"""
    import json as _json
    import sys as _sys
    def emit(value):
        _sys.stdout.write({MARKER!r} + " " + _json.dumps(value) + "\\n")
        _sys.stdout.flush()
    """)


@dataclass
class BpyRun:
    returncode: int
    result: object
    stdout: str
    stderr: str

    def describe(self) -> str:
        return (f"exit {self.returncode}\n--- stdout ---\n{self.stdout[-4000:]}\n"
                f"--- stderr ---\n{self.stderr[-4000:]}")


def run_bpy(script: str, tmp_path: Path, *, python: Path, args: tuple[str, ...] = (), timeout: float = 240,
            user_dir: Path | None = None, script_name: str = "bpy_script.py") -> BpyRun:
    """Run ``script`` (source text) under ``python`` with a private Blender user folder.

    ``result`` is the value of the last :func:`emit` call (None if there was none).
    The repository root is on ``sys.path`` so the script may import test helpers.
    """
    user_dir = user_dir or tmp_path / "blender_user"
    user_dir.mkdir(parents=True, exist_ok=True)
    path = tmp_path / script_name
    path.write_text(PRELUDE + textwrap.dedent(script))
    return run_python([str(path), *args], python=python, user_dir=user_dir, timeout=timeout)


def run_python(argv: list[str], *, python: Path, user_dir: Path, timeout: float = 240,
               cwd: Path | None = None) -> BpyRun:
    """Run ``python argv...`` with the private Blender user folder; parse the last result line."""
    env = dict(os.environ)
    env["BLENDER_USER_RESOURCES"] = str(user_dir)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    proc = subprocess.run([str(python), *argv], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=str(cwd or REPO))
    result = None
    for line in proc.stdout.splitlines():
        if line.startswith(MARKER):
            result = json.loads(line[len(MARKER):])
    return BpyRun(proc.returncode, result, proc.stdout, proc.stderr)
