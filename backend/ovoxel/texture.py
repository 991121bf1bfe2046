"""Texture sampling for voxelization: box-filtered mip chain, bilinear + linear-between-levels, REPEAT.

UVs follow glTF (texel row = v * height, row 0 at the top). Texel centres sit at +0.5.
"""

from __future__ import annotations

import numpy as np


class MipTexture:
    """A uint8 ``[H, W, C]`` image as a float32 mip chain in [0, 1]."""

    def __init__(self, image: np.ndarray) -> None:
        level = image.astype(np.float32) / 255.0
        self.levels = [level]
        while max(level.shape[:2]) > 1:
            h, w = level.shape[:2]
            if h > 1 and h % 2:
                level = np.concatenate([level, level[-1:]], axis=0)
            if w > 1 and w % 2:
                level = np.concatenate([level, level[:, -1:]], axis=1)
            h2, w2 = max(1, level.shape[0] // 2), max(1, level.shape[1] // 2)
            level = level[: h2 * 2 if h > 1 else 1, : w2 * 2 if w > 1 else 1]
            sy, sx = (2 if h > 1 else 1), (2 if w > 1 else 1)
            level = level.reshape(h2, sy, w2, sx, -1).mean(axis=(1, 3))
            self.levels.append(level)

    @property
    def size(self) -> int:
        return max(self.levels[0].shape[:2])

    def _bilinear(self, k: int, uv: np.ndarray) -> np.ndarray:
        img = self.levels[k]
        h, w = img.shape[:2]
        x = uv[:, 0] * w - 0.5
        y = uv[:, 1] * h - 0.5
        x0, y0 = np.floor(x), np.floor(y)
        fx, fy = (x - x0)[:, None], (y - y0)[:, None]
        x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
        xs0, xs1 = x0 % w, (x0 + 1) % w
        ys0, ys1 = y0 % h, (y0 + 1) % h
        top = img[ys0, xs0] * (1 - fx) + img[ys0, xs1] * fx
        bot = img[ys1, xs0] * (1 - fx) + img[ys1, xs1] * fx
        return top * (1 - fy) + bot * fy

    def sample(self, uv: np.ndarray, level: np.ndarray) -> np.ndarray:
        """[M, C] colours at [M, 2] UVs, at fractional mip ``level`` [M] (clamped to the chain)."""
        level = np.clip(np.nan_to_num(level, nan=0.0), 0, len(self.levels) - 1)
        lo = np.floor(level).astype(np.int64)
        frac = (level - lo)[:, None].astype(np.float32)
        out = np.empty((uv.shape[0], self.levels[0].shape[2]), dtype=np.float32)
        for k in np.unique(lo):
            m = lo == k
            a = self._bilinear(int(k), uv[m])
            if k + 1 < len(self.levels):
                a = a * (1 - frac[m]) + self._bilinear(int(k) + 1, uv[m]) * frac[m]
            out[m] = a
        return out
