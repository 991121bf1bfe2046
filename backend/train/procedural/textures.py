"""Small tileable pattern images (uint8), drawn from a ``numpy.random.Generator``.

Every pattern returns a blend weight field ``t`` in [0, 1] of shape [size, size] that
wraps around both edges (the glTF sampler repeats textures), and :func:`colorize` turns
it into an sRGB image between two colours. Integer frequencies keep the wrap seamless.
"""

from __future__ import annotations

import numpy as np

PATTERNS = ("noise", "stripes", "checker", "dots", "gradient", "wood", "bricks", "tiles")


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = (np.arange(size, dtype=np.float64) + 0.5) / size
    return np.meshgrid(coords, coords, indexing="xy")  # x across columns, y down rows


def value_noise(rng: np.random.Generator, size: int, cells: int, octaves: int = 3) -> np.ndarray:
    """Tileable fractal value noise in [0, 1]: random lattice values, smooth bilinear blend, wrapped."""
    total = np.zeros((size, size))
    weight_sum = 0.0
    amplitude = 1.0
    for _ in range(octaves):
        lattice = rng.random((cells, cells))
        pos = (np.arange(size) + 0.5) * cells / size
        i0 = np.floor(pos).astype(np.int64)
        f = pos - i0
        f = f * f * (3.0 - 2.0 * f)  # smoothstep, so cell borders do not show as creases
        i0 %= cells
        i1 = (i0 + 1) % cells
        rows = lattice[i0][:, i0] * (1 - f)[None, :] + lattice[i0][:, i1] * f[None, :]
        rows_next = lattice[i1][:, i0] * (1 - f)[None, :] + lattice[i1][:, i1] * f[None, :]
        total += amplitude * (rows * (1 - f)[:, None] + rows_next * f[:, None])
        weight_sum += amplitude
        amplitude *= 0.5
        cells = min(cells * 2, size)
    return total / weight_sum


def pattern_field(name: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """The blend field of pattern ``name`` (one of :data:`PATTERNS`)."""
    x, y = _grid(size)
    if name == "noise":
        return value_noise(rng, size, int(rng.integers(3, 9)))
    if name == "stripes":
        kx, ky = int(rng.integers(0, 4)), int(rng.integers(1, 6))
        duty = rng.uniform(0.3, 0.7)
        return ((x * kx + y * ky) % 1.0 < duty).astype(np.float64)
    if name == "checker":
        k = int(rng.integers(2, 9))
        return ((np.floor(x * k) + np.floor(y * k)) % 2).astype(np.float64)
    if name == "dots":
        k = int(rng.integers(2, 7))
        radius = rng.uniform(0.15, 0.4)
        fx, fy = (x * k) % 1.0 - 0.5, (y * k) % 1.0 - 0.5
        return (np.hypot(fx, fy) < radius).astype(np.float64)
    if name == "gradient":
        # A triangle wave down the image, so the repeat has no hard edge.
        return np.abs(2.0 * y - 1.0) * 0.85 + 0.15 * value_noise(rng, size, 4, 2)
    if name == "wood":
        rings = int(rng.integers(4, 12))
        warp = value_noise(rng, size, int(rng.integers(2, 5)), 2)
        grain = (y * rings + warp * rng.uniform(1.0, 3.0)) % 1.0
        return grain ** rng.uniform(1.5, 3.0)
    if name == "bricks":
        rows = int(rng.integers(4, 9))
        cols = int(rng.integers(2, 5))
        mortar = rng.uniform(0.06, 0.12)
        row = np.floor(y * rows)
        fy = (y * rows) % 1.0
        fx = (x * cols + 0.5 * (row % 2)) % 1.0
        joint = (fy < mortar) | (fx < mortar * rows / cols)
        bricks = 0.15 * value_noise(rng, size, rows * 2, 2)
        return np.where(joint, 1.0, bricks)
    if name == "tiles":
        k = int(rng.integers(3, 9))
        gap = rng.uniform(0.05, 0.12)
        fx, fy = (x * k) % 1.0, (y * k) % 1.0
        return ((fx < gap) | (fy < gap)).astype(np.float64)
    raise ValueError(f"unknown pattern {name!r}; expected one of {PATTERNS}")


def colorize(t: np.ndarray, color_a, color_b, rng: np.random.Generator, grain: float = 0.06) -> np.ndarray:
    """uint8 RGB image blending sRGB ``color_a`` (t = 0) to ``color_b`` (t = 1), plus fine noise."""
    a = np.asarray(color_a, dtype=np.float64)
    b = np.asarray(color_b, dtype=np.float64)
    img = a + t[..., None] * (b - a)
    if grain > 0:
        # Per-pixel grain, shared by all channels, so flat areas do not look synthetic.
        img = img * (1.0 + grain * (rng.random(t.shape)[..., None] - 0.5))
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
