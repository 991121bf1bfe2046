"""Create the backend's own Python environment (no ``bpy``; never touches Blender's Python).

Steps, each a child process whose output goes to a log file: make a venv with a system
Python (3.11+), upgrade pip in it, install the backend's dependencies listed in the
bundled ``pyproject.toml``. Runs on a helper thread; the UI polls :class:`SetupTask`.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import tomllib
from pathlib import Path

from .paths import venv_python

PYTHON_NAMES = ("python3.12", "python3.11", "python3", "python")


def find_base_python() -> str | None:
    """A system interpreter new enough to host the backend, or None."""
    for name in PYTHON_NAMES:
        path = shutil.which(name)
        if path is None:
            continue
        try:
            out = subprocess.run([path, "-c", "import sys; print(sys.version_info >= (3, 11))"],
                                 capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.stdout.strip() == "True":
            return path
    return None


def requirements(pyproject: Path, extras: tuple[str, ...] = ()) -> list[str]:
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    reqs = list(data["project"]["dependencies"])
    optional = data["project"].get("optional-dependencies", {})
    for extra in extras:
        reqs += optional.get(extra, [])
    return reqs


class SetupTask:
    """The three set-up steps on a helper thread; ``state`` is running, ok, error or cancelled."""

    def __init__(self, base_python: str, env_dir: Path, pyproject: Path, log_path: Path) -> None:
        self.env_dir = env_dir
        self.log_path = log_path
        python = str(venv_python(env_dir))
        self.steps = [
            ("Creating the environment", [base_python, "-m", "venv", str(env_dir)]),
            ("Updating pip", [python, "-m", "pip", "install", "--upgrade", "pip"]),
            ("Installing torch and the backend's libraries",
             [python, "-m", "pip", "install", *requirements(pyproject)]),
        ]
        self.state = "running"
        self.step = 0
        self.message = ""
        self._proc: subprocess.Popen | None = None
        self._cancelled = False
        self._thread = threading.Thread(target=self._run, daemon=True, name="trellis2-setup")

    @property
    def fraction(self) -> float:
        return self.step / len(self.steps)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def cancel(self) -> None:
        self._cancelled = True
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()

    def _run(self) -> None:
        with open(self.log_path, "a", encoding="utf-8") as log:
            for index, (title, command) in enumerate(self.steps):
                self.step, self.message = index, title
                if self._cancelled:
                    self.state = "cancelled"
                    return
                log.write(f"$ {' '.join(command)}\n")
                log.flush()
                try:
                    self._proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
                    code = self._proc.wait()
                except OSError as exc:
                    self.state, self.message = "error", f"{title}: {exc}"
                    return
                if self._cancelled:
                    self.state = "cancelled"
                    return
                if code != 0:
                    self.state = "error"
                    self.message = f"{title} failed (exit code {code}); see {self.log_path}"
                    return
            self.step, self.state, self.message = len(self.steps), "ok", "The backend environment is ready"
