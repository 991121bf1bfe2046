"""Image input limits: the stated limit is the one that refuses, and a speck of foreground is refused."""

from __future__ import annotations

import struct
import zlib

import pytest
from PIL import Image

from backend.pipeline.errors import InputError
from backend.pipeline.image import MAX_PIXELS, MAX_SIDE, load_image, preprocess, shrink


def _png_header_only(path, width: int, height: int) -> None:
    """A PNG whose header announces ``width`` x ``height`` (grey, 8 bit) and has no pixel data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b""))


def test_the_hint_states_the_pixel_limit_that_refuses(tmp_path):
    # 9500 x 9500 = 90.25 M pixels: within 16384 px per side, over Pillow's 89.5 M pixel limit
    _png_header_only(tmp_path / "big.png", 9500, 9500)
    with pytest.raises(InputError) as info:
        load_image(tmp_path / "big.png")
    assert f"{MAX_PIXELS / 1e6:.1f} megapixels" in str(info.value)
    assert str(MAX_SIDE) in str(info.value)
    assert 9500 * 9500 > MAX_PIXELS and 9500 < MAX_SIDE


@pytest.mark.parametrize("size", [(1, 1), (2, 1), (5, 5)])
def test_a_single_opaque_pixel_is_refused_not_cropped_to_nothing(size):
    img = Image.new("RGBA", size, (200, 100, 50, 0))
    img.putpixel((0, 0), (200, 100, 50, 254))
    with pytest.raises(InputError, match="foreground is only 1x1 pixels"):
        preprocess(img, source="speck.png")


def test_a_small_but_real_foreground_is_kept():
    img = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    for x in range(2, 6):
        for y in range(2, 6):
            img.putpixel((x, y), (255, 255, 255, 255))
    out = preprocess(img, source="small.png")
    assert out.size[0] == out.size[1] > 0


@pytest.mark.parametrize("size", [(1, 9000), (9000, 1)])
def test_a_long_thin_picture_shrinks_to_at_least_one_pixel(size):
    # found by scripts/fuzz_long.py: a GIF header announcing 1 x 8961 pixels raised from resize
    out = shrink(Image.new("RGBA", size))
    assert max(out.size) == 1024 and min(out.size) == 1
