"""Official TRELLIS.2 class names (as written in ``ckpts/*.json``) -> our classes.

The SC-VAE classes are imported only when asked for, so the flow models load without the
sparse-convolution stack.
"""

from __future__ import annotations

import importlib

from torch import nn

# official name -> (module, attribute)
_CLASSES: dict[str, tuple[str, str]] = {
    "SparseStructureFlowModel": ("backend.models.sparse_structure_flow", "SparseStructureFlowModel"),
    "SLatFlowModel": ("backend.models.slat_flow", "SLatFlowModel"),
    # Training configs name the elastic-memory variant; weights and forward are identical.
    "ElasticSLatFlowModel": ("backend.models.slat_flow", "SLatFlowModel"),
    "SparseStructureDecoder": ("backend.models.ss_decoder", "SparseStructureDecoder"),
    # TRELLIS v1's sparse-structure encoder: makes the stage-1 training latents.
    "SparseStructureEncoder": ("backend.models.ss_encoder", "SparseStructureEncoder"),
    "SparseUnetVaeEncoder": ("backend.models.sc_vae", "SparseUnetVaeEncoder"),
    "SparseUnetVaeDecoder": ("backend.models.sc_vae", "SparseUnetVaeDecoder"),
    "FlexiDualGridVaeEncoder": ("backend.models.sc_vae", "FlexiDualGridVaeEncoder"),
    "FlexiDualGridVaeDecoder": ("backend.models.sc_vae", "FlexiDualGridVaeDecoder"),
}


def known_model_names() -> list[str]:
    """Every class name a checkpoint JSON may carry."""
    return sorted(_CLASSES)


def model_class(name: str) -> type[nn.Module]:
    """The module class for an official class name.

    Raises:
        KeyError: the name is not a known TRELLIS.2 network.
    """
    if name not in _CLASSES:
        raise KeyError(f"unknown model class {name!r}; known: {', '.join(known_model_names())}")
    module, attr = _CLASSES[name]
    return getattr(importlib.import_module(module), attr)
