"""Loss curves from ``log.jsonl`` drawn to a PNG with Pillow (no plotting library needed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from backend.fileio import write_atomic

_COLORS = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
]
_SKIP = {"step", "samples_per_s", "elapsed_s", "peak_gib", "clip", "skipped", "lr"}


def read_log(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows


def plot_losses(log_path: Path, out: Path, title: str = "", size: tuple[int, int] = (900, 300)) -> None:
    """One panel per logged quantity (log-scale y where all values are positive), steps on x."""
    rows = read_log(Path(log_path))
    keys = [k for k in rows[0] if k not in _SKIP] if rows else []
    w, h = size
    panel_h = h
    img = Image.new("RGB", (w, max(1, len(keys)) * panel_h + 24), "white")
    draw = ImageDraw.Draw(img)
    draw.text((8, 4), title, fill="black")
    for p, key in enumerate(keys):
        steps = np.array([r["step"] for r in rows if key in r], dtype=np.float64)
        vals = np.array([r[key] for r in rows if key in r], dtype=np.float64)
        ok = np.isfinite(vals)
        steps, vals = steps[ok], vals[ok]
        top = 24 + p * panel_h
        box = (60, top + 18, w - 12, top + panel_h - 24)
        draw.rectangle(box, outline=(180, 180, 180))
        if len(vals) == 0:
            continue
        logy = bool((vals > 0).all())
        y = np.log10(vals) if logy else vals
        lo, hi = float(y.min()), float(y.max())
        if hi - lo < 1e-12:
            lo, hi = lo - 0.5, hi + 0.5
        s0, s1 = float(steps.min()), float(max(steps.max(), steps.min() + 1))
        xs = box[0] + (steps - s0) / (s1 - s0) * (box[2] - box[0])
        ys = box[3] - (y - lo) / (hi - lo) * (box[3] - box[1])
        color = _COLORS[p % len(_COLORS)]
        if len(xs) > 1:
            draw.line(list(zip(xs.tolist(), ys.tolist())), fill=color, width=2)
        else:
            draw.ellipse((xs[0] - 2, ys[0] - 2, xs[0] + 2, ys[0] + 2), fill=color)
        fmt = (lambda v: f"{10**v:.3g}") if logy else (lambda v: f"{v:.3g}")
        draw.text((box[0] + 4, top + 2), f"{key} (last {vals[-1]:.4g}){' log' if logy else ''}", fill=color)
        draw.text((4, box[1]), fmt(hi), fill="black")
        draw.text((4, box[3] - 10), fmt(lo), fill="black")
        draw.text((box[0], box[3] + 4), f"{int(s0)}", fill="black")
        draw.text((box[2] - 40, box[3] + 4), f"{int(s1)}", fill="black")
        if not math.isfinite(hi):
            continue

    def save(fh):
        img.save(fh, format="PNG")

    write_atomic(out, save)
