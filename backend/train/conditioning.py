"""Image conditions for flow training: the training crop, a frozen image encoder, a feature cache.

Training crops condition renders as the reference trainer does (which differs from inference on
purpose): the box of pixels with alpha > 0, a square of side max(w, h) about its centre, the RGBA
crop resized with LANCZOS, then RGB premultiplied by alpha (black background). The image encoder
is frozen, so every (asset, view) maps to one fixed token tensor: :class:`ConditionCache` computes
them once per run and serves batches by index, instead of re-running the encoder every step.

:func:`write_image_encoder` makes the small DINOv3-architecture encoder the mini release ships: a
``transformers`` ``DINOv3ViTModel`` (patch 16, 4 registers) initialised from a fixed seed and kept
frozen at that initialisation (random features are still a fixed, information-preserving function
of the picture; the flows learn to read them).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from copy import deepcopy
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from backend.pipeline.conditioning import IMAGENET_MEAN, IMAGENET_STD, DinoV3Conditioner, to_pixels

log = logging.getLogger(__name__)


def training_crop(image: Image.Image, size: int) -> Image.Image:
    """Crop an RGBA render to its alpha > 0 box (square), resize to ``size``, premultiply -> RGB."""
    rgba = np.asarray(image.convert("RGBA"))
    ys, xs = np.nonzero(rgba[:, :, 3] > 0)
    if len(xs):
        x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        half = max(x1 - x0, y1 - y0) / 2
        box = (int(cx - half), int(cy - half), int(cx + half), int(cy + half))
        image = image.convert("RGBA").crop(box)
    resized = (
        np.asarray(image.convert("RGBA").resize((size, size), Image.Resampling.LANCZOS), np.float32) / 255
    )
    rgb = resized[:, :, :3] * resized[:, :, 3:4]
    return Image.fromarray((rgb * 255).astype(np.uint8))


def condition_image_path(data_dir: Path, item_id: str, view: int) -> Path:
    return data_dir / "renders_cond" / item_id / f"{view:03d}.png"


class ConditionCache:
    """Every (item, view) condition, prepared once and held on ``device``.

    Holds the frozen encoder's tokens in bf16 (``lookup`` -> ``[B, T, C]``), or, when the encoder
    trains with the flow (``pixels=True``), the training crops as uint8 RGB (``lookup`` -> normalised
    pixels ``[B, 3, S, S]`` for the encoder to read each step).

    Args:
        encoder: the image encoder (its tokens are cached unless ``pixels``).
        data_dir: the data folder (condition renders under ``renders_cond``).
        item_ids: dataset items in dataset order.
        views: views per item (``[num_items]``); missing views repeat view 0.
        image_size: the encoder's input side.
        device: where the cache lives.
        pixels: cache crops instead of tokens.
        batch: images per encoder call.
        readers: threads reading and cropping condition renders.
    """

    def __init__(
        self,
        encoder: DinoV3Conditioner,
        data_dir: Path,
        item_ids: Sequence[str],
        views: Sequence[int],
        image_size: int,
        device: torch.device,
        *,
        pixels: bool = False,
        batch: int = 64,
        readers: int = 8,
    ) -> None:
        self.max_views = max(1, max(views))
        self.pixels = pixels
        pairs = [(i, v) for i in range(len(item_ids)) for v in range(self.max_views)]

        def load(pair: tuple[int, int]) -> Image.Image:
            i, v = pair
            with Image.open(condition_image_path(data_dir, item_ids[i], min(v, views[i] - 1))) as img:
                return training_crop(img, image_size)

        def prepare(images: list[Image.Image]) -> torch.Tensor:
            if pixels:
                return torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in images])).permute(
                    0, 3, 1, 2)  # [n, 3, S, S] uint8
            return encoder.features_from_pixels(to_pixels(images, image_size)).to(torch.bfloat16)

        # PNG decoding and LANCZOS resizing release the GIL: threads read the next chunk while
        # the encoder runs on this one (on one thread, reading dominated: ~30 ms per 512 px view).
        chunks = [pairs[start : start + batch] for start in range(0, len(pairs), batch)]
        store = None
        with ThreadPoolExecutor(max_workers=readers) as pool:
            pending = pool.map(load, chunks[0]) if chunks else None
            start = 0
            for n, chunk in enumerate(chunks):
                images = list(pending)
                if n + 1 < len(chunks):
                    pending = pool.map(load, chunks[n + 1])
                entries = prepare(images)
                if store is None:
                    store = torch.empty(len(pairs), *entries.shape[1:], dtype=entries.dtype, device=device)
                store[start : start + len(chunk)] = entries.to(device)
                start += len(chunk)
        self.store = store.view(len(item_ids), self.max_views, *store.shape[1:])  # [I, V, ...]
        self._mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        log.info(
            "condition cache: %d items x %d views of %s %s (%.2f GiB)",
            len(item_ids),
            self.max_views,
            "crops" if pixels else "tokens",
            tuple(self.store.shape[2:]),
            self.store.numel() * self.store.element_size() / 2**30,
        )

    def lookup(self, item: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        """Float32 ``[B, T, C]`` tokens, or normalised ``[B, 3, S, S]`` pixels, of (item, view) pairs."""
        dev = self.store.device
        entries = self.store[item.to(dev), view.to(dev).clamp_max(self.max_views - 1)]
        if self.pixels:
            return (entries.float() / 255 - self._mean) / self._std
        return entries.float()


def load_image_encoder(name_or_path: str | Path, device: torch.device) -> DinoV3Conditioner:
    """The frozen DINOv3 encoder (local folder or repo id), on ``device``, without gradients."""
    conditioner = DinoV3Conditioner.from_pretrained(name_or_path)
    conditioner.model.to(device).requires_grad_(False)
    return conditioner


def save_image_encoder(model: torch.nn.Module, state: dict[str, torch.Tensor], out: str | Path,
                       dtype: torch.dtype = torch.float16) -> Path:
    """Write ``model`` with the weights ``state`` (e.g. its EMA) as a ``transformers`` folder at ``out``.

    Written to a sibling temporary folder and renamed, so ``out`` is never half-written.
    """
    out = Path(out)
    copy = deepcopy(model)  # not a fresh model: its random init would draw from the training RNG
    copy.load_state_dict(state)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    copy.to(dtype).save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


# The image encoder's size per config family (its width is the flows' ``cond_channels``):
# keyword arguments of :func:`write_image_encoder`.
IMAGE_ENCODER_SIZES: dict[str, dict[str, int]] = {
    "mini": {"hidden_size": 128, "layers": 4, "heads": 2},
    "tiny": {"hidden_size": 32, "layers": 2, "heads": 2},
}


def write_image_encoder(
    out: str | Path,
    *,
    hidden_size: int = 128,
    layers: int = 4,
    heads: int = 2,
    seed: int = 0,
    dtype: torch.dtype = torch.float16,
) -> Path:
    """Write a small ``DINOv3ViTModel`` (patch 16, 4 registers) initialised from ``seed`` to ``out``."""
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    out = Path(out)
    config = DINOv3ViTConfig(
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        patch_size=16,
        num_register_tokens=4,
        image_size=512,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DINOv3ViTModel(config).eval()
    model.to(dtype).save_pretrained(out)
    log.info(
        "wrote a %d-layer, %d-wide DINOv3-architecture encoder (seed %d) to %s",
        layers,
        hidden_size,
        seed,
        out,
    )
    return out
