"""Unit-scale sparse-structure latents: each channel's RMS folded into the exported SS VAE.

The sparse-structure flow starts from unit Gaussian noise, and the release format has no
normalisation for sparse-structure latents (the shape and material latents have one in
``pipeline.json``). A VAE trained briefly with a small KL weight can give latents far from unit
scale (0.1-0.3 RMS, say), and the flow then spends nearly all of its noise levels where the data is
invisible under the noise. Dividing the encoder's mean (and shifting its log-variance) by each
channel's RMS ``s`` and multiplying the decoder's input convolution by ``s`` leaves
``decoder(encoder(x))`` exactly as it was while the latents come out at unit RMS per channel.
Only a scale is folded, never a mean: a shift does not commute with the convolutions' zero padding.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.func import functional_call

ENCODER_OUT_WEIGHT = "out_layer.2.weight"  # SparseStructureEncoder: the conv giving [mean, logvar]
ENCODER_OUT_BIAS = "out_layer.2.bias"
DECODER_IN_WEIGHT = "input_layer.weight"  # SparseStructureDecoder: the conv reading the latent
MIN_SCALE = 1e-4  # a channel the encoder never uses keeps its scale rather than dividing by ~0


@torch.no_grad()
def channel_rms(encoder: nn.Module, state: dict[str, torch.Tensor], batches: Iterable[torch.Tensor],
                device: torch.device | str) -> torch.Tensor:
    """Root mean square of each latent channel of the posterior mean, over ``batches`` of occupancy
    ``[B, 1, R, R, R]``, with ``encoder`` run on the weights ``state`` (e.g. its EMA); fp32 ``[C]``."""
    squares, count = None, 0
    for occ in batches:
        mean = functional_call(encoder, state, (occ.to(device),)).float()
        per_channel = mean.square().sum(dim=(0, *range(2, mean.dim())))
        squares = per_channel if squares is None else squares + per_channel
        count += mean.numel() // mean.shape[1]
    if squares is None or count == 0:
        raise ValueError("no occupancy batches to measure the latent scale on")
    return (squares / count).sqrt().cpu()


def fold_latent_scale(encoder_state: dict[str, torch.Tensor], decoder_state: dict[str, torch.Tensor],
                      scale: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """New state dicts whose encoder gives ``mean / scale`` (log-variance ``- 2 log scale``) and whose
    decoder reads such latents as the old one read ``mean``. Inputs are not modified; dtypes kept."""
    scale = scale.double().clamp_min(MIN_SCALE).to(encoder_state[ENCODER_OUT_WEIGHT].device)
    channels = scale.numel()
    enc, dec = dict(encoder_state), dict(decoder_state)
    weight, bias = enc[ENCODER_OUT_WEIGHT], enc[ENCODER_OUT_BIAS]
    if weight.shape[0] != 2 * channels or dec[DECODER_IN_WEIGHT].shape[1] != channels:
        raise ValueError(f"a scale of {channels} channels does not fit encoder output {tuple(weight.shape)} "
                         f"and decoder input {tuple(dec[DECODER_IN_WEIGHT].shape)}")
    out_shape = (channels,) + (1,) * (weight.dim() - 1)
    w = weight.double().clone()
    w[:channels] /= scale.view(out_shape)
    b = bias.double().clone()
    b[:channels] /= scale
    b[channels:] -= 2.0 * scale.log()
    enc[ENCODER_OUT_WEIGHT], enc[ENCODER_OUT_BIAS] = w.to(weight.dtype), b.to(bias.dtype)
    dw = dec[DECODER_IN_WEIGHT]
    dec[DECODER_IN_WEIGHT] = (dw.double() * scale.view((1, channels) + (1,) * (dw.dim() - 2))).to(dw.dtype)
    return enc, dec


def describe(scale: torch.Tensor) -> str:
    """One log line: the folded per-channel RMS values."""
    values = ", ".join(f"{v:.3g}" for v in scale.tolist())
    mean = math.exp(scale.log().mean())
    return f"latent channel RMS before folding: [{values}] (geometric mean {mean:.3g})"
