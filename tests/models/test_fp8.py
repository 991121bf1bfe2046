"""FP8 (e4m3) block linears against plain float64 references, on the CPU (``torch._scaled_mm`` runs there).

Tolerances: e4m3 keeps 3 mantissa bits, so quantizing rounds each value by at most 2^-4 of
itself (normal range) or by half the subnormal step, 2^-10 of the row scale; the FP8 product is
exact in fp32 accumulation up to summation order and is written in bf16 (relative 2^-8).
"""

from __future__ import annotations

import argparse

import pytest
import torch
from torch import nn

from backend.models import SLatFlowModel
from backend.models.fp8 import (
    FP8_MAX,
    Fp8Linear,
    Fp8Unsupported,
    check_fp8_device,
    convert_blocks_to_fp8,
    quantize_rows,
)
from backend.pipeline import cli_common
from backend.pipeline.errors import PipelineError
from backend.pipeline.runtime import ModelStore, Runtime
from backend.sparse import SparseTensor

TINY = dict(model_channels=64, cond_channels=24, num_blocks=2, num_heads=2, mlp_ratio=4.0, pe_mode="rope",
            share_mod=True, qk_rms_norm=True, qk_rms_norm_cross=True, dtype="float32")


def test_rows_are_quantized_within_e4m3_rounding():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 96, generator=g) * torch.logspace(-3, 2, 64)[:, None]  # rows of very different size
    x[5] = 0.0
    q, scale = quantize_rows(x)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (64, 1) and scale.dtype == torch.float32
    back = q.double() * scale.double()
    bound = 2.0**-4 * x.double().abs() + 2.0**-10 * scale.double()
    assert ((back - x.double()).abs() <= bound).all()
    assert torch.equal(back[5], torch.zeros(96, dtype=torch.float64))  # an all-zero row stays zero
    nonzero = [i for i in range(64) if i != 5]
    assert torch.allclose(q[nonzero].float().abs().amax(dim=1), torch.full((63,), FP8_MAX))  # range used


def test_fp8_linear_is_the_product_of_the_quantized_operands():
    g = torch.Generator().manual_seed(1)
    linear = nn.Linear(64, 48)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(48, 64, generator=g) * 0.2)
        linear.bias.copy_(torch.randn(48, generator=g))
    fp8 = Fp8Linear(linear)
    x = torch.randn(3, 5, 64, generator=g)
    out = fp8(x)
    assert out.shape == (3, 5, 48) and out.dtype == torch.float32 and fp8.activation_dtype == torch.float32
    qx, sx = quantize_rows(x.reshape(-1, 64))
    qw, sw = quantize_rows(linear.weight.detach())
    reference = (qx.double() * sx.double()) @ (qw.double() * sw.double()).t()
    product = out.reshape(-1, 48).double() - linear.bias.double()
    assert ((product - reference).abs() <= 2.0**-8 * reference.abs() + 1e-6).all()  # bf16 rounding of each
    # Against the full-precision linear: a few percent of the output's spread, not more.
    exact = linear(x).detach().double()
    assert (out.double() - exact).pow(2).mean().sqrt() < 0.05 * exact.std()


def test_misaligned_widths_are_refused():
    with pytest.raises(ValueError, match="divisible by 16"):
        Fp8Linear(nn.Linear(24, 64))


def _flow(seed: int) -> SLatFlowModel:
    model = SLatFlowModel(resolution=32, in_channels=8, out_channels=8, **TINY)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1 + (1.0 if name.endswith("gamma") else 0.0))
    return model.eval().requires_grad_(False)


def test_a_converted_flow_model_stays_close_to_the_original():
    model = _flow(2)
    cells = [[0, x, y, z] for x in range(3) for y in range(3) for z in range(2)]
    coords = torch.tensor(cells, dtype=torch.int32)
    x = SparseTensor(coords, torch.randn(len(coords), 8, generator=torch.Generator().manual_seed(3)), 1)
    t = torch.tensor([500.0])
    cond = torch.randn(1, 7, 24, generator=torch.Generator().manual_seed(4))
    before = model(x, t, cond).feats.double()
    converted = convert_blocks_to_fp8(model)
    # Per block: to_qkv, self to_out, to_q, cross to_out, mlp.0, mlp.2; to_kv (24 wide input) stays.
    assert converted == 6 * TINY["num_blocks"]
    block = model.blocks[0]
    assert type(block.cross_attn.to_kv) is nn.Linear and type(block.mlp.mlp[0]) is Fp8Linear
    assert type(model.input_layer) is nn.Linear and type(model.out_layer) is nn.Linear  # outside the blocks
    assert model.dtype == torch.float32
    after = model(x, t, cond).feats.double()
    assert (after - before).pow(2).mean().sqrt() < 0.1 * before.std()  # measured: 5.1%
    with pytest.raises(ValueError, match="no transformer blocks"):
        convert_blocks_to_fp8(nn.Linear(16, 16))


def test_devices_without_fp8_are_refused_with_the_flag_named(tiny_checkpoint):
    check_fp8_device("cpu")
    with pytest.raises(Fp8Unsupported, match="NVIDIA GPU"):
        check_fp8_device("mps")
    with pytest.raises(PipelineError, match="NVIDIA GPU") as info:
        ModelStore(Runtime(model=str(tiny_checkpoint), device="mps", offline=True, fp8=True))
    assert "--fp8" in info.value.hint


def test_the_flag_reaches_the_store_and_converts_only_the_flow_models(tiny_checkpoint):
    parser = argparse.ArgumentParser()
    cli_common.add_runtime_arguments(parser)
    args = parser.parse_args(["--model", str(tiny_checkpoint), "--device", "cpu", "--offline", "--fp8"])
    runtime = cli_common.runtime(args)
    assert runtime.fp8 and not cli_common.runtime(parser.parse_args(["--device", "cpu"])).fp8
    store = ModelStore(runtime)
    flow = store.get("shape_slat_flow_model_512")
    assert any(isinstance(m, Fp8Linear) for m in flow.modules())
    decoder = store.get("shape_slat_decoder")
    assert not any(isinstance(m, Fp8Linear) for m in decoder.modules())
