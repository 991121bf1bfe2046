"""Test harness: markers, the Triton interpreter on CPU-only machines, shared fixtures.

Markers (declared in pyproject.toml):
- ``gpu``: needs CUDA; skipped without it.
- ``blender``: needs the ``bpy`` module; skipped without it (or ``--bpy-python PATH``, an
  interpreter that has it).
- ``slow``: seconds rather than milliseconds on a 2-core CPU (still part of the suite).
"""

from __future__ import annotations

import importlib.util
import os

import pytest

from scripts.build_extension import place_contract

# The add-on imports the job contract as its own module; a checkout holds it only in backend/.
place_contract()


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


HAS_CUDA = _cuda_available()

# Triton reads this when it is first imported; without a GPU its kernels run in the
# interpreter (on CPU tensors), which is how CI checks their logic.
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

HAS_BPY = importlib.util.find_spec("bpy") is not None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--bpy-python", default=None, metavar="PATH",
                     help="interpreter for the Blender tests' bpy scripts (e.g. a venv with the bpy 4.2 LTS "
                          "wheel); the backend and pytest stay on this interpreter")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    skip_bpy = pytest.mark.skip(reason="needs the bpy module (pip install bpy==5.0.1 on Python 3.11)")
    has_bpy = HAS_BPY or config.getoption("bpy_python") is not None
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)
        if "blender" in item.keywords and not has_bpy:
            item.add_marker(skip_bpy)


@pytest.fixture
def rng():
    """A fresh numpy generator per test, seeded from the test's name for reproducibility."""
    import zlib

    import numpy as np

    return np.random.default_rng(zlib.crc32(os.environ.get("PYTEST_CURRENT_TEST", "").encode()))
