"""Image conditioning: DINOv3 ViT-L/16 patch tokens with the reference readout.

Mirrors ``DinoV3FeatureExtractor`` of ``trellis2/modules/image_feature_extractor.py``
: resize to ``S x S`` with LANCZOS, ImageNet normalisation, the
model's embeddings (CLS + 4 registers + patch tokens, row-major), its 2-D RoPE
for that image size, **all** transformer layers, then a parameter-free
LayerNorm (eps 1e-5) instead of the model's own final norm. Output
``[B, 1 + 4 + (S/16)^2, 1024]``: 1029 tokens at 512 px, 4101 at 1024 px.
The negative (unconditional) condition is all zeros.

Uses ``transformers.DINOv3ViTModel`` (5.x API: ``embeddings``,
``rope_embeddings(pixel_values) -> (cos, sin)``, ``model.layer[i](h, position_embeddings=...)``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import ModelUnavailableError
from .model_source import DINOV3_REPO, WEIGHT_REPOS

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_pixels(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    """PIL images -> normalised ``[B, 3, size, size]`` float32 (LANCZOS resize)."""
    arrays = []
    for img in images:
        img = img.convert("RGB").resize((size, size), Image.Resampling.LANCZOS)
        arrays.append(np.asarray(img, dtype=np.float32) / 255)  # [S, S, 3]
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # [B, 3, S, S]
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def dinov3_tokens(model: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """The readout of a ``DINOv3ViTModel``: ``[B, T, D]`` float32 tokens for normalised ``pixels``.

    Differentiable (a trainer that fine-tunes the encoder calls it under autograd); inference
    goes through :meth:`DinoV3Conditioner.features_from_pixels`.
    """
    weight = model.embeddings.patch_embeddings.weight
    pixels = pixels.to(device=weight.device, dtype=weight.dtype)
    h = model.embeddings(pixels)  # [B, 1 + R + P, D]
    rope = model.rope_embeddings(pixels)  # (cos, sin), each [P, head_dim]
    for layer in model.model.layer:
        h = layer(h, position_embeddings=rope)
        h = h[0] if isinstance(h, tuple) else h
    return F.layer_norm(h.float(), h.shape[-1:], eps=1e-5)  # [B, T, D]


class DinoV3Conditioner:
    """Wraps a ``DINOv3ViTModel`` and produces ``(cond, neg_cond)`` token tensors.

    Args:
        model: a loaded ``transformers.DINOv3ViTModel`` (eval mode is set here).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model.eval()

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = DINOV3_REPO, offline: bool = False,
                        dtype: torch.dtype = torch.float32) -> DinoV3Conditioner:
        """Load from a local folder or a Hugging Face repo id (gated: needs an accepted licence).

        Raises:
            ModelUnavailableError: not available locally while ``offline``, or access refused.
        """
        from transformers import DINOv3ViTModel

        try:
            model = DINOv3ViTModel.from_pretrained(str(name_or_path), local_files_only=offline,
                                                   dtype=dtype)
        except OSError as e:
            raise ModelUnavailableError(
                f"cannot load DINOv3 from {name_or_path!r} ({str(e).splitlines()[0]})",
                f"DINOv3 is gated: accept the licence at {WEIGHT_REPOS[DINOV3_REPO].licence_url} and log in "
                f"(`hf auth login`), {WEIGHT_REPOS[DINOV3_REPO].local_copy_hint()}") from e
        return cls(model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def features(self, images: Sequence[Image.Image], resolution: int) -> torch.Tensor:
        """``[B, T, D]`` float32 tokens for ``images`` seen at ``resolution`` px (512 or 1024)."""
        return self.features_from_pixels(to_pixels(images, resolution))

    @torch.inference_mode()
    def features_from_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, T, D]`` float32 tokens for normalised ``pixels [B, 3, S, S]`` (see :func:`to_pixels`)."""
        return dinov3_tokens(self.model, pixels)

    def condition(self, images: Sequence[Image.Image], resolution: int,
                  num_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cond, neg_cond)``, each ``[len(images) * num_samples, T, D]``.

        Several images (multi-view) are each conditioned separately; ``num_samples``
        repeats each image's tokens so a batch of noise samples can share them.
        """
        cond = self.features(images, resolution)
        if num_samples > 1:
            cond = cond.repeat_interleave(num_samples, dim=0)
        return cond, torch.zeros_like(cond)


def expected_tokens(resolution: int, patch: int = 16, registers: int = 4) -> int:
    """Sequence length of the readout: CLS + registers + (resolution / patch)^2."""
    return 1 + registers + (resolution // patch) ** 2
