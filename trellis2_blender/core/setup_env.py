"""Create the backend's own Python environment (no ``bpy``; never touches Blender's Python).

Steps, each a child process whose output goes to a log file: make a venv with a system
Python (3.11+), upgrade pip in it, install torch from the index that suits this machine
(:func:`choose_torch_build`), then the backend's other dependencies listed in the bundled
``pyproject.toml``. Runs on a helper thread; the UI polls :class:`SetupTask`.

Which torch: the Python Package Index has a CPU-only torch for Windows and a CUDA torch for
Linux that does not fit every driver, so on Windows and Linux the build comes from the
PyTorch wheel index for the CUDA version the NVIDIA driver supports (``nvidia-smi``), or its
CPU index without an NVIDIA GPU; macOS takes the Package Index's build (Apple GPU support
included on Apple Silicon). Every command is an argument list, never a shell line, so
folders with spaces or non-ASCII user names need no quoting.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PYTHON_NAMES = ("python3.12", "python3.11", "python3", "python")
PYTORCH_INDEX = "https://download.pytorch.org/whl"
# CUDA builds the pinned torch is published for, newest first: (CUDA version the driver must
# support at least, wheel index tag). A driver supports every CUDA version up to the one
# ``nvidia-smi`` reports.
CUDA_WHEELS: tuple[tuple[tuple[int, int], str], ...] = (((13, 0), "cu130"), ((12, 8), "cu128"),
                                                        ((12, 6), "cu126"))
_NVIDIA_SMI_CUDA = re.compile(r"CUDA Version:\s*(\d+)\.(\d+)")


@dataclass(frozen=True)
class TorchBuild:
    """Where torch comes from: ``index_url`` (None: the Python Package Index), a short ``label``
    ("CUDA 12.8", "CPU") and ``reason``, the one sentence the UI shows."""

    index_url: str | None
    label: str
    reason: str


def venv_python(env_dir: Path) -> Path:
    """The interpreter of the virtual environment in ``env_dir``."""
    return env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def choose_torch_build(system: str, driver_cuda: tuple[int, int] | None) -> TorchBuild:
    """The torch build for ``system`` (``platform.system()``: Windows, Linux, Darwin) and the CUDA
    version the NVIDIA driver supports (None: no NVIDIA driver found)."""
    if system == "Darwin":
        return TorchBuild(None, "macOS (Apple GPU on Apple Silicon)",
                          "macOS: the Python Package Index's torch, which drives Apple GPUs (MPS)")
    if driver_cuda is None:
        return TorchBuild(f"{PYTORCH_INDEX}/cpu", "CPU",
                          "no NVIDIA driver found (nvidia-smi): the CPU build; generation will be very slow")
    driver = f"{driver_cuda[0]}.{driver_cuda[1]}"
    for minimum, tag in CUDA_WHEELS:
        if driver_cuda >= minimum:
            cuda = f"{minimum[0]}.{minimum[1]}"
            return TorchBuild(f"{PYTORCH_INDEX}/{tag}", f"CUDA {cuda}",
                              f"the NVIDIA driver supports CUDA {driver}: the CUDA {cuda} build")
    oldest = ".".join(map(str, CUDA_WHEELS[-1][0]))
    return TorchBuild(f"{PYTORCH_INDEX}/cpu", "CPU",
                      f"the NVIDIA driver supports only CUDA {driver} and torch needs {oldest} or newer: "
                      "the CPU build; update the NVIDIA driver and set the backend up again for the GPU")


def parse_driver_cuda(nvidia_smi_output: str) -> tuple[int, int] | None:
    """The ``CUDA Version: X.Y`` of ``nvidia-smi``'s header, or None."""
    found = _NVIDIA_SMI_CUDA.search(nvidia_smi_output)
    return (int(found.group(1)), int(found.group(2))) if found else None


def detect_driver_cuda(
        run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> tuple[int, int] | None:
    """The CUDA version this machine's NVIDIA driver supports (None: no driver, or no answer);
    ``run`` runs ``nvidia-smi`` (``subprocess.run``)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = run([smi], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_driver_cuda(out.stdout or "") if out.returncode == 0 else None


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


def _is_torch(requirement: str) -> bool:
    return re.split(r"[\s=<>!~;\[]", requirement, maxsplit=1)[0].lower() == "torch"


class SetupTask:
    """The set-up steps on a helper thread; ``state`` is running, ok, error or cancelled.

    ``torch_build`` is the build :func:`choose_torch_build` picked; its label and reason are in
    the torch step's title and at the top of the log.
    """

    def __init__(self, base_python: str, env_dir: Path, pyproject: Path, log_path: Path,
                 torch_build: TorchBuild) -> None:
        self.env_dir = env_dir
        self.log_path = log_path
        self.torch_build = torch_build
        python = str(venv_python(env_dir))
        reqs = requirements(pyproject)
        torch_reqs = [r for r in reqs if _is_torch(r)] or ["torch"]
        index = ["--index-url", torch_build.index_url] if torch_build.index_url else []
        self.steps = [
            ("Creating the environment", [base_python, "-m", "venv", str(env_dir)]),
            ("Updating pip", [python, "-m", "pip", "install", "--upgrade", "pip"]),
            (f"Installing torch ({torch_build.label})",
             [python, "-m", "pip", "install", *index, *torch_reqs]),
            ("Installing the backend's libraries",
             [python, "-m", "pip", "install", *[r for r in reqs if not _is_torch(r)]]),
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
            log.write(f"torch build: {self.torch_build.label} ({self.torch_build.reason})\n")
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
