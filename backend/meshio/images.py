"""Texture image encoding/decoding: PNG through our encoder (:mod:`.png`), WebP and decoding
through Pillow."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from backend.geometry import MeshError

from .png import encode_png

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


# zlib level of texture PNGs: level 1 made the export's textures 1-7 % larger and smooth
# pictures ~37 % larger, for ~20 % less deflate time.
PNG_LEVEL = 6


def encode_image(image: np.ndarray, fmt: str, threads: int = 1) -> bytes:
    """uint8 [H, W, 3|4] -> PNG or WebP (lossless) bytes.

    ``threads`` threads deflate a PNG's row bands at once (the bytes do not depend on it);
    WebP is encoded by Pillow in the calling thread.
    """
    if fmt not in ("png", "webp"):
        raise ValueError(f"texture format must be 'png' or 'webp', got {fmt!r}")
    if fmt == "png":
        return encode_png(np.ascontiguousarray(image, dtype=np.uint8), PNG_LEVEL, threads)
    buf = io.BytesIO()
    img = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    img.save(buf, format="WEBP", lossless=True, exact=True, quality=90, method=4)
    return buf.getvalue()
