"""The structure sampler seam: the generator asks its sampler, and the cascade's grid rule is shared."""

from __future__ import annotations

import pytest
import torch

from backend.pipeline.api import GenerateRequest, SamplerOverrides
from backend.pipeline.generator import Trellis2Generator
from backend.pipeline.runtime import Runtime
from backend.pipeline.stages import cascade_resolution
from backend.pipeline.structure import FlowStructure
from tests.fixtures import images


def test_cascade_resolution_steps_down_by_128_until_under_the_cap():
    asked = []

    def coords_at(res):
        asked.append(res)
        return torch.zeros(res // 16, 4, dtype=torch.int32)  # res / 16 tokens

    coords, res = cascade_resolution(coords_at, 1536, max_tokens=81)
    assert asked == [1536, 1408, 1280] and res == 1280 and len(coords) == 80
    asked.clear()
    assert cascade_resolution(coords_at, 1536, max_tokens=1)[1] == 1024  # 1024 is always accepted
    assert asked == [1536, 1408, 1280, 1152, 1024]


class _Stop(Exception):
    pass


class _Recording(FlowStructure):
    def __init__(self):
        self.calls = []

    def occupancy(self, store, cond, neg_cond, params, gen, grid, tracker):
        self.calls.append(("occupancy", grid, cond.shape[0], params.steps))
        raise _Stop


def test_generator_takes_the_structure_from_the_injected_sampler(tmp_path, tiny_checkpoint):
    structure = _Recording()
    runtime = Runtime(model=str(tiny_checkpoint), device="cpu", offline=True)
    gen = Trellis2Generator(runtime, structure=structure)
    request = GenerateRequest(images=(images.rgba_transparent(tmp_path / "obj.png"),),
                              output_dir=tmp_path / "out", pipeline_type="1024", num_samples=2,
                              sparse_structure=SamplerOverrides(steps=3))
    with pytest.raises(_Stop):
        gen.generate(request)
    assert structure.calls == [("occupancy", 64, 2, 3)]  # the 1024 type samples a 64^3 grid


def test_the_default_structure_is_the_release_flow(tiny_checkpoint):
    gen = Trellis2Generator(Runtime(model=str(tiny_checkpoint), device="cpu", offline=True))
    assert type(gen.structure) is FlowStructure
