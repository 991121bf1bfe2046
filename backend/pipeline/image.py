"""Image input: decode any common file into RGBA and crop it as the reference does.

Mirrors ``preprocess_image`` of ``trellis2/pipelines/trellis2_image_to_3d.py``
: an image "has alpha" when it carries an alpha channel that is not
all 255; it is shrunk so the longer side is at most 1024 px (LANCZOS); without
alpha a background remover supplies one; the crop box is the square around the
pixels with alpha > 0.8 * 255 (side = the larger extent, no margin, PIL crop
semantics: rounded box, zero padding outside); RGB is premultiplied by alpha
(black background) and truncated back to uint8.

Decoding accepts PNG, JPEG, WebP and TIFF (anything Pillow reads), in RGBA,
RGB, palette, greyscale (with or without alpha) and 16-bit or float modes, and
applies the EXIF orientation. Failures raise :class:`InputError` with the file
name and the reason.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError

log = logging.getLogger(__name__)

MAX_SIDE = 16384  # longest accepted side (pixels), checked before decoding
# Pillow's own decompression-bomb limit (89.5 M pixels, about 360 MB as RGBA): its check runs
# while the header is read, before ours, so the limit we state must be the one it enforces.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
PREPROCESS_MAX_SIDE = 1024  # the reference shrinks larger inputs to this
ALPHA_CROP_THRESHOLD = 0.8 * 255


class BackgroundRemover(Protocol):
    """Something that predicts an alpha matte for an RGB image."""

    def __call__(self, image: Image.Image) -> Image.Image:
        """``image`` is RGB; return an 'L' matte of the same size (255 = foreground)."""
        ...


def load_image(path: Path | str) -> Image.Image:
    """Decode ``path`` into an RGB or RGBA 8-bit PIL image with EXIF orientation applied.

    RGBA is returned only when the file has an alpha channel (or palette transparency).

    Raises:
        InputError: missing file, unreadable or corrupt data, or an image larger
            than ``MAX_SIDE`` x ``MAX_SIDE`` / ``MAX_PIXELS``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                _check_size(path, img.size)
                img.load()
                img = ImageOps.exif_transpose(img)
                return _to_8bit(img)
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InputError(f"{path.name}: image is too large to decode safely ({e})", _SIZE_HINT) from e
    except UnidentifiedImageError as e:
        raise InputError(f"{path.name}: not a readable image (unknown format or corrupt header)",
                         "use PNG, JPEG, WebP or TIFF") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{path.name}: the image data is corrupt or truncated ({e})",
                         "re-export the image") from e


_SIZE_HINT = (f"downscale it to at most {MAX_SIDE} px per side and {MAX_PIXELS / 1e6:.1f} megapixels "
              "(the model only sees 1024 px anyway)")


def _check_size(path: Path, size: tuple[int, int]) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise InputError(f"{path.name}: image has no pixels ({w}x{h})")
    if max(w, h) > MAX_SIDE or w * h > MAX_PIXELS:
        raise InputError(f"{path.name}: image is {w}x{h} pixels, too large", _SIZE_HINT)


def _to_8bit(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 'RGB' or 'RGBA' (uint8)."""
    mode = img.mode
    if mode in ("RGB", "RGBA"):
        return img.copy()
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if mode == "F":
            top = 1.0 if arr.max(initial=0.0) <= 1.0 else float(arr.max())
        elif mode == "I":
            top = 65535.0 if arr.max(initial=0) > 255 else 255.0
        else:
            top = 65535.0
        grey = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "P":
        has_t = "transparency" in img.info or img.palette is not None and img.palette.mode == "RGBA"
        return img.convert("RGBA" if has_t else "RGB")
    if mode in ("LA", "La", "PA", "RGBa"):
        return img.convert("RGBA")
    if mode == "CMYK":
        return img.convert("RGB")
    return img.convert("RGB")  # 'L', '1', 'YCbCr', 'LAB', 'HSV'


def has_alpha(img: Image.Image) -> bool:
    """True when ``img`` is RGBA and not every alpha value is 255 (the reference's rule)."""
    if img.mode != "RGBA":
        return False
    return bool((np.asarray(img)[..., 3] < 255).any())


def shrink(img: Image.Image, max_side: int = PREPROCESS_MAX_SIDE) -> Image.Image:
    """Resize so the longer side is ``max_side`` (LANCZOS, int-truncated sizes); smaller images pass."""
    w, h = img.size
    scale = min(1.0, max_side / max(w, h))
    if scale < 1.0:
        # at least one pixel: a 1 x 9000 strip would otherwise shrink to zero width
        img = img.resize((max(1, int(w * scale)), max(1, int(h * scale))), Image.Resampling.LANCZOS)
    return img


def crop_and_premultiply(rgba: Image.Image, source: str = "image") -> Image.Image:
    """Square crop around the opaque pixels, then premultiply onto black -> RGB uint8.

    Raises:
        InputError: no pixel has alpha above 0.8 (nothing to reconstruct).
    """
    arr = np.asarray(rgba)  # [H, W, 4] uint8
    ys, xs = np.nonzero(arr[..., 3] > ALPHA_CROP_THRESHOLD)
    if ys.size == 0:
        raise InputError(f"{source}: the foreground is empty (no pixel is more than 80% opaque)",
                         "use an image whose object is opaque, or check the background removal")
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = max(x1 - x0, y1 - y0)
    half = side // 2
    if half == 0:  # the crop would be empty (a single opaque pixel or a 2-pixel speck)
        raise InputError(f"{source}: the foreground is only {x1 - x0 + 1}x{y1 - y0 + 1} pixels",
                         "use an image whose object covers more than a few pixels")
    cropped = rgba.crop((cx - half, cy - half, cx + half, cy + half))  # PIL rounds, pads with 0
    f = np.asarray(cropped).astype(np.float32) / 255  # [S, S, 4]
    rgb = f[..., :3] * f[..., 3:4]
    return Image.fromarray((rgb * 255).astype(np.uint8), "RGB")


def preprocess(img: Image.Image, remover: BackgroundRemover | None = None,
               source: str = "image") -> Image.Image:
    """Reference preprocessing of a decoded image -> the square RGB image the model sees.

    Args:
        img: RGB or RGBA image (from :func:`load_image`).
        remover: used only when ``img`` has no meaningful alpha.
        source: a name for messages (usually the file name).

    Raises:
        InputError: no alpha and no background remover, or an empty foreground.
    """
    alpha = has_alpha(img)
    img = shrink(img)
    if not alpha:
        if remover is None:
            raise InputError(
                f"{source} has no transparency and no background remover is configured",
                "save the image with a transparent background (PNG/WebP with alpha), or turn on "
                "background removal: in Blender, the add-on preference Background Removal (Plain "
                "Background, or RMBG-2.0); on the command line, --rembg solid for objects on a plain "
                "uniform background, or --rembg birefnet --rembg-model DIR --allow-remote-code for a "
                "local BiRefNet/RMBG-2.0 folder")
        rgb = img.convert("RGB")
        matte = remover(rgb)
        if matte.size != rgb.size:
            matte = matte.resize(rgb.size)
        img = rgb.copy()
        img.putalpha(matte.convert("L"))
    return crop_and_premultiply(img.convert("RGBA"), source)


def load_and_preprocess(path: Path | str, remover: BackgroundRemover | None = None) -> Image.Image:
    """:func:`load_image` then :func:`preprocess`."""
    path = Path(path)
    out = preprocess(load_image(path), remover, source=path.name)
    log.debug("preprocessed %s -> %dx%d", path.name, *out.size)
    return out
