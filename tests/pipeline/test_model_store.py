"""``ModelStore`` built through its constructor: a release read from disk, or networks handed to it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from torch import nn

from backend.models import read_pipeline_config
from backend.pipeline.errors import ModelUnavailableError
from backend.pipeline.generator import Trellis2Generator
from backend.pipeline.model_source import DINOV3_REPO, SS_DECODER_REPO
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


SS_DEC = "ckpts/ss_dec_conv3d_16l8_fp16"


@pytest.fixture
def official_layout(tiny_checkpoint, tmp_path):
    """The tiny release as the official one is laid out: its SS decoder named in another repo,
    whose folder lies elsewhere, and the image encoder named by its hub id."""
    release, other = tmp_path / "release", tmp_path / "trellis-image-large"
    shutil.copytree(tiny_checkpoint, release)
    (other / "ckpts").mkdir(parents=True)
    for suffix in (".json", ".safetensors"):
        (release / f"{SS_DEC}{suffix}").rename(other / f"{SS_DEC}{suffix}")
    pipeline = json.loads((release / "pipeline.json").read_text())
    pipeline["args"]["models"]["sparse_structure_decoder"] = f"{SS_DECODER_REPO}/{SS_DEC}"
    pipeline["args"]["image_cond_model"]["args"]["model_name"] = DINOV3_REPO
    (release / "pipeline.json").write_text(json.dumps(pipeline))
    return release, other, Path(tiny_checkpoint) / "dinov3_tiny"


@pytest.fixture
def no_hub(monkeypatch):
    import huggingface_hub

    def refuse(*args, **kwargs):
        raise AssertionError("only backend.pipeline.weights may reach the hub")

    for name in ("hf_hub_download", "snapshot_download"):
        monkeypatch.setattr(huggingface_hub, name, refuse)


def test_other_repositories_load_from_the_folders_the_resolver_found(official_layout, no_hub):
    release, other, dino = official_layout
    runtime = Runtime(model=str(release), device="cpu", offline=True,
                      dependencies={SS_DECODER_REPO: str(other), DINOV3_REPO: str(dino)})
    store = ModelStore(runtime)
    assert store.dependencies[SS_DECODER_REPO] == str(other)
    assert type(store.get("sparse_structure_decoder")).__name__ == "SparseStructureDecoder"
    assert store.conditioner().model is not None


def test_a_repository_without_a_resolved_folder_is_a_clear_error_not_a_download(official_layout, no_hub):
    release, _, _ = official_layout
    release_without_folders = Release(_release(release).config, root=release)  # no dependencies
    store = ModelStore(Runtime(model=str(release), device="cpu"), release_without_folders)
    with pytest.raises(ModelUnavailableError, match=f"in the repository {SS_DECODER_REPO}, which was not"):
        store.get("sparse_structure_decoder")
    with pytest.raises(ModelUnavailableError, match=f"image encoder '{DINOV3_REPO}' was not resolved"):
        store.conditioner()
