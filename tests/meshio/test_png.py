"""Our PNG encoder (backend/meshio/png.py): Pillow decodes its files to the exact pixels, for any
shape, channel count, level and thread count; the bytes do not depend on the threads."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from backend.geometry import MeshError
from backend.meshio import png
from backend.meshio.images import decode_image, encode_image
from backend.meshio.png import encode_png, filter_up


def _pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        out = np.asarray(img)
    return out if out.ndim == 3 else out[:, :, None]


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of each chunk, checking every CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out, pos = [], 8
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert crc == zlib.crc32(kind + body), kind
        out.append((kind, body))
        pos += 12 + n
    return out


def _image(rng, h, w, c, smooth=False):
    if smooth:  # gradients: long runs for deflate, small Up residues
        y, x = np.mgrid[0:h, 0:w]
        planes = [(x * (k + 1) + y * (3 - k)) // 3 for k in range(c)]
        return (np.stack(planes, -1) % 256).astype(np.uint8)
    return rng.integers(0, 256, (h, w, c), dtype=np.uint8)


@pytest.mark.parametrize("shape", [(1, 1), (1, 37), (29, 1), (37, 53), (64, 64), (2, 3)])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_small_images_decode_to_the_same_pixels(shape, channels):
    rng = np.random.default_rng(channels * 1000 + shape[0] * 31 + shape[1])
    img = _image(rng, *shape, channels)
    for threads in (1, 3):
        assert np.array_equal(_pixels(encode_png(img, 6, threads)), img)


def test_grey_2d_arrays_are_accepted():
    img = np.arange(35, dtype=np.uint8).reshape(5, 7)
    assert np.array_equal(_pixels(encode_png(img))[:, :, 0], img)


@pytest.mark.parametrize("level", [0, 1, 6, 9])
def test_every_level_decodes(level):
    img = _image(np.random.default_rng(level), 300, 211, 3, smooth=True)
    assert np.array_equal(_pixels(encode_png(img, level, 2)), img)


@pytest.mark.parametrize("channels, smooth", [(3, False), (4, True), (4, False)])
def test_many_bands_decode_the_same_for_any_thread_count(channels, smooth):
    """Images of several deflate bands (each primed with the window before it): same pixels,
    same bytes with 1, 2 or 5 threads; the IDAT data is one zlib stream of the Up-filtered rows."""
    img = _image(np.random.default_rng(7), 1501, 517, channels, smooth=smooth)
    assert img.nbytes > 2 * png.BAND_BYTES  # several bands
    files = {t: encode_png(img, 6, t) for t in (1, 2, 5)}
    assert files[1] == files[2] == files[5]
    assert np.array_equal(_pixels(files[2]), img)
    idat = b"".join(body for kind, body in _chunks(files[2]) if kind == b"IDAT")
    assert zlib.decompress(idat) == filter_up(img).tobytes()


def test_rows_longer_than_a_band():
    img = _image(np.random.default_rng(3), 3, png.BAND_BYTES // 3 + 5, 4)
    assert np.array_equal(_pixels(encode_png(img, 1, 3)), img)


def test_large_idat_is_split_into_chunks_with_valid_crcs():
    img = _image(np.random.default_rng(5), 800, 700, 4)  # ~2.2 MB of noise: 3 IDAT chunks
    chunks = _chunks(encode_png(img, 1, 2))
    kinds = [k for k, _ in chunks]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and kinds.count(b"IDAT") >= 3
    assert struct.unpack(">IIBBBBB", chunks[0][1]) == (700, 800, 8, 6, 0, 0, 0)


def test_filter_up_is_the_png_up_filter():
    img = np.array([[[10, 250]], [[5, 4]], [[255, 0]]], np.uint8)  # [3, 1, 2]
    assert filter_up(img).tolist() == [[2, 10, 250], [2, 251, 10], [2, 250, 252]]


def test_non_contiguous_views_encode_their_own_pixels():
    big = _image(np.random.default_rng(9), 40, 60, 4)
    view = big[::2, 5:50, [2, 1, 0]]
    assert np.array_equal(_pixels(encode_png(view)), view)


@pytest.mark.parametrize("image, level, threads, match", [
    (np.zeros((4, 4, 3), np.float32), 6, 1, "must be uint8"),
    (np.zeros((4, 4, 5), np.uint8), 6, 1, "shape"),
    (np.zeros((4,), np.uint8), 6, 1, "shape"),
    (np.zeros((0, 4, 3), np.uint8), 6, 1, "sides"),
    (np.zeros((4, 0), np.uint8), 6, 1, "sides"),
    (np.zeros((4, 4, 3), np.uint8), 10, 1, "level"),
    (np.zeros((4, 4, 3), np.uint8), 6, 0, "threads"),
    ([[1, 2]], 6, 1, "numpy array"),
])
def test_invalid_input_is_refused_clearly(image, level, threads, match):
    with pytest.raises(ValueError, match=match):
        encode_png(image, level, threads)


def test_a_corrupted_file_does_not_decode():
    img = _image(np.random.default_rng(11), 50, 40, 3)
    data = bytearray(encode_png(img))
    data[60] ^= 0xFF  # inside the IDAT data: its CRC no longer matches
    with pytest.raises(MeshError, match="cannot decode texture"):
        decode_image(bytes(data), "texture")


@pytest.mark.parametrize("channels", [3, 4])
def test_encode_image_png_matches_pillows_pixels(channels):
    """The textures the export writes: the same pixels as Pillow's encoder gave before."""
    img = _image(np.random.default_rng(channels), 257, 131, channels, smooth=True)
    ours = encode_image(img, "png", threads=2)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=6)
    assert np.array_equal(decode_image(ours), decode_image(buf.getvalue()))
    assert np.array_equal(decode_image(ours), img)
