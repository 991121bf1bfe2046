"""Typed errors of the generation pipelines; every message says what to change."""

from __future__ import annotations


class PipelineError(Exception):
    """Base class: a job that cannot run as requested. ``hint`` says what to change."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message if not hint else f"{message} ({hint})")
        self.message = message
        self.hint = hint


class InputError(PipelineError):
    """An input image or mesh that cannot be used (missing, corrupt, too large, empty)."""


class ModelUnavailableError(PipelineError):
    """A model the job needs is not available locally and may not be downloaded."""


class OutOfMemoryError(PipelineError):
    """The accelerator ran out of memory during ``stage``."""

    def __init__(self, stage: str, detail: str = "") -> None:
        hints = {
            "sparse_structure": "use --low-vram so only one model is on the GPU at a time",
            "shape": "use --pipeline 1024_cascade or 512, lower --max-tokens, or use --low-vram",
            "texture": "use --low-vram, a smaller --pipeline, or lower --max-tokens",
            "decode": "use --low-vram or a smaller --pipeline (fewer voxels to decode)",
            "export": "lower --texture-size or --faces",
        }
        hint = hints.get(stage, "use --low-vram or a smaller --pipeline")
        super().__init__(f"out of GPU memory during the {stage} stage{': ' + detail if detail else ''}",
                         hint)
        self.stage = stage
