"""Strict loading: every mismatch is reported with the key and file; bad files fail clearly."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from backend.models import CheckpointError, SparseStructureFlowModel, load_model, resolve_checkpoint

SS = "ss_flow_img_dit_1_3B_64_bf16"


@pytest.fixture
def ckpt_copy(tiny_checkpoint, tmp_path):
    """A private copy of the SS flow checkpoint (json + safetensors) to corrupt."""
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    for suffix in (".json", ".safetensors"):
        shutil.copy(tiny_checkpoint / "ckpts" / f"{SS}{suffix}", ckpts / f"{SS}{suffix}")
    return tmp_path


def _rewrite(root, edit):
    path = root / "ckpts" / f"{SS}.safetensors"
    sd = load_file(str(path))
    edit(sd)
    save_file(sd, str(path))
    return path


def test_all_source_forms_resolve_to_the_same_files(tiny_checkpoint):
    a = resolve_checkpoint(tiny_checkpoint / "ckpts" / SS)
    b = resolve_checkpoint(tiny_checkpoint, f"ckpts/{SS}")
    c = resolve_checkpoint(tiny_checkpoint, SS)
    d = resolve_checkpoint(str(tiny_checkpoint / "ckpts" / SS) + ".safetensors")
    assert a == b == c == d and a.weights.name == f"{SS}.safetensors"


def test_loaded_model_is_strict_eval_no_grad_and_keeps_stored_dtypes(tiny_checkpoint):
    model = load_model(tiny_checkpoint, f"ckpts/{SS}")
    assert isinstance(model, SparseStructureFlowModel) and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert model.blocks[0].mlp.mlp[0].weight.dtype == torch.bfloat16
    assert model.t_embedder.mlp[0].weight.dtype == torch.float32
    # rope_phases is absent from the file and computed.
    assert torch.equal(model.rope_phases, model.compute_rope_phases("cpu"))
    stored = load_file(str(tiny_checkpoint / "ckpts" / f"{SS}.safetensors"))
    assert torch.equal(model.blocks[1].self_attn.to_qkv.weight, stored["blocks.1.self_attn.to_qkv.weight"])
    f32 = load_model(tiny_checkpoint, SS, dtype=torch.float32)
    assert f32.blocks[0].mlp.mlp[0].weight.dtype == torch.float32


def test_missing_unexpected_and_misshaped_keys_are_all_named(ckpt_copy):
    def edit(sd):
        del sd["blocks.1.cross_attn.to_kv.bias"]
        del sd["t_embedder.mlp.2.weight"]
        sd["blocks.0.extra"] = torch.zeros(3)
        sd["blocks.0.norm2.weight"] = torch.zeros(65)

    path = _rewrite(ckpt_copy, edit)
    with pytest.raises(CheckpointError) as err:
        load_model(ckpt_copy, SS)
    msg = str(err.value)
    assert str(path) in msg
    assert "missing key blocks.1.cross_attn.to_kv.bias" in msg
    assert "missing key t_embedder.mlp.2.weight" in msg
    assert "unexpected key blocks.0.extra" in msg
    assert "wrong shape for blocks.0.norm2.weight: file [65], model [64]" in msg
    assert "rope_phases" not in msg


def test_rope_phases_present_in_file_is_accepted(ckpt_copy):
    model = load_model(ckpt_copy, SS)
    _rewrite(ckpt_copy, lambda sd: sd.__setitem__("rope_phases", model.rope_phases.clone()))
    assert torch.equal(load_model(ckpt_copy, SS).rope_phases, model.rope_phases)


def test_truncated_file_names_the_file(ckpt_copy):
    path = ckpt_copy / "ckpts" / f"{SS}.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated") as err:
        load_model(ckpt_copy, SS)
    assert str(path) in str(err.value)
    path.write_bytes(data[:5])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(ckpt_copy, SS)


def test_corrupt_header_and_bad_json_name_the_file(ckpt_copy):
    path = ckpt_copy / "ckpts" / f"{SS}.safetensors"
    data = bytearray(path.read_bytes())
    data[8:12] = b"\xff\xfe{{"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt") as err:
        load_model(ckpt_copy, SS)
    assert str(path) in str(err.value)
    cfg = ckpt_copy / "ckpts" / f"{SS}.json"
    cfg.write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read checkpoint config") as err:
        load_model(ckpt_copy, SS)
    assert str(cfg) in str(err.value)


def test_bad_config_class_and_args(ckpt_copy):
    cfg = ckpt_copy / "ckpts" / f"{SS}.json"
    data = json.loads(cfg.read_text())
    cfg.write_text(json.dumps({"name": "NoSuchModel", "args": data["args"]}))
    with pytest.raises(CheckpointError, match="NoSuchModel"):
        load_model(ckpt_copy, SS)
    cfg.write_text(json.dumps({"name": data["name"], "args": {**data["args"], "bogus": 1}}))
    with pytest.raises(CheckpointError, match="bogus"):
        load_model(ckpt_copy, SS)


def test_pickles_are_refused(ckpt_copy):
    with pytest.raises(CheckpointError, match="pickle"):
        load_model(ckpt_copy / "ckpts" / f"{SS}.bin")
    (ckpt_copy / "ckpts" / f"{SS}.safetensors").rename(ckpt_copy / "ckpts" / f"{SS}.pt")
    with pytest.raises(CheckpointError, match="pickles are refused"):
        load_model(ckpt_copy, SS)


def test_missing_checkpoint_and_hub_stems_are_not_fetched_here(tmp_path, monkeypatch):
    """The loader reads local files only: hub weights come through backend.pipeline.weights."""
    import huggingface_hub

    def no_hub(*args, **kwargs):
        raise AssertionError("the loader must not reach the hub")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_hub)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_hub)
    with pytest.raises(CheckpointError, match="not found$"):
        load_model(tmp_path, "ckpts/nothing")
    with pytest.raises(CheckpointError, match="names the Hugging Face repository someone/some-repo"):
        load_model("someone/some-repo/ckpts/nothing")
    with pytest.raises(CheckpointError, match="names the Hugging Face repository someone/some-repo"):
        load_model(tmp_path, "someone/some-repo/ckpts/nothing")  # a foreign name in a release


@pytest.mark.parametrize("dtype", [None, torch.float32, torch.bfloat16, torch.float16])
def test_stored_complex_rope_phases_stay_complex_when_loading_with_a_dtype(ckpt_copy, dtype):
    """A checkpoint that stores ``rope_phases`` (complex64) keeps it complex64, bit-exact, whatever
    ``dtype`` the model loads in (the CPU path loads float32, GPUs bf16 or fp16).

    Casting it to a real dtype would keep only the cosine of each phase (RoPE would become a
    scaling), so the loaded buffer must equal the file's exactly, imaginary part included.
    """
    probe = load_model(ckpt_copy, SS)
    phases = probe.compute_rope_phases("cpu")
    assert phases.dtype == torch.complex64 and phases.imag.abs().max() > 0.5

    def edit(sd):
        sd["rope_phases"] = phases

    _rewrite(ckpt_copy, edit)
    model = load_model(ckpt_copy, SS, dtype=dtype)
    assert model.rope_phases.dtype == torch.complex64
    assert torch.equal(model.rope_phases, phases)
    if dtype is not None:
        assert model.out_layer.weight.dtype == dtype
