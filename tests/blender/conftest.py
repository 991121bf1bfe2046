"""Fixtures for the Blender tests: the built extension, input pictures, the tiny checkpoints, and a
backend that runs the fake generator (for the batch-script bookkeeping tests only)."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from scripts import build_extension
from tests.blender.runner import PYTHON, REPO
from tests.fixtures import images
from tests.fixtures.tiny_checkpoint import tiny_checkpoint  # noqa: F401 - a fixture

ALPHA_CHANNEL = 5  # of the texture decoder's 6 outputs: base colour 0:3, metallic, roughness, alpha


@pytest.fixture(scope="session")
def bpy_python(pytestconfig) -> Path:
    """The interpreter that runs the ``bpy`` scripts: ``--bpy-python`` if given, else this one."""
    option = pytestconfig.getoption("bpy_python")
    return Path(option).expanduser().absolute() if option else PYTHON


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


@pytest.fixture(scope="session")
def opaque_tiny_checkpoint(tiny_checkpoint: Path, tmp_path_factory) -> Path:  # noqa: F811
    """The tiny checkpoint with its texture decoder's alpha output fixed at 1 (opaque everywhere).

    The tiny networks are random, so their decoded alpha lies around 0.5 and every result is
    BLEND. A trained model puts alpha near 1 on an opaque object; this copy stands in for that
    case: the alpha row of the decoder's output layer is zeroed and its bias set so the
    decoded value is exactly 1 (``feats * 0.5 + 0.5``). Everything else - sampling, decoding,
    baking, the backend's own OPAQUE/BLEND decision - runs unchanged.
    """
    import torch
    from safetensors.torch import load_file, save_file

    root = tmp_path_factory.getbasetemp() / "tiny_trellis2_opaque"
    marker = root / ".complete"
    if marker.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(tiny_checkpoint, root)
    (root / ".complete").unlink(missing_ok=True)
    decoders = set()
    for name in ("pipeline.json", "texturing_pipeline.json"):
        decoders.add(json.loads((root / name).read_text())["args"]["models"]["tex_slat_decoder"])
    for decoder in decoders:
        path = root / f"{decoder}.safetensors"
        weights = load_file(path)
        weights["output_layer.weight"][ALPHA_CHANNEL] = 0.0
        bias = weights["output_layer.bias"]
        bias[ALPHA_CHANNEL] = torch.tensor(1.0, dtype=bias.dtype)
        save_file(weights, path)
    marker.touch()
    return root


@pytest.fixture
def inputs(tmp_path) -> dict[str, Path]:
    """Input pictures: opaque RGB on white (the fake generator's batch tests), transparent RGBA,
    a corrupt file."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    out = {
        "opaque": images.rgb_on_white(folder / "teapot.png"),
        "transparent": images.rgba_transparent(folder / "leaf.png"),
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
