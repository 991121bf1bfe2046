"""The flow-Euler CFG sampler against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.models.pipeline_config import parse_pipeline_config
from backend.models.tiny_checkpoint import pipeline_json
from backend.pipeline.api import Cancelled, CancelToken, SamplerOverrides
from backend.pipeline.sampler import (
    DEFAULT_SHAPE,
    DEFAULT_SS,
    DEFAULT_TEX,
    SamplerParams,
    guided_velocity,
    make_generator,
    sample,
    strength_at,
    time_grid,
)
from backend.sparse import SparseTensor


class Recorder:
    """A model whose velocity is ``cond.mean()`` everywhere; records the calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, t, cond, **kwargs):
        self.calls.append((t.clone(), float(cond.abs().sum()), kwargs))
        feats = x.feats if isinstance(x, SparseTensor) else x
        v = torch.full_like(feats, float(cond.mean()))
        return x.replace(v) if isinstance(x, SparseTensor) else v


def test_time_grid_is_float64_and_hits_0_6_exactly():
    ts = time_grid(12, 3.0)
    assert ts.dtype == np.float64 and ts[0] == 1.0 and ts[-1] == 0.0
    assert ts[8] == 0.6  # tau = 1/3 -> 3 (1/3) / (1 + 2/3)
    assert strength_at(ts[8], DEFAULT_SHAPE) == 7.5  # inclusive lower bound
    assert strength_at(np.nextafter(0.6, 0.0), DEFAULT_SHAPE) == 1.0
    # The same grid computed in float32 lands below the boundary and would lose a guided step.
    tau32 = np.linspace(1, 0, 13, dtype=np.float32)
    t32 = np.float32(3) * tau32 / (np.float32(1) + np.float32(2) * tau32)
    assert t32[8] < np.float32(0.6)


@pytest.mark.parametrize("params, forwards, guided", [
    (DEFAULT_SS, 22, 10), (DEFAULT_SHAPE, 21, 9), (DEFAULT_TEX, 12, 0)])
def test_forward_counts_per_stage(params, forwards, guided):
    model = Recorder()
    cond = torch.ones(1, 3, 4)
    sample(model, torch.zeros(1, 2, 2, 2, 2), cond, torch.zeros_like(cond), params)
    assert len(model.calls) == forwards
    assert sum(1 for _, s, _ in model.calls if s == 0) == guided  # unconditional passes


def test_two_steps_by_hand():
    # v_cond = 1, v_uncond = 0 -> guided v = w. Grid [1, 0.5, 0]; step 0 (t=1) guided, step 1 not.
    params = SamplerParams(steps=2, guidance_strength=3.0, guidance_interval=(0.6, 1.0), rescale_t=1.0)
    cond = torch.ones(1, 2, 3)
    out = sample(Recorder(), torch.full((1, 4), 10.0), cond, torch.zeros_like(cond), params)
    assert torch.allclose(out, torch.full((1, 4), 10.0 - 0.5 * 3.0 - 0.5 * 1.0))


def test_timestep_passed_to_model_is_1000t_float32():
    model = Recorder()
    params = SamplerParams(steps=4, guidance_strength=1.0, rescale_t=5.0)
    x = torch.zeros(3, 2)
    sample(model, x, torch.ones(3, 1, 1), torch.zeros(3, 1, 1), params)
    ts = time_grid(4, 5.0)
    for (t, _, _), expect in zip(model.calls, ts[:-1]):
        assert t.dtype == torch.float32 and t.shape == (3,)
        assert torch.equal(t, torch.full((3,), 1000.0 * expect, dtype=torch.float32))


def _fixed_model(v_pos, v_neg):
    def model(x, t, cond, **kwargs):
        v = v_pos if float(cond.abs().sum()) > 0 else v_neg
        return x.replace(v.clone()) if isinstance(x, SparseTensor) else v.clone()
    return model


def _expected_rescale(xt, t, vp, vn, w, phi, s, ddof, groups):
    """numpy reference: CFG then rescale of x0 to the conditional x0's std, per group of rows."""
    v = w * vp + (1 - w) * vn
    x0p = (1 - s) * xt - (s + (1 - s) * t) * vp
    x0g = (1 - s) * xt - (s + (1 - s) * t) * v
    out = np.empty_like(x0g)
    for g in groups:
        ratio = x0p[g].std(ddof=ddof) / x0g[g].std(ddof=ddof)
        out[g] = phi * x0g[g] * ratio + (1 - phi) * x0g[g]
    return ((1 - s) * xt - out) / (s + (1 - s) * t)


def test_guidance_rescale_dense_uses_unbiased_std(rng):
    xt, vp, vn = (rng.normal(size=(2, 3, 4)) for _ in range(3))
    cond = torch.ones(2, 1, 1)
    got = guided_velocity(_fixed_model(torch.tensor(vp), torch.tensor(vn)), torch.tensor(xt), 0.7,
                          cond, torch.zeros_like(cond), 5.0, 0.6, 1e-5)
    expect = _expected_rescale(xt, 0.7, vp, vn, 5.0, 0.6, 1e-5, ddof=1, groups=[0, 1])
    np.testing.assert_allclose(got.numpy(), expect, rtol=1e-10)
    # (Both stds of the ratio count the same elements, so ddof cancels; the per-sample grouping does not.)
    pooled = _expected_rescale(xt, 0.7, vp, vn, 5.0, 0.6, 1e-5, ddof=1, groups=[slice(None)])
    assert not np.allclose(expect, pooled, rtol=1e-6)


def test_guidance_rescale_sparse_uses_population_std_per_sample(rng):
    coords = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 1], [0, 1, 0, 0], [1, 0, 0, 0], [1, 2, 2, 2]],
                          dtype=torch.int32)
    xt, vp, vn = (rng.normal(size=(5, 3)) for _ in range(3))
    x = SparseTensor(coords, torch.tensor(xt))
    cond = torch.ones(2, 1, 1)
    got = guided_velocity(_fixed_model(torch.tensor(vp), torch.tensor(vn)), x, 0.4,
                          cond, torch.zeros_like(cond), 7.5, 0.5, 1e-5)
    expect = _expected_rescale(xt, 0.4, vp, vn, 7.5, 0.5, 1e-5, ddof=0,
                               groups=[slice(0, 3), slice(3, 5)])
    assert isinstance(got, SparseTensor) and got.coords is coords
    np.testing.assert_allclose(got.feats.numpy(), expect, rtol=1e-10)


def test_strength_zero_is_one_unconditional_pass():
    model = Recorder()
    cond = torch.ones(1, 1, 1)
    v = guided_velocity(model, torch.zeros(1, 2), 0.5, cond, torch.zeros_like(cond), 0.0, 0.7, 1e-5)
    assert len(model.calls) == 1 and model.calls[0][1] == 0 and float(v.sum()) == 0


def test_kwargs_reach_every_call_and_progress_and_cancel():
    model = Recorder()
    token = CancelToken()
    seen = []

    def on_step(done, total):
        seen.append((done, total))
        if done == 3:
            token.cancel()

    cond = torch.ones(1, 1, 1)
    with pytest.raises(Cancelled):
        sample(model, torch.zeros(1, 2), cond, torch.zeros_like(cond), DEFAULT_TEX,
               on_step=on_step, cancel=token, concat_cond="S")
    assert seen == [(1, 12), (2, 12), (3, 12)]
    assert len(model.calls) == 3 and all(k == {"concat_cond": "S"} for *_, k in model.calls)


def test_generator_matches_reference_global_stream():
    torch.manual_seed(123)
    a = torch.randn(2, 8, 4)
    b = torch.randn(7, 32)
    g = make_generator(123)
    assert torch.equal(torch.randn(2, 8, 4, generator=g), a)
    assert torch.equal(torch.randn(7, 32, generator=g), b)


def test_params_from_config_and_overrides():
    # Unknown sampler keys are rejected by the strict pipeline.json parser (tests/loading).
    cfg = parse_pipeline_config(pipeline_json("/x/dinov3")).shape_slat_sampler
    p = SamplerParams.from_config(cfg)
    assert p == DEFAULT_SHAPE
    q = p.with_overrides(SamplerOverrides(steps=20, guidance_interval=(0.5, 0.9)))
    assert q.steps == 20 and q.guidance_interval == (0.5, 0.9) and q.rescale_t == 3.0
    with pytest.raises(ValueError, match="steps"):
        p.with_overrides(SamplerOverrides(steps=0))
