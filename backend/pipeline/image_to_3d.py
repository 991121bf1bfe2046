"""Image -> decoded assets for the four pipeline types.

| type | SS grid | shape | texture (cond) | decode res |
|---|---|---|---|---|
| 512 | 32 | shape_512 @512 | tex_512 @512 | 512 |
| 1024 | 64 | shape_1024 @1024 | tex_1024 @1024 | 1024 |
| 1024_cascade | 32 | shape_512 @512 -> upsample -> shape_1024 @1024 on 64^3 | tex_1024 @1024 | 1024 |
| 1536_cascade | 32 | as above on 96^3 (shrunk by 128 until < max tokens) | tex_1024 @1024 | 1536..1024 |

The sparse structure always uses the 512-px condition.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from PIL import Image

from .api import DEFAULT_MULTIVIEW_MODE, GenerateRequest, SamplerOverrides
from .errors import PipelineError
from .progress import Tracker
from .runtime import ModelStore, Runtime
from .sampler import DEFAULT_SHAPE, DEFAULT_SS, DEFAULT_TEX, Condition, MultiViewCond, SamplerParams
from .stages import DecodedAsset, LatentNorm, decode, sample_shape, sample_texture
from .structure import StructureSampler

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class StageParams:
    sparse_structure: SamplerParams
    shape: SamplerParams
    texture: SamplerParams


def sampler_params(cfg, fallback: SamplerParams, overrides: SamplerOverrides,
                   runtime: Runtime) -> SamplerParams:
    """``pipeline.json``'s sampler entry (a ``backend.models.SamplerConfig``) with per-call overrides,
    run as ``runtime`` says (``batched_cfg``; low-VRAM mode keeps no condition K/V between steps)."""
    base = fallback if cfg is None else SamplerParams.from_config(cfg)
    return replace(base.with_overrides(overrides), batched_cfg=runtime.batched_cfg,
                   cache_cond_kv=not runtime.low_vram)


def stage_params(store: ModelStore, request: GenerateRequest) -> StageParams:
    c, rt = store.config, store.runtime
    return StageParams(sampler_params(c.sparse_structure_sampler, DEFAULT_SS, request.sparse_structure, rt),
                       sampler_params(c.shape_slat_sampler, DEFAULT_SHAPE, request.shape, rt),
                       sampler_params(c.tex_slat_sampler, DEFAULT_TEX, request.texture, rt))


def norms(config) -> tuple[LatentNorm, LatentNorm]:
    s, t = config.shape_slat_normalization, config.tex_slat_normalization
    return LatentNorm.from_lists(s.mean, s.std), LatentNorm.from_lists(t.mean, t.std)


def view_conditions(dino, views: Sequence[Image.Image], resolution: int, num_samples: int,
                    mode: str) -> tuple[Condition, torch.Tensor]:
    """``(cond, neg_cond)`` for pictures of one object: a tensor for one view, else a
    :class:`MultiViewCond` combined by ``mode``; each view's tokens are ``[num_samples, T, D]``."""
    cond, neg = dino.condition(list(views), resolution, num_samples)  # [V * n, T, D], view-major
    if len(views) == 1:
        return cond, neg
    return MultiViewCond(tuple(cond.split(num_samples)), mode), neg[:num_samples]


def image_to_assets(store: ModelStore, image: Image.Image | Sequence[Image.Image], request: GenerateRequest,
                    gen: torch.Generator, tracker: Tracker,
                    structure: StructureSampler) -> list[DecodedAsset]:
    """Run stages 1-3 and decode for one object; ``request.num_samples`` assets.

    ``image`` is one preprocessed picture, or several pictures of the same object (multi-view,
    combined as ``request.multiview`` says). ``structure`` finds the occupied voxels (stage 1 and
    the cascade's high-resolution grid).
    """
    kind = request.pipeline_type
    if kind not in ("512", "1024", "1024_cascade", "1536_cascade"):
        raise PipelineError(f"unknown pipeline type {kind!r}", "use 512, 1024, 1024_cascade or 1536_cascade")
    params = stage_params(store, request)
    shape_norm, tex_norm = norms(store.config)
    n = request.num_samples
    hr = kind != "512"
    views = [image] if isinstance(image, Image.Image) else list(image)
    mode = request.multiview or DEFAULT_MULTIVIEW_MODE

    tracker.begin("preprocess", "encoding the picture" if len(views) == 1 else f"encoding {len(views)} views")
    dino = store.conditioner()
    with store.on_device(dino.model):
        cond512, neg512 = view_conditions(dino, views, 512, n, mode)
        cond1024, neg1024 = view_conditions(dino, views, 1024, n, mode) if hr else (None, None)

    tracker.begin("sparse_structure")
    grid = 64 if kind == "1024" else 32
    coords = structure.occupancy(store, cond512, neg512, params.sparse_structure, gen, grid, tracker)
    counts = torch.bincount(coords[:, 0].long(), minlength=n) if len(coords) else torch.zeros(n)
    if (counts == 0).any():
        raise PipelineError("the sparse structure is empty (the model found no object in the image)",
                            "try another --seed or an image with a clearly separated object")
    log.info("sparse structure: %d voxels on %d^3", len(coords), grid)

    tracker.begin("shape")
    if kind in ("512", "1024"):
        flow = store.get(f"shape_slat_flow_model_{kind}")
        cond, neg = (cond512, neg512) if kind == "512" else (cond1024, neg1024)
        with store.on_device(flow):
            shape = sample_shape(flow, coords, cond, neg, params.shape, gen, shape_norm,
                                 on_step=tracker.sub("shape"), cancel=tracker.cancel)
        res = int(kind)
    else:
        lr_flow = store.get("shape_slat_flow_model_512")
        with store.on_device(lr_flow):
            lr = sample_shape(lr_flow, coords, cond512, neg512, params.shape, gen, shape_norm,
                              on_step=tracker.sub("shape LR"), cancel=tracker.cancel)
        target = 1536 if kind == "1536_cascade" else 1024
        hr_coords, res = structure.cascade(store, lr, target, request.max_num_tokens)
        log.info("cascade: %d HR tokens at resolution %d", len(hr_coords), res)
        hr_flow = store.get("shape_slat_flow_model_1024")
        with store.on_device(hr_flow):
            shape = sample_shape(hr_flow, hr_coords, cond1024, neg1024, params.shape, gen, shape_norm,
                                 on_step=tracker.sub("shape HR"), cancel=tracker.cancel)

    tracker.begin("texture")
    tex_flow = store.get("tex_slat_flow_model_512" if kind == "512" else "tex_slat_flow_model_1024")
    cond, neg = (cond512, neg512) if kind == "512" else (cond1024, neg1024)
    with store.on_device(tex_flow):
        tex = sample_texture(tex_flow, shape, cond, neg, params.texture, gen, shape_norm, tex_norm,
                             on_step=tracker.sub("texture"), cancel=tracker.cancel)

    tracker.begin("decode")
    shape_dec, tex_dec = store.get("shape_slat_decoder"), store.get("tex_slat_decoder")
    with store.on_device(shape_dec, tex_dec):
        assets = decode(shape_dec, tex_dec, shape, tex, res)
    return assets
