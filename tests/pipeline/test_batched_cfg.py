"""Batched classifier-free guidance and the per-job condition K/V cache against the plain path.

The plain path is one network call per pass (conditional, unconditional, each view) with the
condition projected in every call. Both fast paths run tiny random flow DiTs (the three stages'
model classes) on CPU:

* batched CFG gives the same velocities and samples within float rounding: max abs difference
  <= 1e-10 (float64) or 2e-5 (float32) times max(1, the largest |value| of the sequential
  result) (the batch changes the matmul shapes, so sums may round differently, and a guidance
  strength of 4 scales that rounding up 4 to 7 times; the values are O(1..10));
* the K/V cache gives bit-identical outputs (the same operations on the same tensors, once).
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from backend.models import CondKVCache, SLatFlowModel, SparseStructureFlowModel
from backend.pipeline.api import GenerateRequest
from backend.pipeline.image_to_3d import stage_params
from backend.pipeline.runtime import Runtime
from backend.pipeline.sampler import MultiViewCond, SamplerParams, StepReuse, guided_velocity, sample
from backend.pipeline.stages import LatentNorm, sample_texture
from backend.sparse import SparseTensor

TINY = dict(model_channels=64, cond_channels=24, num_blocks=2, num_heads=2, mlp_ratio=4.0,
            pe_mode="rope", share_mod=True, qk_rms_norm=True, qk_rms_norm_cross=True, dtype="float32")
# Guided at every step with rescale, so every step takes the whole CFG arithmetic.
GUIDED = SamplerParams(steps=3, guidance_strength=4.0, guidance_rescale=0.7, guidance_interval=(0.0, 1.0),
                       rescale_t=3.0)
# Guided only on the first steps: the later steps have one pass (checks the switch between the two).
PARTLY = replace(GUIDED, steps=4, guidance_interval=(0.6, 1.0))
TOLERANCE = {torch.float64: 1e-10, torch.float32: 2e-5}  # x max(1, max |reference|)
M = 7  # condition tokens


def _randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if name.endswith("gamma") else 0.0))
    return model.eval().requires_grad_(False)


def _model(kind: str, dtype: torch.dtype) -> torch.nn.Module:
    if kind == "ss":
        model = SparseStructureFlowModel(resolution=4, in_channels=3, out_channels=3, **TINY)
    else:  # "shape": 8 noise channels; "texture": 8 noise + 8 shape-latent channels (concat_cond)
        model = SLatFlowModel(resolution=32, in_channels=8 if kind == "shape" else 16, out_channels=8, **TINY)
    model = _randomise(model, {"ss": 1, "shape": 2, "texture": 3}[kind])
    for p in model.parameters():  # Module.to(float64) would cast the complex RoPE buffer to real
        p.data = p.data.to(dtype)
    return model


class Counting:
    """Wraps a model; counts its calls and records each call's batch. ``kv``: pass the K/V cache on."""

    def __init__(self, model: torch.nn.Module, kv: bool = True) -> None:
        self.model, self.batches = model, []
        if kv:
            self.takes_cond_kv_cache = True

    def __call__(self, x, t, cond, **kwargs):
        self.batches.append(int(cond.shape[0]))
        return self.model(x, t, cond, **kwargs)


def _sparse(lengths: list[int], channels: int, dtype: torch.dtype, g: torch.Generator) -> SparseTensor:
    coords = []
    for b, n in enumerate(lengths):
        xyz = torch.randperm(16**3, generator=g)[:n]
        xyz = torch.stack([xyz // 256, xyz // 16 % 16, xyz % 16], 1)
        coords.append(torch.cat([torch.full((n, 1), b), xyz], 1))
    coords = torch.cat(coords).int()
    return SparseTensor(coords, torch.randn(len(coords), channels, generator=g, dtype=dtype), len(lengths))


def _inputs(kind: str, batch: int, views: int, dtype: torch.dtype, seed: int = 0):
    """(noise, cond (a tensor or the views), neg_cond, kwargs) for ``batch`` samples."""
    g = torch.Generator().manual_seed(seed)
    if kind == "ss":
        noise = torch.randn(batch, 3, 4, 4, 4, generator=g, dtype=dtype)
    else:
        noise = _sparse([23, 15, 30][:batch], 8, dtype, g)  # samples of different sizes
    conds = [torch.randn(batch, M, 24, generator=g, dtype=dtype) for _ in range(views)]
    # A random negative (the pipeline's is zeros): swapped halves of the batch would show.
    neg = torch.randn(batch, M, 24, generator=g, dtype=dtype)
    kwargs = {}
    if kind == "texture":
        kwargs["concat_cond"] = noise.replace(torch.randn(len(noise), 8, generator=g, dtype=dtype))
    return noise, conds, neg, kwargs


def _feats(v) -> torch.Tensor:
    return v.feats if isinstance(v, SparseTensor) else v


def _max_diff(a, b) -> float:
    return float((_feats(a) - _feats(b)).abs().max())


def _tolerance(reference) -> float:
    """Relative to the reference's largest magnitude (guidance of 4 scales the rounding up too)."""
    f = _feats(reference)
    return TOLERANCE[f.dtype] * max(1.0, float(f.abs().max()))


CASES = [(kind, batch) for kind in ("ss", "shape", "texture") for batch in (1, 2)]


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind, batch", CASES)
@pytest.mark.parametrize("views", [1, 3])
def test_batched_velocity_matches_one_pass_per_condition(kind, batch, views, dtype):
    model = _model(kind, dtype)
    x, conds, neg, kw = _inputs(kind, batch, views, dtype)
    cond = conds[0] if views == 1 else conds
    plain, fast = Counting(model), Counting(model)
    v_plain = guided_velocity(plain, x, 0.8, cond, neg, 4.0, 0.7, 1e-5, **kw)
    v_fast = guided_velocity(fast, x, 0.8, cond, neg, 4.0, 0.7, 1e-5, batched=True, **kw)
    assert plain.batches == [batch] * (views + 1)
    assert fast.batches == [batch * (views + 1)]  # one call on every pass's copies
    assert _max_diff(v_plain, v_fast) <= _tolerance(v_plain)
    if isinstance(x, SparseTensor):
        assert v_fast.coords is x.coords
    # A split that mixed up the conditional and unconditional outputs would be far off.
    swapped = guided_velocity(plain, x, 0.8, [neg, *conds[1:]], conds[0], 4.0, 0.7, 1e-5, **kw)
    assert _max_diff(swapped, v_plain) > 100 * _tolerance(v_plain)


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind, batch", CASES)
@pytest.mark.parametrize("mode", [None, "multidiffusion", "stochastic"])
def test_batched_sampling_matches_sequential_sampling(kind, batch, mode, dtype):
    model = _model(kind, dtype)
    noise, conds, neg, kw = _inputs(kind, batch, 1 if mode is None else 2, dtype, seed=1)
    cond = conds[0] if mode is None else MultiViewCond(tuple(conds), mode)
    for params in (GUIDED, PARTLY):
        plain, fast = Counting(model), Counting(model)
        z_plain = sample(plain, noise, cond, neg, params, **kw)
        z_fast = sample(fast, noise, cond, neg, replace(params, batched_cfg=True), **kw)
        assert _max_diff(z_plain, z_fast) <= _tolerance(z_plain)
        assert len(fast.batches) == params.steps  # one network call per step
        assert len(plain.batches) > params.steps


@torch.no_grad()
@pytest.mark.parametrize("kind, batch", CASES)
@pytest.mark.parametrize("batched", [False, True])
def test_kv_cache_gives_identical_samples_and_projects_each_condition_once(kind, batch, batched):
    model = _model(kind, torch.float32)
    noise, conds, neg, kw = _inputs(kind, batch, 1, torch.float32, seed=2)
    projections = []
    hook = model.blocks[0].cross_attn.to_kv.register_forward_hook(lambda *a: projections.append(1))
    try:
        params = replace(PARTLY, batched_cfg=batched)
        uncached = sample(Counting(model, kv=False), noise, conds[0], neg, params, **kw)
        calls = len(projections)
        cached = sample(Counting(model), noise, conds[0], neg, params, **kw)
    finally:
        hook.remove()
    assert torch.equal(*(z.feats if isinstance(z, SparseTensor) else z for z in (uncached, cached)))
    assert calls == (PARTLY.steps if batched else 7)  # 3 guided steps of 2 passes, one unguided step
    # Cached: sequential projects cond and neg once each; batched projects the stacked pair
    # (guided steps) and cond alone (the unguided step) once each.
    assert len(projections) - calls == 2


@torch.no_grad()
def test_kv_cache_follows_the_condition():
    model = _model("shape", torch.float32)
    x, conds, neg, _ = _inputs("shape", 1, 1, torch.float32)
    t = torch.tensor([500.0])
    cache = CondKVCache()
    cond = conds[0].clone()
    first = model(x, t, cond, cond_kv_cache=cache)
    assert torch.equal(model(x, t, cond, cond_kv_cache=cache).feats, first.feats) and cache.builds == 1
    cond.mul_(-1.5)  # changed in place: the cached K/V are stale and must be rebuilt
    changed = model(x, t, cond, cond_kv_cache=cache)
    assert cache.builds == 2 and torch.equal(changed.feats, model(x, t, cond).feats)
    assert not torch.allclose(changed.feats, first.feats, atol=1e-3)
    other = model(x, t, neg, cond_kv_cache=cache)  # another tensor: its own entry
    assert cache.builds == 3 and torch.equal(other.feats, model(x, t, neg).feats)
    # Packed samples of different sizes lay the condition out differently: a separate entry.
    x2, conds2, _, _ = _inputs("shape", 2, 1, torch.float32)
    packed = model(x2, torch.tensor([500.0, 20.0]), conds2[0], cond_kv_cache=cache)
    assert torch.equal(packed.feats, model(x2, torch.tensor([500.0, 20.0]), conds2[0]).feats)
    # The image conditioner's output is an inference tensor (no version counter): cached by identity.
    with torch.inference_mode():
        frozen = conds[0] * 2.0
    builds = cache.builds
    assert torch.equal(model(x, t, frozen, cond_kv_cache=cache).feats, model(x, t, frozen).feats)
    assert torch.equal(model(x, t, frozen, cond_kv_cache=cache).feats, model(x, t, frozen).feats)
    assert cache.builds == builds + 1


@torch.no_grad()
def test_equal_length_samples_run_as_a_dense_batch_with_the_packed_result():
    # Copies of one sample (a batched CFG step) have equal lengths and skip varlen packing.
    model = _model("texture", torch.float64)
    x, conds, neg, kw = _inputs("texture", 1, 1, torch.float64)
    reuse = StepReuse(model)
    xx = reuse.copies(x, 2)
    assert xx.batch_size == 2 and xx.coords[:, 0].tolist() == [0] * len(x) + [1] * len(x)
    t = torch.tensor([300.0, 300.0], dtype=torch.float32)
    both = model(xx, t, torch.cat([conds[0], neg]), concat_cond=reuse.copies(kw["concat_cond"], 2))
    for k, c in enumerate([conds[0], neg]):
        alone = model(x, t[:1], c, **kw)
        assert _max_diff(both.feats[k * len(x):(k + 1) * len(x)], alone.feats) <= 1e-10


@torch.no_grad()
def test_texture_stage_batched_matches_sequential():
    model = _model("texture", torch.float32)
    shape, conds, neg, _ = _inputs("texture", 1, 1, torch.float32, seed=3)
    norm = LatentNorm.from_lists([0.1] * 8, [2.0] * 8)
    out = [sample_texture(model, shape, conds[0], neg, replace(GUIDED, batched_cfg=b),
                          torch.Generator().manual_seed(0), norm, norm) for b in (False, True)]
    assert _max_diff(*out) <= _tolerance(out[0])


@pytest.mark.parametrize("device, setting, expect", [
    ("cuda", None, False), ("cpu", None, False), ("cuda", True, True), ("cpu", True, True)])
def test_runtime_switch_reaches_every_stage(device, setting, expect, tmp_path):
    from backend.models.pipeline_config import parse_pipeline_config
    from backend.models.tiny_checkpoint import pipeline_json

    runtime = Runtime(model="x", device=device) if setting is None else Runtime(
        model="x", device=device, batched_cfg=setting)
    store = SimpleNamespace(config=parse_pipeline_config(pipeline_json("/x/dinov3")), runtime=runtime)
    request = GenerateRequest(images=(tmp_path / "a.png",), output_dir=tmp_path)
    params = stage_params(store, request)
    assert {p.batched_cfg for p in (params.sparse_structure, params.shape, params.texture)} == {expect}


def test_cli_switch_turns_batching_on():
    import argparse

    from backend.pipeline import cli_common, cli_generate

    p = argparse.ArgumentParser()
    cli_generate.add_arguments(p)
    base = ["image.png", "-o", "out", "--device", "cpu", "--offline"]
    assert cli_common.runtime(p.parse_args(base)).batched_cfg is False  # off until timed on a GPU
    assert cli_common.runtime(p.parse_args([*base, "--batched-cfg"])).batched_cfg is True


@pytest.mark.parametrize("low_vram", [False, True])
def test_low_vram_keeps_no_condition_kv_between_steps(low_vram, tmp_path):
    from backend.models.pipeline_config import parse_pipeline_config
    from backend.models.tiny_checkpoint import pipeline_json

    runtime = Runtime(model="x", device="cpu", low_vram=low_vram)
    store = SimpleNamespace(config=parse_pipeline_config(pipeline_json("/x/dinov3")), runtime=runtime)
    params = stage_params(store, GenerateRequest(images=(tmp_path / "a.png",), output_dir=tmp_path))
    stages = (params.sparse_structure, params.shape, params.texture)
    assert {p.cache_cond_kv for p in stages} == {not low_vram}
    model = _model("shape", torch.float32)
    assert (StepReuse(model, params.shape.cache_cond_kv).kv_cache is None) is low_vram
