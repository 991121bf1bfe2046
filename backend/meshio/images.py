"""Texture image encoding/decoding (PNG, JPEG, WebP) through Pillow."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from backend.geometry import MeshError

MIME_TYPES = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}


def decode_image(data: bytes, what: str = "image") -> np.ndarray:
    """Encoded bytes -> uint8 [H, W, 3|4] (grey and palette images are expanded)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            alpha = "A" in img.getbands() or (img.mode == "P" and "transparency" in img.info)
            mode = "RGBA" if alpha else "RGB"
            return np.asarray(img.convert(mode), dtype=np.uint8).copy()
    except (OSError, ValueError) as exc:
        raise MeshError(f"cannot decode {what}: {exc}") from exc


def encode_image(image: np.ndarray, fmt: str) -> bytes:
    """uint8 [H, W, 3|4] -> PNG or WebP (lossless) bytes."""
    if fmt not in ("png", "webp"):
        raise ValueError(f"texture format must be 'png' or 'webp', got {fmt!r}")
    buf = io.BytesIO()
    img = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    if fmt == "png":
        img.save(buf, format="PNG", compress_level=6)
    else:
        img.save(buf, format="WEBP", lossless=True, exact=True, quality=90, method=4)
    return buf.getvalue()
