"""Weight initialisation for training from scratch (what the reference trainers apply after construction)."""

from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def initialize_flow(model: nn.Module) -> None:
    """The "scaled" DiT initialisation.

    Block linears ~ N(0, 2 / (5 C)); attention output and MLP output linears ~ N(0, 1 / (5 L C));
    input layer ~ N(0, 1 / in_channels); timestep MLP ~ N(0, 0.02^2); shared AdaLN modulation and the
    output layer zero (every block starts as the identity and the prediction as 0); biases zero.
    """
    width = model.model_channels
    depth = len(model.blocks)
    for block in model.blocks:
        for name, m in block.named_modules():
            if isinstance(m, nn.Linear):
                out_proj = name.endswith("to_out") or name == "mlp.mlp.2"
                std = 1 / math.sqrt(5 * depth * width) if out_proj else math.sqrt(2 / (5 * width))
                nn.init.normal_(m.weight, std=std)
                nn.init.zeros_(m.bias)
    nn.init.normal_(model.input_layer.weight, std=1 / math.sqrt(model.input_layer.in_features))
    nn.init.zeros_(model.input_layer.bias)
    for m in model.t_embedder.mlp:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
    for m in (model.adaLN_modulation[-1], model.out_layer):
        nn.init.zeros_(m.weight)
        nn.init.zeros_(m.bias)


@torch.no_grad()
def initialize_vae(model: nn.Module) -> None:
    """Xavier-uniform for every Linear (zero bias); convolutions keep their default init, except the
    second convolution of dense residual blocks, which starts at zero (each block starts as the identity)."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv3d) and name.endswith("conv2"):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)


def initialize(model: nn.Module) -> None:
    """Flow DiTs get :func:`initialize_flow`, everything else :func:`initialize_vae`."""
    if hasattr(model, "blocks") and hasattr(model, "t_embedder"):
        initialize_flow(model)
    else:
        initialize_vae(model)
