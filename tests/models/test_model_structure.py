"""Full-size networks built on the meta device from the official JSON args: sizes, keys, dtypes."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from backend.models import SLatFlowModel, SparseStructureDecoder, SparseStructureFlowModel

DIT_ARGS = dict(model_channels=1536, cond_channels=1024, num_blocks=30, num_heads=12, mlp_ratio=5.3334,
                pe_mode="rope", share_mod=True, initialization="scaled", qk_rms_norm=True,
                qk_rms_norm_cross=True, dtype="bfloat16", use_checkpoint=True)
SS_DEC_ARGS = dict(out_channels=1, latent_channels=8, num_res_blocks=2, num_res_blocks_middle=2,
                   channels=[512, 128, 32], use_fp16=True)


def _meta(cls, **kwargs):
    with torch.device("meta"):
        return cls(**kwargs)


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def ss_flow():
    return _meta(SparseStructureFlowModel, resolution=16, in_channels=8, out_channels=8, **DIT_ARGS)


@pytest.fixture(scope="module")
def shape_flow():
    return _meta(SLatFlowModel, resolution=64, in_channels=32, out_channels=32, **DIT_ARGS)


@pytest.fixture(scope="module")
def tex_flow():
    return _meta(SLatFlowModel, resolution=64, in_channels=64, out_channels=32, **DIT_ARGS)


def test_parameter_counts_match_the_release(ss_flow, shape_flow, tex_flow):
    assert _params(ss_flow) == 1_292_179_976
    assert _params(shape_flow) == 1_292_253_728
    assert _params(tex_flow) == 1_292_302_880
    assert _params(ss_flow.blocks[0]) == 42_507_776
    assert _params(_meta(SparseStructureDecoder, **SS_DEC_ARGS)) == 73_671_201


def test_dit_block_keys_shapes_and_stored_dtypes(ss_flow):
    sd = ss_flow.state_dict()
    bf16, fp32 = torch.bfloat16, torch.float32
    expected_block = {
        "modulation": ([9216], fp32), "norm2.weight": ([1536], fp32), "norm2.bias": ([1536], fp32),
        "self_attn.to_qkv.weight": ([4608, 1536], bf16), "self_attn.to_qkv.bias": ([4608], bf16),
        "self_attn.q_rms_norm.gamma": ([12, 128], fp32), "self_attn.k_rms_norm.gamma": ([12, 128], fp32),
        "self_attn.to_out.weight": ([1536, 1536], bf16), "self_attn.to_out.bias": ([1536], bf16),
        "cross_attn.to_q.weight": ([1536, 1536], bf16), "cross_attn.to_q.bias": ([1536], bf16),
        "cross_attn.to_kv.weight": ([3072, 1024], bf16), "cross_attn.to_kv.bias": ([3072], bf16),
        "cross_attn.q_rms_norm.gamma": ([12, 128], fp32), "cross_attn.k_rms_norm.gamma": ([12, 128], fp32),
        "cross_attn.to_out.weight": ([1536, 1536], bf16), "cross_attn.to_out.bias": ([1536], bf16),
        "mlp.mlp.0.weight": ([8192, 1536], bf16), "mlp.mlp.0.bias": ([8192], bf16),
        "mlp.mlp.2.weight": ([1536, 8192], bf16), "mlp.mlp.2.bias": ([1536], bf16),
    }
    expected_top = {
        "t_embedder.mlp.0.weight": ([1536, 256], fp32), "t_embedder.mlp.0.bias": ([1536], fp32),
        "t_embedder.mlp.2.weight": ([1536, 1536], fp32), "t_embedder.mlp.2.bias": ([1536], fp32),
        "adaLN_modulation.1.weight": ([9216, 1536], fp32), "adaLN_modulation.1.bias": ([9216], fp32),
        "input_layer.weight": ([1536, 8], fp32), "input_layer.bias": ([1536], fp32),
        "out_layer.weight": ([8, 1536], fp32), "out_layer.bias": ([8], fp32),
        "rope_phases": ([4096, 64], torch.complex64),
    }
    expected = dict(expected_top)
    for i in range(30):
        expected.update({f"blocks.{i}.{k}": v for k, v in expected_block.items()})
    got = {k: (list(v.shape), v.dtype) for k, v in sd.items()}
    assert got == expected
    # The stored file: 640 tensors = 420 bf16 + 220 fp32 (rope_phases is not stored).
    counts = Counter(v.dtype for k, v in sd.items() if k != "rope_phases")
    assert counts == {bf16: 420, fp32: 220}


def test_slat_flow_differs_from_ss_flow_only_in_io_layers(ss_flow, shape_flow, tex_flow):
    ss = {k: list(v.shape) for k, v in ss_flow.state_dict().items() if k != "rope_phases"}
    for model, cin in ((shape_flow, 32), (tex_flow, 64)):
        sl = {k: list(v.shape) for k, v in model.state_dict().items()}
        assert set(sl) == set(ss)
        diff = {k for k in sl if sl[k] != ss[k]}
        assert diff == {"input_layer.weight", "out_layer.weight", "out_layer.bias"}
        assert sl["input_layer.weight"] == [1536, cin]
        assert sl["out_layer.weight"] == [32, 1536]


def test_ss_decoder_keys_and_shapes():
    sd = _meta(SparseStructureDecoder, **SS_DEC_ARGS).state_dict()
    shapes = {k: list(v.shape) for k, v in sd.items()}
    assert shapes["input_layer.weight"] == [512, 8, 3, 3, 3]
    assert shapes["blocks.2.conv.weight"] == [1024, 512, 3, 3, 3]
    assert shapes["blocks.5.conv.weight"] == [256, 128, 3, 3, 3]
    assert shapes["out_layer.0.weight"] == [32]
    assert shapes["out_layer.2.weight"] == [1, 32, 3, 3, 3]
    res_blocks = {"middle_block.0": 512, "middle_block.1": 512, "blocks.0": 512, "blocks.1": 512,
                  "blocks.3": 128, "blocks.4": 128, "blocks.6": 32, "blocks.7": 32}
    expected = {"input_layer.weight", "input_layer.bias", "blocks.2.conv.weight", "blocks.2.conv.bias",
                "blocks.5.conv.weight", "blocks.5.conv.bias", "out_layer.0.weight", "out_layer.0.bias",
                "out_layer.2.weight", "out_layer.2.bias"}
    for prefix, ch in res_blocks.items():
        for n in ("norm1", "norm2"):
            assert shapes[f"{prefix}.{n}.weight"] == [ch]
            expected |= {f"{prefix}.{n}.weight", f"{prefix}.{n}.bias"}
        for n in ("conv1", "conv2"):
            assert shapes[f"{prefix}.{n}.weight"] == [ch, ch, 3, 3, 3]
            expected |= {f"{prefix}.{n}.weight", f"{prefix}.{n}.bias"}
    assert set(shapes) == expected
    assert sd["blocks.0.conv1.weight"].dtype == torch.float16
    assert sd["blocks.0.norm1.weight"].dtype == torch.float32
    assert sd["input_layer.weight"].dtype == torch.float32 and sd["out_layer.2.weight"].dtype == torch.float32


def test_invalid_configs_fail_at_construction():
    with pytest.raises(ValueError, match="pe_mode"):
        _meta(SLatFlowModel, resolution=8, in_channels=4, out_channels=4,
              **{**DIT_ARGS, "pe_mode": "learned"})
    with pytest.raises(ValueError, match="divisible"):
        _meta(SLatFlowModel, resolution=8, in_channels=4, out_channels=4, **{**DIT_ARGS, "num_heads": 7})
    with pytest.raises(TypeError):
        _meta(SLatFlowModel, resolution=8, in_channels=4, out_channels=4, typo_arg=1, **DIT_ARGS)
