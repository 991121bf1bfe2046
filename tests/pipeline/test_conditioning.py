"""DINOv3 readout: all layers + bare LayerNorm, token counts, zero negative condition."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from backend.pipeline.conditioning import DinoV3Conditioner, expected_tokens, to_pixels


def _tiny_dinov3(layers=2):
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    torch.manual_seed(0)
    cfg = DINOv3ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                          num_attention_heads=4, num_register_tokens=4, patch_size=16,
                          layerscale_value=1.0, layer_norm_eps=1e-5, key_bias=False)
    return DINOv3ViTModel(cfg).eval()


def _image(size=80, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


def test_readout_equals_model_output_with_an_identity_final_norm():
    model = _tiny_dinov3()
    cond = DinoV3Conditioner(model).features([_image()], 64)
    assert cond.shape == (1, expected_tokens(64), 32) == (1, 21, 32)
    # The model's own forward with its final LayerNorm made parameter-free is the reference readout.
    with torch.no_grad():
        model.norm.weight.fill_(1.0)
        model.norm.bias.zero_()
        ref = model(to_pixels([_image()], 64)).last_hidden_state
    torch.testing.assert_close(cond, ref, rtol=1e-5, atol=1e-5)
    # ... and differs from stopping one layer early (all layers are used).
    early = DinoV3Conditioner(model)
    early.model.model.layer = early.model.model.layer[:1]
    assert not torch.allclose(early.features([_image()], 64), cond, atol=1e-3)


@pytest.mark.parametrize("res, tokens", [(512, 1029), (1024, 4101)])
def test_token_counts(res, tokens):
    assert expected_tokens(res) == tokens


def test_512px_has_1029_tokens_and_negative_is_zero_and_samples_repeat():
    cond, neg = DinoV3Conditioner(_tiny_dinov3(layers=1)).condition([_image(), _image(seed=1)], 512,
                                                                   num_samples=3)
    assert cond.shape == (6, 1029, 32) and neg.shape == cond.shape
    assert torch.count_nonzero(neg) == 0
    assert torch.equal(cond[0], cond[2]) and not torch.equal(cond[2], cond[3])
    # Per-token normalisation without affine: mean 0, var 1 over channels.
    assert cond.mean(-1).abs().max() < 1e-4


def test_to_pixels_uses_lanczos_and_imagenet_stats():
    img = Image.new("RGB", (10, 10), (255, 0, 128))
    px = to_pixels([img], 16)
    assert px.shape == (1, 3, 16, 16)
    np.testing.assert_allclose(px[0, :, 5, 5].numpy(),
                               [(1 - .485) / .229, (0 - .456) / .224, (128 / 255 - .406) / .225], rtol=1e-5)
