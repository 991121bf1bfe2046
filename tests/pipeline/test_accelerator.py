"""Device choice ("auto", CUDA, Apple MPS, CPU) and the sparse convolution's Triton/torch path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from backend.pipeline.accelerator import conv_backend_for, resolve_device, triton_importable
from backend.pipeline.errors import InputError
from backend.pipeline.runtime import ModelStore, Runtime
from backend.sparse.conv import ConvBackend, SparseConv3d

ROOT = Path(__file__).resolve().parents[2]


def _machine(monkeypatch, *, cuda: bool, mps: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize("cuda, mps, expected", [
    (True, False, "cuda"), (True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_auto_prefers_cuda_then_apple_gpu_then_cpu(monkeypatch, cuda, mps, expected):
    _machine(monkeypatch, cuda=cuda, mps=mps)
    assert resolve_device("auto") == resolve_device(None) == expected


def test_explicit_device_is_kept_or_refused(monkeypatch):
    _machine(monkeypatch, cuda=False, mps=True)
    assert resolve_device("mps") == "mps" and resolve_device("cpu") == "cpu"
    with pytest.raises(InputError, match="--device cuda:1 asked for"):
        resolve_device("cuda:1")
    _machine(monkeypatch, cuda=True, mps=False)
    assert resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(InputError, match="no Apple GPU"):
        resolve_device("mps")
    with pytest.raises(InputError, match="--device takes one of"):
        resolve_device("gpu")


@pytest.mark.parametrize("device, triton_ok, expected", [
    ("cuda", True, "triton"), ("cuda:1", True, "triton"), ("cuda", False, "torch"),
    ("mps", True, "torch"), ("cpu", True, "torch"), ("cpu", False, "torch")])
def test_conv_path_per_device(device, triton_ok, expected):
    assert ConvBackend(conv_backend_for(device, triton_ok)) is ConvBackend(expected)


def test_triton_importable_follows_the_import(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)
    assert triton_importable() is False


def test_store_on_cuda_without_triton_takes_the_torch_path(monkeypatch, tiny_checkpoint):
    """A CUDA runtime on a machine whose triton is missing (Windows without triton-windows)."""
    monkeypatch.setattr("backend.pipeline.runtime.triton_importable", lambda: False)
    store = ModelStore(Runtime(model=str(tiny_checkpoint), device="cuda", offline=True))
    assert store.conv_backend == "torch"


def test_loaded_networks_get_the_runtime_conv_path(tiny_checkpoint):
    store = ModelStore(Runtime(model=str(tiny_checkpoint), device="cpu", offline=True, conv_backend="im2col"))
    convs = [m for m in store.get("shape_slat_decoder").modules() if isinstance(m, SparseConv3d)]
    assert convs and all(m.backend is ConvBackend.IM2COL for m in convs)


def test_triton_blocking_plugin_is_active():
    """Passes only inside the run below, where ``-p tests.fixtures.no_triton`` is loaded."""
    if "tests.fixtures.no_triton" not in sys.modules:
        pytest.skip("runs inside test_tiny_pipeline_with_triton_unimportable")
    with pytest.raises(ImportError):
        import triton  # noqa: F401
    assert triton_importable() is False


@pytest.mark.slow
def test_tiny_pipeline_with_triton_unimportable(tmp_path):
    """The whole tiny image -> GLB pipeline in a fresh interpreter where ``import triton`` fails."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.fixtures.no_triton", "-p", "no:cacheprovider", "-q",
         "--basetemp", str(tmp_path / "inner"),
         "tests/pipeline/test_accelerator.py::test_triton_blocking_plugin_is_active",
         "tests/pipeline/test_generate.py::test_image_to_glb_with_pbr_and_alpha"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 passed" in proc.stdout


def test_the_server_reports_an_apple_gpu(monkeypatch):
    from backend.server import device

    _machine(monkeypatch, cuda=False, mps=True)
    assert device.describe("auto")["device"] == device.describe("mps")["device"] == "mps"
    assert device.describe("cpu")["device"] == "cpu"
    _machine(monkeypatch, cuda=False, mps=False)
    assert device.describe("auto")["device"] == "cpu"
