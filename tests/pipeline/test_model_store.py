"""``ModelStore`` built through its constructor: a release read from disk, or networks handed to it."""

from __future__ import annotations

import pytest
from torch import nn

from backend.models import read_pipeline_config
from backend.pipeline.errors import ModelUnavailableError
from backend.pipeline.generator import Trellis2Generator
from backend.pipeline.runtime import ModelStore, Release, Runtime
from backend.sparse.conv import ConvBackend, SparseConv3d


def _release(root):
    return Release(read_pipeline_config(root / "pipeline.json"),
                   read_pipeline_config(root / "texturing_pipeline.json"))


def test_release_open_reads_the_pipeline_files_of_the_runtime(tiny_checkpoint):
    release = Release.open(Runtime(model=str(tiny_checkpoint), device="cpu", offline=True))
    assert release.root == tiny_checkpoint.resolve()
    assert release.config.models == _release(tiny_checkpoint).config.models
    assert release.tex_config is not None and "shape_slat_encoder" in release.tex_config.models


def test_handed_networks_are_served_with_the_runtime_kernels_and_nothing_is_loaded(tiny_checkpoint):
    net = nn.Sequential(SparseConv3d(4, 4))
    conditioner = object()
    runtime = Runtime(model="unused", device="cpu", conv_backend="im2col")
    store = ModelStore(runtime, _release(tiny_checkpoint), models={"shape_slat_decoder": net},
                       conditioner=conditioner)
    assert store.get("shape_slat_decoder") is net and net[0].backend is ConvBackend.IM2COL
    assert store.conditioner() is conditioner and store.loaded() == ["shape_slat_decoder"]
    with pytest.raises(ModelUnavailableError, match="tex_slat_decoder was not handed to the model store"):
        store.get("tex_slat_decoder")  # no release folder to fall back on


def test_a_generator_runs_the_store_it_is_given_and_refuses_one_for_another_runtime(tiny_checkpoint):
    runtime = Runtime(model="unused", device="cpu")
    store = ModelStore(runtime, _release(tiny_checkpoint))
    assert Trellis2Generator(runtime, store=store).store is store
    with pytest.raises(ValueError, match="another runtime"):
        Trellis2Generator(Runtime(model="unused", device="cpu", low_vram=True), store=store)
