"""Background removal for inputs without alpha.

Two removers, both opt-in:

- :class:`BiRefNetRemover`: the reference's BiRefNet wrapper around
  a *local* copy of ``briaai/RMBG-2.0`` (CC BY-NC 4.0, gated) or
  ``ZhengPeng7/BiRefNet`` (MIT). These checkpoints ship their model code, so
  loading them runs code from that folder: it happens only with an explicit
  ``allow_remote_code=True``. Nothing is downloaded here.
- :class:`SolidBackgroundRemover`: keys out a uniform background colour
  connected to the image border (licence-free; for product shots on white).

With neither, :func:`backend.pipeline.image.preprocess` stops with a message
saying how to provide an image with alpha or a local model.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import InputError, ModelUnavailableError

log = logging.getLogger(__name__)

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class SolidBackgroundRemover:
    """Alpha = 0 for border-connected pixels within ``tolerance`` of the border's median colour.

    A picture where that keys out less than ``min_background`` of the pixels has no plain
    background (a photo, a busy scene): it is refused with a hint rather than passed on whole.
    """

    def __init__(self, tolerance: float = 24.0, min_background: float = 0.02) -> None:
        self.tolerance = tolerance
        self.min_background = min_background

    def __call__(self, image: Image.Image) -> Image.Image:
        from scipy import ndimage

        rgb = np.asarray(image.convert("RGB"), dtype=np.float32)  # [H, W, 3]
        border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])  # [P, 3]
        bg = np.median(border, axis=0)
        dist = np.linalg.norm(rgb - bg, axis=-1)  # [H, W]
        near = dist <= self.tolerance
        labels, _ = ndimage.label(near)
        edge_labels = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        background = np.isin(labels, edge_labels[edge_labels > 0])
        if background.mean() < self.min_background:
            raise InputError(
                "the picture has no plain background for the keyer to remove",
                "use a picture with a transparent background, or background removal with "
                "RMBG-2.0 / BiRefNet")
        return Image.fromarray(np.where(background, 0, 255).astype(np.uint8), "L")


class BiRefNetRemover:
    """BiRefNet / RMBG-2.0 from a local folder (runs that folder's model code: needs consent).

    :meth:`load` args:
        model_dir: a local snapshot of ``briaai/RMBG-2.0`` or ``ZhengPeng7/BiRefNet``.
        allow_remote_code: explicit consent to execute the Python code shipped in
            ``model_dir`` (``trust_remote_code``). Without it, loading fails.
        device: torch device string.
    """

    def __init__(self, model, device: str = "cpu") -> None:
        """``model``: a loaded segmentation network (see :meth:`load`), on ``device``."""
        self.model = model
        self.device = device

    @classmethod
    def load(cls, model_dir: Path | str, allow_remote_code: bool = False,
             device: str = "cpu") -> BiRefNetRemover:
        """The remover of a local model folder, after the consent check (see the class docstring)."""
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise ModelUnavailableError(
                f"no background-removal model at {model_dir} (config.json missing)",
                "download briaai/RMBG-2.0 or ZhengPeng7/BiRefNet yourself (e.g. `hf download "
                "ZhengPeng7/BiRefNet --local-dir DIR`) and pass that folder")
        if not allow_remote_code:
            raise ModelUnavailableError(
                f"the background-removal model in {model_dir} runs Python code shipped with it",
                "pass --allow-remote-code to consent, or supply an image with alpha")
        from transformers import AutoModelForImageSegmentation

        model = AutoModelForImageSegmentation.from_pretrained(
            str(model_dir), trust_remote_code=True, local_files_only=True)
        return cls(model.eval().to(device), device)

    def __call__(self, image: Image.Image) -> Image.Image:
        import torch

        rgb = image.convert("RGB")
        x = np.asarray(rgb.resize((1024, 1024), Image.Resampling.BILINEAR), dtype=np.float32) / 255
        x = (x - np.asarray(_MEAN, np.float32)) / np.asarray(_STD, np.float32)  # [1024, 1024, 3]
        t = torch.from_numpy(x).permute(2, 0, 1)[None].to(self.device)  # [1, 3, 1024, 1024]
        dtype = next(self.model.parameters()).dtype
        with torch.inference_mode():
            preds = self.model(t.to(dtype))[-1].sigmoid().float().cpu()  # last map, [1, 1, H, W]
        matte = Image.fromarray((preds[0, 0].numpy() * 255).astype(np.uint8), "L")
        return matte.resize(rgb.size)


def make_remover(kind: str | None, model_dir: Path | str | None = None, allow_remote_code: bool = False,
                 device: str = "cpu"):
    """Build a remover from CLI-style settings.

    Args:
        kind: ``None``/``"none"`` (inputs must carry alpha), ``"solid"``, or ``"birefnet"``.
        model_dir: required for ``"birefnet"``.
    """
    if kind in (None, "none"):
        return None
    if kind == "solid":
        return SolidBackgroundRemover()
    if kind == "birefnet":
        if model_dir is None:
            raise ModelUnavailableError("background removal with BiRefNet needs a local model folder",
                                        "pass --rembg-model DIR")
        return BiRefNetRemover.load(model_dir, allow_remote_code=allow_remote_code, device=device)
    raise InputError(f"unknown background remover {kind!r}", "use none, solid or birefnet")
