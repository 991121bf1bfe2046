"""``Runtime.compile_blocks``: compiled flow blocks give the eager outputs; a failing compile falls back.

Compiled and eager float32 forwards of a tiny random SLat flow DiT agree to 1e-4 of the output's
largest value (inductor fuses and reorders float32 arithmetic), for three token counts in a row
(the second makes the token count symbolic; the third reuses that program).
"""

from __future__ import annotations

import copy
import logging

import pytest
import torch

from backend.models import SLatFlowModel
from backend.pipeline.runtime import ModelStore, Release, Runtime, compile_with_eager_fallback
from backend.sparse import SparseTensor

TINY = dict(model_channels=64, cond_channels=32, num_blocks=2, num_heads=2, mlp_ratio=4.0, pe_mode="rope",
            share_mod=True, qk_rms_norm=True, qk_rms_norm_cross=True, dtype="float32")


def _flow() -> SLatFlowModel:
    model = SLatFlowModel(resolution=32, in_channels=8, out_channels=8, **TINY)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1 + (1.0 if name.endswith("gamma") else 0.0))
    return model.eval().requires_grad_(False)


def _inputs(n: int, seed: int) -> tuple[SparseTensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    coords = torch.unique(torch.randint(0, 16, (n, 3), generator=g), dim=0)
    coords = torch.cat([torch.zeros(len(coords), 1, dtype=torch.long), coords], dim=1).int()
    x = SparseTensor(coords, torch.randn(len(coords), 8, generator=g), 1)
    return x, torch.tensor([700.0]), torch.randn(1, 5, 32, generator=g)


@pytest.mark.slow
def test_compiled_blocks_give_the_eager_outputs(tiny_checkpoint):
    from backend.models import read_pipeline_config

    eager = _flow()
    compiled = copy.deepcopy(eager)
    release = Release(read_pipeline_config(tiny_checkpoint / "pipeline.json"))
    ModelStore(Runtime(model="unused", device="cpu", compile_blocks=True), release,
               models={"shape_slat_flow_model_512": compiled})
    assert all(block._compiled_call_impl is not None for block in compiled.blocks)
    with torch.no_grad():
        for n, seed in ((40, 1), (57, 2), (33, 3)):
            x, t, cond = _inputs(n, seed)
            want = eager(x, t, cond).feats
            got = compiled(x, t, cond).feats
            assert (got - want).abs().max() <= 1e-4 * want.abs().max()


def test_a_failing_compile_runs_the_module_eagerly(monkeypatch, caplog):
    class CompilerFailure(RuntimeError):
        pass

    CompilerFailure.__module__ = "torch._dynamo.exc"  # where torch's compiler errors come from
    module = torch.nn.Linear(4, 3)
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise CompilerFailure("no C compiler")

    monkeypatch.setattr(module, "compile", lambda: setattr(module, "_compiled_call_impl", broken))
    compile_with_eager_fallback(module)
    x = torch.randn(2, 4)
    with caplog.at_level(logging.WARNING):
        out = module(x)
    assert torch.equal(out, torch.nn.functional.linear(x, module.weight, module.bias)) and calls == [1]
    assert "running it eagerly" in caplog.text
    module(x)
    assert calls == [1]  # compiled once, never tried again


def test_other_errors_inside_a_compiled_module_are_not_swallowed(monkeypatch):
    module = torch.nn.Linear(4, 3)

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("out of memory")

    monkeypatch.setattr(module, "compile", lambda: setattr(module, "_compiled_call_impl", oom))
    compile_with_eager_fallback(module)
    with pytest.raises(torch.OutOfMemoryError):
        module(torch.randn(2, 4))
