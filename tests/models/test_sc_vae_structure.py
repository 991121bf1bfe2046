"""Full-size SC-VAEs from the official checkpoint args (on the meta device): parameter counts
(spec 13.1), key names and shapes (spec 5.4-5.6), stored dtypes (spec 1.6), accepted args."""

from __future__ import annotations

import pytest
import torch

from backend.models.sc_vae import (
    FlexiDualGridVaeDecoder,
    FlexiDualGridVaeEncoder,
    SparseUnetVaeDecoder,
    SparseUnetVaeEncoder,
)

_DEC_ARGS = {
    "model_channels": [1024, 512, 256, 128, 64],
    "latent_channels": 32,
    "num_blocks": [4, 16, 8, 4, 0],
    "block_type": ["SparseConvNeXtBlock3d"] * 5,
    "up_block_type": ["SparseResBlockC2S3d"] * 4,
    "block_args": [{"use_checkpoint": True}] * 5,
    "use_fp16": True,
}
_ENC_ARGS = {
    "model_channels": [64, 128, 256, 512, 1024],
    "latent_channels": 32,
    "num_blocks": [0, 4, 8, 16, 4],
    "block_type": ["SparseConvNeXtBlock3d"] * 5,
    "down_block_type": ["SparseResBlockS2C3d"] * 4,
    "block_args": [{"use_checkpoint": False}] * 5,
    "use_fp16": True,
}


def _build(name):
    with torch.device("meta"):
        if name == "shape_decoder":
            return FlexiDualGridVaeDecoder(resolution=256, initialization="scaled", **_DEC_ARGS)
        if name == "texture_decoder":
            return SparseUnetVaeDecoder(out_channels=6, pred_subdiv=False, dtype="float16", **_DEC_ARGS)
        if name == "shape_encoder":
            return FlexiDualGridVaeEncoder(**_ENC_ARGS)
        return SparseUnetVaeEncoder(in_channels=6, **_ENC_ARGS)


@pytest.mark.parametrize(("name", "params", "keys"), [
    ("shape_decoder", 474_231_463, 292),
    ("texture_decoder", 474_216_006, 284),
    ("shape_encoder", 354_385_392, 284),
    ("texture_encoder", 354_385_392, 284),
])
def test_parameter_counts_and_key_counts(name, params, keys):
    model = _build(name)
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(model.state_dict()) == keys


def test_decoder_keys_shapes_and_dtypes():
    sd = _build("shape_decoder").state_dict()
    expect = {
        "from_latent.weight": ((1024, 32), torch.float32),
        "output_layer.weight": ((7, 64), torch.float32),
        "blocks.0.0.conv.weight": ((1024, 3, 3, 3, 1024), torch.float16),
        "blocks.0.0.norm.weight": ((1024,), torch.float32),
        "blocks.0.0.mlp.0.weight": ((4096, 1024), torch.float16),
        "blocks.0.0.mlp.2.weight": ((1024, 4096), torch.float16),
        "blocks.0.4.norm1.weight": ((1024,), torch.float32),
        "blocks.0.4.conv1.weight": ((4096, 3, 3, 3, 1024), torch.float16),
        "blocks.0.4.conv2.weight": ((512, 3, 3, 3, 512), torch.float16),
        "blocks.0.4.to_subdiv.weight": ((8, 1024), torch.float16),
        "blocks.1.16.conv1.weight": ((2048, 3, 3, 3, 512), torch.float16),
        "blocks.2.8.conv1.weight": ((1024, 3, 3, 3, 256), torch.float16),
        "blocks.3.4.conv1.weight": ((512, 3, 3, 3, 128), torch.float16),
        "blocks.3.4.conv2.bias": ((64,), torch.float16),
    }
    for key, (shape, dtype) in expect.items():
        assert tuple(sd[key].shape) == shape and sd[key].dtype == dtype, key
    assert not any(k.startswith("blocks.4.") for k in sd)
    assert not any(".norm2." in k for k in sd)  # affine-free LayerNorm
    c2s = {k.split(".")[1] + "." + k.split(".")[2] for k in sd if ".to_subdiv." in k}
    assert c2s == {"0.4", "1.16", "2.8", "3.4"}
    tex = _build("texture_decoder").state_dict()
    assert not any("to_subdiv" in k for k in tex) and tuple(tex["output_layer.weight"].shape) == (6, 64)


def test_encoder_keys_shapes_and_dtypes():
    sd = _build("shape_encoder").state_dict()
    expect = {
        "input_layer.weight": ((64, 6), torch.float32),
        "to_latent.weight": ((64, 1024), torch.float32),
        "blocks.0.0.norm1.weight": ((64,), torch.float32),
        "blocks.0.0.conv1.weight": ((16, 3, 3, 3, 64), torch.float16),
        "blocks.0.0.conv2.weight": ((128, 3, 3, 3, 128), torch.float16),
        "blocks.1.4.conv1.weight": ((32, 3, 3, 3, 128), torch.float16),
        "blocks.3.16.conv1.weight": ((128, 3, 3, 3, 512), torch.float16),
        "blocks.3.16.conv2.weight": ((1024, 3, 3, 3, 1024), torch.float16),
        "blocks.4.3.conv.weight": ((1024, 3, 3, 3, 1024), torch.float16),
    }
    for key, (shape, dtype) in expect.items():
        assert tuple(sd[key].shape) == shape and sd[key].dtype == dtype, key
    assert not any(k.startswith("blocks.0.1") for k in sd)


def test_unknown_arguments_are_rejected():
    with pytest.raises(TypeError):
        with torch.device("meta"):
            SparseUnetVaeEncoder(in_channels=6, not_an_arg=1, **_ENC_ARGS)
    with pytest.raises(ValueError):
        with torch.device("meta"):
            SparseUnetVaeEncoder(in_channels=6, **{**_ENC_ARGS, "block_type": ["SparseResBlock3d"] * 5})
