"""PNG encoder with numpy row filtering and band-parallel deflate.

Pillow encodes a PNG in one thread: at 2048^2 a texture took ~0.5 s at compression level 6,
most of the export's write step. Here every row gets the PNG "Up" filter (one vectorised
subtraction; within 1-3 % of Pillow's per-row adaptive choice in size on the export's
textures), and the filtered data is deflated in bands of rows that threads compress at once
(zlib releases the GIL), as pigz does:

- each band is a raw deflate stream primed with the 32 KiB of filtered data before it (the
  window a single stream would have had), ended with a sync flush (byte-aligned, not final),
  the last band with a final block;
- their concatenation behind one zlib header, followed by the Adler-32 of all the filtered
  data, is one valid zlib stream: the IDAT data.

The band layout depends only on the image, never on the thread count, so the bytes written
are the same for any ``threads``.
"""

from __future__ import annotations

import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

BAND_BYTES = 1 << 20  # filtered bytes per deflate band (at least one row)
WINDOW_BYTES = 1 << 15  # deflate's window: each band is primed with this much history
IDAT_BYTES = 1 << 20  # IDAT chunks are split at this size (as encoders commonly do)
_COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type (grey, grey+alpha, RGB, RGBA)
_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_FILTER_UP = 2


def _chunk(kind: bytes, data: bytes | memoryview) -> bytes:
    """One PNG chunk: length, type, data, CRC-32 of type and data."""
    crc = zlib.crc32(data, zlib.crc32(kind))
    return struct.pack(">I", len(data)) + kind + bytes(data) + struct.pack(">I", crc)


def _zlib_header(level: int) -> bytes:
    """The 2-byte zlib header (deflate, 32 KiB window) with FLEVEL matching ``level``."""
    cmf = 0x78
    flevel = 0 if level < 2 else 1 if level < 6 else 2 if level == 6 else 3
    flg = flevel << 6
    flg |= 31 - (cmf * 256 + flg) % 31  # FCHECK: the header read as a 16-bit number is a multiple of 31
    return bytes((cmf, flg))


def filter_up(image: np.ndarray) -> np.ndarray:
    """``uint8 [H, W, C]`` -> ``[H, 1 + W * C]`` scanlines with the Up filter (type byte 2 first).

    Up stores each byte minus the byte above it, modulo 256 (row 0 keeps its bytes: the row
    above the image counts as zeros).
    """
    h = image.shape[0]
    rows = image.reshape(h, -1)
    out = np.empty((h, rows.shape[1] + 1), np.uint8)
    out[:, 0] = _FILTER_UP
    out[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=out[1:, 1:])  # uint8 arithmetic wraps modulo 256
    return out


def _deflate_band(data: memoryview, start: int, stop: int, level: int, last: bool) -> bytes:
    """Raw deflate of ``data[start:stop]``, primed with the window before ``start``."""
    history = data[max(0, start - WINDOW_BYTES):start]
    comp = (zlib.compressobj(level, zlib.DEFLATED, -15, zdict=history) if len(history)
            else zlib.compressobj(level, zlib.DEFLATED, -15))
    out = comp.compress(data[start:stop])
    return out + comp.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def _check(image: np.ndarray, level: int, threads: int) -> np.ndarray:
    """``image`` as a C-contiguous ``uint8 [H, W, C]`` array; ValueError for what PNG can't hold."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"PNG image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"PNG image must be uint8, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in _COLOR_TYPES:
        raise ValueError(f"PNG image must be [H, W] or [H, W, 1|2|3|4], got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1 or max(image.shape[:2]) >= 2**31:
        raise ValueError(f"PNG image sides must lie in [1, 2^31), got {image.shape[:2]}")
    if not 0 <= level <= 9:
        raise ValueError(f"PNG compression level must lie in [0, 9], got {level}")
    if threads < 1:
        raise ValueError(f"PNG encoder threads must be at least 1, got {threads}")
    return np.ascontiguousarray(image)


def encode_png(image: np.ndarray, level: int = 6, threads: int = 1) -> bytes:
    """PNG file bytes of ``image`` (uint8 ``[H, W]`` or ``[H, W, C]``, C = 1 grey, 2 grey + alpha,
    3 RGB, 4 RGBA; 8 bits per channel, not interlaced).

    ``level`` is zlib's compression level (0-9). ``threads`` threads deflate the bands at once
    (1: all in the calling thread); the bytes do not depend on it.

    Raises:
        ValueError: not a uint8 image of 1-4 channels with sides >= 1, or a bad level/thread count.
    """
    image = _check(image, level, threads)
    h, w, c = image.shape
    data = memoryview(filter_up(image).reshape(-1))
    row = w * c + 1
    band = max(1, BAND_BYTES // row) * row
    bounds = [(s, min(s + band, len(data))) for s in range(0, len(data), band)]
    args = [(data, s, e, level, e == len(data)) for s, e in bounds]
    if threads == 1 or len(bounds) == 1:
        adler = zlib.adler32(data)
        parts = [_deflate_band(*a) for a in args]
    else:
        with ThreadPoolExecutor(min(threads, len(bounds) + 1)) as pool:
            adler_job = pool.submit(zlib.adler32, data)  # beside the bands: it needs the whole data
            jobs = [pool.submit(_deflate_band, *a) for a in args]
            parts = [j.result() for j in jobs]
            adler = adler_job.result()
    idat = b"".join([_zlib_header(level), *parts, struct.pack(">I", adler)])
    ihdr = struct.pack(">IIBBBBB", w, h, 8, _COLOR_TYPES[c], 0, 0, 0)
    chunks = [_chunk(b"IHDR", ihdr)]
    view = memoryview(idat)
    chunks += [_chunk(b"IDAT", view[s:s + IDAT_BYTES]) for s in range(0, len(idat), IDAT_BYTES)]
    chunks.append(_chunk(b"IEND", b""))
    return b"".join([_SIGNATURE, *chunks])
