"""``scripts/measure_fp8.py``'s measures on hand-made values."""

from __future__ import annotations

import math

import torch

from tests.fixtures.scripts import load_script


def test_measures():
    m = load_script("measure_fp8")
    ref = torch.tensor([3.0, 4.0])
    assert m.relative_error(ref, ref) == 0.0
    assert math.isclose(m.relative_error(torch.tensor([3.0, 4.5]), ref), 0.1)  # |(0, .5)| / 5
    a = torch.tensor([[0, 1, 1, 1], [0, 2, 2, 2]])
    b = torch.tensor([[0, 1, 1, 1], [0, 3, 3, 3], [0, 4, 4, 4]])
    assert m.voxel_iou(a, b) == 1 / 4
    assert m.psnr(torch.zeros(4), torch.zeros(4)) == math.inf
    assert math.isclose(m.psnr(torch.full((4,), 0.1), torch.zeros(4)), 20.0, rel_tol=1e-6)  # MSE 0.01
    assert m.psnr(torch.full((4,), 1.5), torch.ones(4)) == math.inf  # values are clamped to [0, 1]
