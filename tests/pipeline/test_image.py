"""Image decoding, the reference crop/premultiply, and each error case."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from backend.pipeline.errors import InputError
from backend.pipeline.image import (
    MAX_SIDE,
    crop_and_premultiply,
    has_alpha,
    load_and_preprocess,
    load_image,
    preprocess,
)
from backend.pipeline.rembg import SolidBackgroundRemover, make_remover
from tests.fixtures import images


@pytest.mark.parametrize("kind", sorted(images.ALL_IMAGES))
def test_every_fixture_decodes_to_8bit_rgb_or_rgba(tmp_path, kind):
    suffix = ".jpg" if kind == "exif_rotated" else ".png"
    path = images.ALL_IMAGES[kind](tmp_path / f"{kind}{suffix}")
    img = load_image(path)
    assert img.mode == ("RGBA" if kind == "rgba_transparent" else "RGB")
    arr = np.asarray(img)
    assert arr.dtype == np.uint8
    if kind == "sixteen_bit":
        # 16-bit white (65535) must become 255, not saturate garbage or wrap.
        assert arr[0, 0].tolist() == [255, 255, 255]
        assert 40 < arr[48, 48, 0] < 255


def test_exif_orientation_is_applied(tmp_path):
    img = load_image(images.exif_rotated(tmp_path / "r.jpg"))
    arr = np.asarray(img).astype(int)
    assert img.size == (80, 120)  # portrait after rotation
    top, bottom = arr[:10].mean((0, 1)), arr[-10:].mean((0, 1))
    assert top[0] > 150 and top[2] < 100  # red on top
    assert bottom[2] > 150 and bottom[0] < 100


@pytest.mark.parametrize("fmt", ["webp", "tiff", "jpeg"])
def test_other_formats(tmp_path, fmt):
    rgba = load_image(images.rgba_transparent(tmp_path / "a.png"))
    path = tmp_path / f"a.{fmt}"
    (rgba.convert("RGB") if fmt == "jpeg" else rgba).save(path, lossless=True) if fmt == "webp" \
        else (rgba.convert("RGB") if fmt == "jpeg" else rgba).save(path)
    img = load_image(path)
    assert img.size == (96, 96)
    assert img.mode == ("RGB" if fmt == "jpeg" else "RGBA")


def test_16bit_tiff_and_greyscale_alpha(tmp_path):
    grey16 = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g.tif")
    img = load_image(tmp_path / "g.tif")
    arr = np.asarray(img)
    assert img.mode == "RGB" and arr[0, 0, 0] == 0 and arr[-1, -1, 0] == 255
    la = Image.fromarray(np.dstack([np.full((8, 8), 90, np.uint8), np.full((8, 8), 100, np.uint8)]), "LA")
    la.save(tmp_path / "la.png")
    assert load_image(tmp_path / "la.png").mode == "RGBA"


def test_reference_crop_and_premultiply_by_hand():
    arr = np.zeros((20, 30, 4), np.uint8)
    arr[5:11, 10:14] = (200, 100, 50, 255)  # opaque block: x 10..13, y 5..10
    arr[5, 10, 3] = 128  # one half-transparent pixel (below the 0.8 threshold)
    out = np.asarray(crop_and_premultiply(Image.fromarray(arr, "RGBA")))
    # Opaque x range 10..13 (col 10 still opaque at rows 6..10), y 5..10 -> side = max(3, 5) = 5, half 2;
    # centre (11.5, 7.5) -> box (9.5, 5.5, 13.5, 9.5) -> PIL rounds half to even -> (10, 6, 14, 10).
    assert out.shape == (4, 4, 3)
    assert (out == np.array([200, 100, 50], np.uint8)).all()
    half = np.asarray(crop_and_premultiply(Image.fromarray(arr[2:14], "RGBA")))
    assert half.shape == (4, 4, 3)


def test_premultiply_truncates_like_reference():
    arr = np.zeros((10, 10, 4), np.uint8)
    arr[2:8, 2:8] = (255, 101, 3, 255)
    arr[4, 4] = (255, 101, 3, 230)  # 0.9 alpha: kept inside the crop, premultiplied
    out = np.asarray(crop_and_premultiply(Image.fromarray(arr, "RGBA")))
    a = np.float32(230) / 255
    expect = (np.array([255, 101, 3], np.float32) / 255 * a * 255).astype(np.uint8)
    assert (out == expect).all(axis=-1).sum() == 1


def test_transparent_fixture_preprocesses_to_square_rgb(tmp_path):
    out = load_and_preprocess(images.rgba_transparent(tmp_path / "a.png"))
    assert out.mode == "RGB" and out.size[0] == out.size[1] and 50 <= out.size[0] <= 56
    arr = np.asarray(out).astype(int)
    assert arr[0, 0].sum() < 30  # corners of a disc crop are background -> black
    assert arr[out.size[1] // 2, out.size[0] // 2, 0] > 150


def test_large_image_is_shrunk_to_1024(tmp_path):
    arr = np.zeros((1500, 3000, 4), np.uint8)
    arr[500:1000, 1000:2000] = 255
    img = Image.fromarray(arr, "RGBA")
    out = preprocess(img)
    assert 334 <= out.size[0] <= 342  # the 1000 px box after scaling by 1024/3000 = 341 px


def test_no_alpha_without_remover_says_how_to_fix(tmp_path):
    path = images.rgb_on_white(tmp_path / "w.png")
    with pytest.raises(InputError, match="no transparency") as e:
        load_and_preprocess(path)
    assert "alpha" in str(e.value) and "--rembg-model" in str(e.value)


def test_rgba_all_opaque_counts_as_no_alpha(tmp_path):
    Image.new("RGBA", (16, 16), (10, 20, 30, 255)).save(tmp_path / "o.png")
    img = load_image(tmp_path / "o.png")
    assert not has_alpha(img)
    with pytest.raises(InputError, match="no transparency"):
        preprocess(img)


@pytest.mark.parametrize("kind", ["rgb_on_white", "greyscale", "sixteen_bit"])
def test_solid_background_remover(tmp_path, kind):
    path = images.ALL_IMAGES[kind](tmp_path / f"{kind}.png")
    out = load_and_preprocess(path, SolidBackgroundRemover())
    assert 50 <= out.size[0] <= 56 and out.size[0] == out.size[1]


def test_solid_background_remover_refuses_a_busy_picture(tmp_path):
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8), "RGB")
    noise.save(tmp_path / "busy.png")
    with pytest.raises(InputError, match="no plain background"):
        load_and_preprocess(tmp_path / "busy.png", SolidBackgroundRemover())


def test_empty_foreground(tmp_path):
    Image.new("RGBA", (32, 32), (255, 0, 0, 10)).save(tmp_path / "e.png")
    with pytest.raises(InputError, match="foreground is empty"):
        load_and_preprocess(tmp_path / "e.png")


def test_corrupt_and_missing_files(tmp_path):
    good = images.rgba_transparent(tmp_path / "a.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(InputError, match="corrupt"):
        load_image(tmp_path / "trunc.png")
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(InputError, match="not a readable image"):
        load_image(tmp_path / "junk.png")
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "nope.png")


def test_20000_pixel_image_is_refused_before_decoding(tmp_path):
    Image.new("L", (20000, 8)).save(tmp_path / "wide.png")
    with pytest.raises(InputError, match="20000x8") as e:
        load_image(tmp_path / "wide.png")
    assert str(MAX_SIDE) in str(e.value)


def test_birefnet_needs_local_model_and_consent(tmp_path):
    from backend.pipeline.errors import ModelUnavailableError

    with pytest.raises(ModelUnavailableError, match="config.json"):
        make_remover("birefnet", tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelUnavailableError, match="allow-remote-code"):
        make_remover("birefnet", tmp_path, allow_remote_code=False)
