"""Fixtures for the Blender tests: the built extension and a backend that runs the fake generator."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from scripts import build_extension
from tests.blender.runner import PYTHON, REPO
from tests.fixtures import images


@pytest.fixture(scope="session")
def extension_zip(tmp_path_factory) -> Path:
    return build_extension.build(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="session")
def fake_backend_python(tmp_path_factory) -> Path:
    """An "interpreter" for the preferences: the venv Python running the real server with the fake
    generator (the server's ``--generator`` option), with this checkout importable for ``tests``."""
    path = tmp_path_factory.mktemp("fakepy") / "python"
    path.write_text(
        "#!/bin/sh\n"
        f'export PYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{REPO}"\n'
        f'exec "{PYTHON}" "$@" --generator tests.blender.fake_generator:factory\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def inputs(tmp_path) -> dict[str, Path]:
    """Input pictures: opaque RGB, transparent RGBA, a slow one, a crashing one, a corrupt file."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    out = {
        "opaque": images.rgb_on_white(folder / "teapot.png"),
        "transparent": images.rgba_transparent(folder / "leaf.png"),
        "slow": images.rgb_on_white(folder / "slow_vase.png"),
        "crash": images.rgb_on_white(folder / "crash_robot.png"),
    }
    corrupt = folder / "broken.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    out["corrupt"] = corrupt
    return out


@pytest.fixture
def model_dir(tmp_path) -> Path:
    path = tmp_path / "model"
    path.mkdir()
    return path
