"""Commercial-safe runs: the parts of a run under a non-commercial licence, and how to avoid them.

Two optional parts carry non-commercial licences: nvdiffrast (NVIDIA Source Code License), which
the texture baker uses on CUDA when it is installed, and RMBG-2.0 (CC BY-NC 4.0), the model-based
background removal. A BiRefNet folder may hold either BiRefNet (MIT) or RMBG-2.0, which cannot be
told apart reliably, so commercial-safe mode runs no model-based background removal at all.
"""

from __future__ import annotations

import dataclasses

from .api import ExportOptions
from .errors import PipelineError

COMMERCIAL_SAFE_HINT = "drop --commercial-safe (add-on preferences: Commercial-Safe) to use it"


def commercial_safe_export(options: ExportOptions) -> ExportOptions:
    """``options`` with our own rasterizer instead of nvdiffrast ("auto" would pick nvdiffrast).

    Raises:
        PipelineError: nvdiffrast was asked for explicitly.
    """
    if options.rasterizer == "nvdiffrast":
        raise PipelineError("--rasterizer nvdiffrast is under a non-commercial licence and commercial-safe "
                            "mode is on", f"use --rasterizer ours, or {COMMERCIAL_SAFE_HINT}")
    return dataclasses.replace(options, rasterizer="ours")


def check_background_removal(method: str | None) -> None:
    """Refuse model-based background removal (``"birefnet"``, the server's ``"rmbg"``).

    Raises:
        PipelineError: ``method`` runs RMBG-2.0 / BiRefNet.
    """
    if method in ("birefnet", "rmbg"):
        raise PipelineError("model-based background removal (RMBG-2.0 / BiRefNet) may be under a "
                            "non-commercial licence and commercial-safe mode is on",
                            f"use --rembg solid or none (add-on preferences: Background Removal: Plain "
                            f"Background or None), or {COMMERCIAL_SAFE_HINT}")
