"""The sRGB transfer function (IEC 61966-2-1), for numpy arrays and torch tensors alike.

Base colour is stored sRGB-encoded (glTF textures, O-Voxel attributes, PNGs); lighting, filtering
and the glTF factor products happen in linear light.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

Values = TypeVar("Values", np.ndarray, torch.Tensor)


def srgb_to_linear(c: Values) -> Values:
    """sRGB-encoded values in [0, 1] -> linear light, in the input's type and dtype."""
    xp = np if isinstance(c, np.ndarray) else torch
    return xp.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: Values) -> Values:
    """Linear light, clamped to [0, 1] -> sRGB-encoded values, in the input's type and dtype.

    The power's base is kept above 0 so that the (unused) branch has a finite gradient at 0.
    """
    xp = np if isinstance(c, np.ndarray) else torch
    c = c.clip(0.0, 1.0)
    return xp.where(c <= 0.0031308, c * 12.92, 1.055 * c.clip(min=1e-12) ** (1 / 2.4) - 0.055)
