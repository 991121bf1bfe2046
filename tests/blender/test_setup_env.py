"""The add-on's backend set-up: which torch build each platform and NVIDIA driver gets, and the
commands it runs (argument lists that survive spaces and non-ASCII characters in paths)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from trellis2_blender.core import setup_env
from trellis2_blender.core.setup_env import venv_python

INDEX = "https://download.pytorch.org/whl"
NVIDIA_SMI = """\
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 570.86.10              Driver Version: 570.86.10      CUDA Version: 12.8     |
|-----------------------------------------+------------------------+----------------------+
"""


@pytest.mark.parametrize("system, driver, index, label", [
    ("Windows", (12, 8), f"{INDEX}/cu128", "CUDA 12.8"),
    ("Windows", (12, 9), f"{INDEX}/cu128", "CUDA 12.8"),
    ("Windows", (13, 1), f"{INDEX}/cu130", "CUDA 13.0"),
    ("Linux", (12, 6), f"{INDEX}/cu126", "CUDA 12.6"),
    ("Linux", (12, 7), f"{INDEX}/cu126", "CUDA 12.6"),
    ("Linux", (13, 0), f"{INDEX}/cu130", "CUDA 13.0"),
    ("Windows", None, f"{INDEX}/cpu", "CPU"),       # PyPI's Windows torch is CPU-only anyway
    ("Linux", None, f"{INDEX}/cpu", "CPU"),         # not PyPI's Linux build with gigabytes of CUDA
    ("Linux", (11, 8), f"{INDEX}/cpu", "CPU"),      # driver too old for every CUDA build
    ("Darwin", None, None, "macOS (Apple GPU on Apple Silicon)"),
    ("Darwin", (12, 8), None, "macOS (Apple GPU on Apple Silicon)"),
])
def test_torch_index_per_platform_and_driver(system, driver, index, label):
    build = setup_env.choose_torch_build(system, driver)
    assert (build.index_url, build.label) == (index, label)
    assert build.reason  # the UI shows why


def test_old_driver_says_what_to_do():
    reason = setup_env.choose_torch_build("Windows", (11, 4)).reason
    assert "11.4" in reason and "update the NVIDIA driver" in reason


def test_driver_cuda_is_read_from_nvidia_smi(monkeypatch):
    assert setup_env.parse_driver_cuda(NVIDIA_SMI) == (12, 8)
    assert setup_env.parse_driver_cuda("NVIDIA-SMI has failed") is None
    monkeypatch.setattr(setup_env.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    ran = []

    def run(command, **kw):
        ran.append(command)
        return subprocess.CompletedProcess(command, 0, stdout=NVIDIA_SMI)

    assert setup_env.detect_driver_cuda(run) == (12, 8)
    assert ran == [["/usr/bin/nvidia-smi"]]
    monkeypatch.setattr(setup_env.shutil, "which", lambda name: None)
    assert setup_env.detect_driver_cuda(run) is None


def _pyproject(folder: Path) -> Path:
    path = folder / "pyproject.toml"
    path.write_text('[project]\nname = "x"\ndependencies = ["torch==2.13.0", "numpy>=1.26", '
                    '"triton>=3.6; platform_system == \'Linux\'"]\n', encoding="utf-8")
    return path


def test_torch_step_uses_the_chosen_index_and_the_rest_comes_from_pypi(tmp_path):
    build = setup_env.choose_torch_build("Windows", (12, 8))
    task = setup_env.SetupTask(sys.executable, tmp_path / "env", _pyproject(tmp_path), tmp_path / "setup.log",
                               build)
    titles = [title for title, _ in task.steps]
    assert titles[2] == "Installing torch (CUDA 12.8)"
    torch_cmd, rest_cmd = task.steps[2][1], task.steps[3][1]
    assert torch_cmd[-3:] == ["--index-url", f"{INDEX}/cu128", "torch==2.13.0"]
    assert "--index-url" not in rest_cmd and rest_cmd[-2:] == ["numpy>=1.26",
                                                               "triton>=3.6; platform_system == 'Linux'"]
    mac = setup_env.SetupTask(sys.executable, tmp_path / "env", _pyproject(tmp_path), tmp_path / "setup.log",
                              setup_env.choose_torch_build("Darwin", None))
    assert mac.steps[2][1][-2:] == ["install", "torch==2.13.0"]


@pytest.mark.slow
def test_environment_in_a_folder_with_spaces_and_a_non_ascii_user_name(tmp_path):
    """The venv step, run for real, in ``Users/Jürgen Müller/...``; its Python then starts."""
    env = tmp_path / "Users" / "Jürgen Müller" / "TRELLIS 2" / "backend-env"
    task = setup_env.SetupTask(sys.executable, env, _pyproject(tmp_path), tmp_path / "setup.log",
                               setup_env.choose_torch_build("Linux", None))
    title, command = task.steps[0]
    assert command[-1] == str(env)  # one argument, however many spaces
    subprocess.run([*command, "--without-pip"], check=True, timeout=120)
    out = subprocess.run([str(venv_python(env)), "-c", "import sys; print(sys.prefix)"],
                         capture_output=True, text=True, encoding="utf-8", check=True, timeout=60)
    assert Path(out.stdout.strip()) == env
