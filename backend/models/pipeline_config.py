"""Typed, validated contents of ``pipeline.json`` and ``texturing_pipeline.json``.

Unknown keys and wrong shapes are errors that name the file and the key: a silently
ignored field is how a pipeline drifts from the release.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

IMAGE_TO_3D = "Trellis2ImageTo3DPipeline"
TEXTURING = "Trellis2TexturingPipeline"

_IMAGE_MODELS = frozenset({
    "sparse_structure_flow_model", "sparse_structure_decoder", "shape_slat_flow_model_512",
    "shape_slat_flow_model_1024", "shape_slat_decoder", "tex_slat_flow_model_512",
    "tex_slat_flow_model_1024", "tex_slat_decoder",
})
_TEXTURING_MODELS = frozenset({
    "shape_slat_encoder", "tex_slat_decoder", "tex_slat_flow_model_512", "tex_slat_flow_model_1024",
})
_COMMON_KEYS = {"models", "tex_slat_sampler", "shape_slat_normalization", "tex_slat_normalization",
                "image_cond_model", "rembg_model"}
_REQUIRED = {
    IMAGE_TO_3D: _COMMON_KEYS | {"sparse_structure_sampler", "shape_slat_sampler", "default_pipeline_type"},
    TEXTURING: _COMMON_KEYS,
}
_OPTIONAL = {IMAGE_TO_3D: {"low_vram"}, TEXTURING: {"low_vram"}}


class PipelineConfigError(ValueError):
    """``pipeline.json`` / ``texturing_pipeline.json`` has an unexpected shape."""


@dataclass(frozen=True)
class SamplerConfig:
    """One ``*_sampler`` entry: ``{"name", "args": {"sigma_min"}, "params": {...}}``."""

    name: str
    sigma_min: float
    steps: int
    guidance_strength: float
    guidance_rescale: float
    guidance_interval: tuple[float, float]
    rescale_t: float


@dataclass(frozen=True)
class Normalization:
    """Per-channel latent statistics: ``x = z * std + mean`` de-normalises."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class ComponentSpec:
    """A registered class name and its (still untyped) constructor args.

    Pipeline components (``image_cond_model`` / ``rembg_model``) and the sections of a training
    config (each model, the dataset, the trainer).
    """

    name: str
    args: Mapping[str, Any]


@dataclass(frozen=True)
class PipelineConfig:
    """A parsed pipeline file.

    ``sparse_structure_sampler``, ``shape_slat_sampler`` and ``default_pipeline_type`` are None
    for the texturing pipeline. ``low_vram`` defaults to True when absent (as the official code).
    """

    name: str
    models: Mapping[str, str]
    sparse_structure_sampler: SamplerConfig | None
    shape_slat_sampler: SamplerConfig | None
    tex_slat_sampler: SamplerConfig
    shape_slat_normalization: Normalization
    tex_slat_normalization: Normalization
    image_cond_model: ComponentSpec
    rembg_model: ComponentSpec
    default_pipeline_type: str | None
    low_vram: bool
    path: Path | None = None


def _fail(where: str, msg: str) -> PipelineConfigError:
    return PipelineConfigError(f"{where}: {msg}")


def _obj(value: Any, where: str, keys: set[str], optional: set[str] = frozenset()) -> dict:
    if not isinstance(value, dict):
        raise _fail(where, f"expected an object, got {type(value).__name__}")
    missing, unknown = keys - set(value), set(value) - keys - set(optional)
    if missing or unknown:
        raise _fail(where, f"missing keys {sorted(missing)}, unknown keys {sorted(unknown)}")
    return value


def _num(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(where, f"expected a number, got {value!r}")
    return float(value)


def _sampler(value: Any, where: str) -> SamplerConfig:
    value = _obj(value, where, {"name", "args", "params"})
    args = _obj(value["args"], f"{where}.args", set(), {"sigma_min"})
    params = _obj(value["params"], f"{where}.params",
                  {"steps", "guidance_strength", "guidance_rescale", "guidance_interval", "rescale_t"})
    steps = params["steps"]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise _fail(f"{where}.params.steps", f"expected a positive integer, got {steps!r}")
    interval = params["guidance_interval"]
    if not isinstance(interval, list) or len(interval) != 2:
        raise _fail(f"{where}.params.guidance_interval", f"expected [lo, hi], got {interval!r}")
    return SamplerConfig(
        name=str(value["name"]),
        sigma_min=_num(args.get("sigma_min", 1e-5), f"{where}.args.sigma_min"),
        steps=steps,
        guidance_strength=_num(params["guidance_strength"], f"{where}.params.guidance_strength"),
        guidance_rescale=_num(params["guidance_rescale"], f"{where}.params.guidance_rescale"),
        guidance_interval=(_num(interval[0], where), _num(interval[1], where)),
        rescale_t=_num(params["rescale_t"], f"{where}.params.rescale_t"),
    )


def _norm(value: Any, where: str) -> Normalization:
    value = _obj(value, where, {"mean", "std"})
    mean = tuple(_num(v, f"{where}.mean") for v in value["mean"])
    std = tuple(_num(v, f"{where}.std") for v in value["std"])
    if len(mean) != len(std) or not mean:
        raise _fail(where, f"mean ({len(mean)}) and std ({len(std)}) must be equal non-empty lists")
    if any(s <= 0 for s in std):
        raise _fail(f"{where}.std", "every std must be > 0")
    return Normalization(mean, std)


def _component(value: Any, where: str) -> ComponentSpec:
    value = _obj(value, where, {"name", "args"})
    if not isinstance(value["args"], dict):
        raise _fail(f"{where}.args", "expected an object")
    return ComponentSpec(str(value["name"]), MappingProxyType(dict(value["args"])))


def parse_pipeline_config(data: Any, where: str = "pipeline config") -> PipelineConfig:
    """Validate and type an already-parsed pipeline JSON object (see :func:`read_pipeline_config`)."""
    top = _obj(data, where, {"name", "args"})
    name = top["name"]
    if name not in _REQUIRED:
        raise _fail(f"{where}.name", f"unknown pipeline {name!r}; expected one of {sorted(_REQUIRED)}")
    args = _obj(top["args"], f"{where}.args", _REQUIRED[name], _OPTIONAL[name])
    wanted = _IMAGE_MODELS if name == IMAGE_TO_3D else _TEXTURING_MODELS
    models = _obj(args["models"], f"{where}.args.models", set(wanted))
    for key, path in models.items():
        if not isinstance(path, str) or not path:
            raise _fail(f"{where}.args.models.{key}", f"expected a checkpoint path string, got {path!r}")
    low_vram = args.get("low_vram", True)
    if not isinstance(low_vram, bool):
        raise _fail(f"{where}.args.low_vram", f"expected true/false, got {low_vram!r}")
    image = name == IMAGE_TO_3D
    default_type = args.get("default_pipeline_type")
    if image and not isinstance(default_type, str):
        raise _fail(f"{where}.args.default_pipeline_type", f"expected a string, got {default_type!r}")
    a = f"{where}.args"
    return PipelineConfig(
        name=name,
        models=MappingProxyType(dict(models)),
        sparse_structure_sampler=_sampler(args["sparse_structure_sampler"], f"{a}.sparse_structure_sampler")
        if image else None,
        shape_slat_sampler=_sampler(args["shape_slat_sampler"], f"{a}.shape_slat_sampler") if image else None,
        tex_slat_sampler=_sampler(args["tex_slat_sampler"], f"{a}.tex_slat_sampler"),
        shape_slat_normalization=_norm(args["shape_slat_normalization"], f"{a}.shape_slat_normalization"),
        tex_slat_normalization=_norm(args["tex_slat_normalization"], f"{a}.tex_slat_normalization"),
        image_cond_model=_component(args["image_cond_model"], f"{a}.image_cond_model"),
        rembg_model=_component(args["rembg_model"], f"{a}.rembg_model"),
        default_pipeline_type=default_type if image else None,
        low_vram=low_vram,
    )


def read_pipeline_config(path: str | Path) -> PipelineConfig:
    """Read ``pipeline.json`` / ``texturing_pipeline.json`` (a file, or a directory with ``pipeline.json``).

    Raises:
        PipelineConfigError: unreadable, or any key missing, unknown or of the wrong type.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "pipeline.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PipelineConfigError(f"{path}: cannot read pipeline config: {exc}") from exc
    config = parse_pipeline_config(data, str(path))
    return PipelineConfig(**{**config.__dict__, "path": path})
