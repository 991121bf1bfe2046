"""Generator factories: how the server turns resolved weights into a loaded :class:`Generator`.

A factory is any callable ``factory(spec: LoadSpec) -> Generator``, named on the command
line as ``module:attribute`` (``--generator``). The default builds the real TRELLIS.2
pipeline; tests name a fake one that emits progress and writes small files.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from backend import protocol
from backend.pipeline.api import Generator
from backend.pipeline.model_source import ModelProvenance
from backend.pipeline.weights import RMBG_REPO, ModelPaths

DEFAULT_GENERATOR = "backend.server.generators:trellis2"
PIPELINE_GENERATOR = "backend.pipeline.generator:Trellis2Generator"


class PipelineUnavailable(RuntimeError):
    """The generator's code could not be imported (the pipeline is missing or broken)."""


@dataclass(frozen=True)
class LoadSpec:
    """Everything a factory needs: local model folders, the device, the memory policy
    (``low_vram``, ``vram_budget_gib``: as ``protocol.Load`` has them), how pictures without
    transparency are handled (``protocol.Load.background_removal``), whether the user consented to
    running the background-removal model's own code, and which weights these are (``provenance``,
    recorded with every result; None: unknown)."""

    paths: ModelPaths
    device: str = "auto"
    low_vram: bool = False
    vram_budget_gib: float | None = None
    background_removal: str = protocol.DEFAULT_BACKGROUND_REMOVAL
    allow_model_code: bool = False  # consent to run the background-removal model's own code
    provenance: ModelProvenance | None = None
    commercial_safe: bool = False


GeneratorFactory = Callable[[LoadSpec], Generator]


def import_by_name(name: str) -> object:
    """``package.module:attribute`` -> the attribute (ImportError/AttributeError if absent)."""
    module_name, sep, attr = name.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected module:attribute, got {name!r}")
    return getattr(importlib.import_module(module_name), attr)


def trellis2(spec: LoadSpec) -> Generator:
    """The real pipeline, imported only now (it brings torch)."""
    try:
        cls = import_by_name(PIPELINE_GENERATOR)
    except (ImportError, AttributeError) as exc:
        raise PipelineUnavailable(f"pipeline not available ({PIPELINE_GENERATOR}): {exc}") from None
    generator = cls(spec.paths.model_dir, device=spec.device, low_vram=spec.low_vram,  # type: ignore[operator]
                    vram_budget_gib=spec.vram_budget_gib,
                    dependencies=spec.paths.dependencies, provenance=spec.provenance,
                    commercial_safe=spec.commercial_safe)
    generator.store.check_checkpoints()  # a broken release fails now, not at the first job
    generator.remover = background_remover(spec, generator.runtime.device)
    return generator


def background_remover(spec: LoadSpec, device: str):
    """The remover ``spec.background_removal`` asks for (None for "none"), running on ``device``."""
    from backend.pipeline import rembg
    from backend.pipeline.errors import ModelUnavailableError
    from backend.pipeline.licences import check_background_removal

    if spec.background_removal != "rmbg":
        return rembg.make_remover(spec.background_removal)
    if spec.commercial_safe:
        check_background_removal("rmbg")
    folder = spec.paths.dependencies.get(RMBG_REPO)
    if folder is None:
        raise ModelUnavailableError(
            f"background removal with RMBG-2.0 was chosen, but {spec.paths.model_dir / 'pipeline.json'} "
            f"does not name {RMBG_REPO}", "set the add-on's RMBG Folder preference to a local RMBG-2.0 or "
            "BiRefNet folder, or choose another Background Removal")
    return rembg.make_remover("birefnet", model_dir=folder, allow_remote_code=spec.allow_model_code,
                              device=device)
