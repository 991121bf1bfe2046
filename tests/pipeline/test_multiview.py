"""Several pictures of one object: the two multi-view sampling modes and a 3-view job end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from backend.pipeline.api import MAX_VIEWS, ExportOptions, GenerateRequest
from backend.pipeline.errors import PipelineError
from backend.pipeline.sampler import MultiViewCond, SamplerParams, sample
from tests.fixtures import images
from tests.pipeline.test_generate import FAST, _generator
from tests.pipeline.test_sampler import Recorder

# Guided at every step (interval covers [0, 1]), no rescale: the velocities are easy to add by hand.
GUIDED = SamplerParams(steps=4, guidance_strength=3.0, guidance_interval=(0.0, 1.0), rescale_t=1.0)
UNGUIDED = replace(GUIDED, guidance_strength=1.0)


def _views(*values):
    return MultiViewCond(tuple(torch.full((1, 2, 3), float(v)) for v in values), "stochastic")


def test_stochastic_conditions_each_step_on_one_view_in_turn():
    model = Recorder()
    cond = _views(1, 2, 3)
    neg = torch.zeros(1, 2, 3)
    sample(model, torch.zeros(1, 4), cond, neg, UNGUIDED)
    # One pass per step, cycling through the views: 1, 2, 3, 1 (|cond| sums are 6 * value).
    assert [s for _, s, _ in model.calls] == [6.0, 12.0, 18.0, 6.0]
    # With guidance: per step one conditional pass of that step's view + one unconditional pass.
    model = Recorder()
    sample(model, torch.zeros(1, 4), cond, neg, GUIDED)
    assert [s for _, s, _ in model.calls] == [6.0, 0.0, 12.0, 0.0, 18.0, 0.0, 6.0, 0.0]


def test_multidiffusion_averages_the_views_velocities_every_step():
    model = Recorder()
    cond = replace(_views(1, 2, 6), mode="multidiffusion")
    neg = torch.zeros(1, 2, 3)
    out = sample(model, torch.zeros(1, 4), cond, neg, GUIDED)
    # Per step: the 3 views' conditional passes, then ONE unconditional pass (shared negative).
    assert [s for _, s, _ in model.calls][:4] == [6.0, 12.0, 36.0, 0.0]
    assert len(model.calls) == 4 * GUIDED.steps
    # v = w * mean(1, 2, 6) + (1 - w) * 0 = 9 at every step; the steps' lengths add up to 1.
    assert torch.allclose(out, torch.full((1, 4), -9.0))


def test_one_view_is_the_single_view_sampler_exactly():
    cond = torch.randn(1, 2, 3, generator=torch.Generator().manual_seed(0))
    neg = torch.zeros_like(cond)
    plain = sample(Recorder(), torch.ones(1, 4), cond, neg, GUIDED)
    for mode in ("stochastic", "multidiffusion"):
        one_view = MultiViewCond((cond,), mode)
        assert torch.equal(sample(Recorder(), torch.ones(1, 4), one_view, neg, GUIDED), plain)


def test_bad_multiview_inputs_are_refused(tmp_path):
    with pytest.raises(ValueError, match="multi-view mode"):
        MultiViewCond((torch.zeros(1, 2, 3),), "average")
    with pytest.raises(ValueError, match="same shape"):
        MultiViewCond((torch.zeros(1, 2, 3), torch.zeros(2, 2, 3)))
    with pytest.raises(PipelineError, match=f"1 to {MAX_VIEWS} pictures"):
        GenerateRequest(images=tuple(tmp_path / f"{i}.png" for i in range(MAX_VIEWS + 1)),
                        output_dir=tmp_path, multiview="stochastic")
    with pytest.raises(PipelineError, match="multiview must be one of"):
        GenerateRequest(images=(tmp_path / "a.png",), output_dir=tmp_path, multiview="vote")  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["stochastic", "multidiffusion"])
def test_three_views_make_one_object(tmp_path, tiny_checkpoint, mode):
    views = tuple(images.rgba_transparent(tmp_path / f"view_{i}.png") for i in range(3))
    request = GenerateRequest(images=views, output_dir=tmp_path / mode, pipeline_type="512", seed=5,
                              sparse_structure=FAST, shape=FAST, texture=FAST, multiview=mode,
                              export=ExportOptions(texture_size=64, faces=800, write_glb=False))
    result = _generator(tiny_checkpoint, radius=0.05).generate(request)
    (asset,) = result.assets  # three pictures of one object -> one asset, named after the first
    assert asset.name == "view_0"
    doc = json.loads(asset.direct.read_text())
    assert doc["multiview"] == mode and doc["views"] == [str(v) for v in views]
    assert doc["seed"] == 5 and doc["sample"] == 0


@pytest.mark.slow
def test_three_views_from_the_command_line(tmp_path, tiny_checkpoint):
    views = [str(images.rgba_transparent(tmp_path / f"view_{i}.png")) for i in range(3)]
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "backend", "generate", *views, "--multiview", "multidiffusion",
           "--model", str(tiny_checkpoint), "--offline", "--device", "cpu", "--pipeline", "512",
           "--steps", "2", "--texture-size", "64", "--faces", "800", "--no-glb", "-o", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[2])
    assert run.returncode == 0, run.stderr[-3000:]
    (result,) = out.glob("*/result.json")  # three pictures, one object
    doc = json.loads(result.read_text())
    assert doc["multiview"] == "multidiffusion" and doc["views"] == views
    assert "Loading weights" not in run.stderr  # the library's own progress bar is off
