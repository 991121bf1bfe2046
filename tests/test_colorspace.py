"""The one sRGB transfer function: known values, both array types, dtypes, round trip, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.colorspace import linear_to_srgb, srgb_to_linear

# (sRGB, linear) pairs from the IEC 61966-2-1 formulas: the knee of each branch and mid-grey.
KNOWN = [(0.0, 0.0), (0.04045, 0.04045 / 12.92), (0.5, 0.21404114), (0.73535698, 0.5), (1.0, 1.0)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_known_values_and_dtypes_in_numpy(dtype):
    srgb = np.array([s for s, _ in KNOWN], dtype=dtype)
    linear = np.array([v for _, v in KNOWN], dtype=dtype)
    assert srgb_to_linear(srgb).dtype == dtype and linear_to_srgb(linear).dtype == dtype
    np.testing.assert_allclose(srgb_to_linear(srgb), linear, atol=1e-6)
    np.testing.assert_allclose(linear_to_srgb(linear), srgb, atol=1e-6)


def test_torch_matches_numpy_and_clamps():
    values = np.linspace(-0.2, 1.2, 301)
    for fn in (srgb_to_linear, linear_to_srgb):
        got = fn(torch.from_numpy(values))
        assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
        np.testing.assert_allclose(got.numpy(), fn(values), atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(linear_to_srgb(np.array([-1.0, 2.0])), [0.0, 1.0], atol=1e-12)


def test_round_trip_and_finite_gradient_at_zero():
    x = np.linspace(0.0, 1.0, 1001)
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-9)
    t = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    linear_to_srgb(t).sum().backward()
    assert torch.isfinite(t.grad).all()
