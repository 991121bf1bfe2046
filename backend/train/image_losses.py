"""Image comparison terms of the rendered losses: SSIM, and LPIPS when its weights are at hand.

SSIM follows the usual definition with an 11x11 Gaussian window (sigma 1.5), zero padding,
``C1 = 0.01^2``, ``C2 = 0.03^2`` and the mean of the SSIM map, for images in [0, 1].

LPIPS (VGG) needs the ``lpips`` package and torchvision's ImageNet VGG16 weights, which are
not downloadable on every training machine; it is therefore opt-in, and the weights file is
named explicitly (:func:`load_lpips`). The network is frozen and kept in eval mode.
"""

from __future__ import annotations

import importlib.util
import logging
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2
# torchvision's VGG16 ``features`` layer indices that lpips' five slices hold.
_LPIPS_VGG_SLICES = ((1, range(0, 4)), (2, range(4, 9)), (3, range(9, 16)), (4, range(16, 23)),
                     (5, range(23, 30)))


def _gaussian_window(channels: int, like: torch.Tensor) -> torch.Tensor:
    """[C, 1, 11, 11] normalised Gaussian kernel for a depthwise convolution."""
    x = torch.arange(SSIM_WINDOW, dtype=like.dtype, device=like.device) - SSIM_WINDOW // 2
    g = torch.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, SSIM_WINDOW, SSIM_WINDOW).contiguous()


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of two ``[B, C, H, W]`` image batches with values in [0, 1] (1 = identical)."""
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"ssim needs two [B, C, H, W] batches of one shape, got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    channels = a.shape[1]
    window = _gaussian_window(channels, a)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, window, padding=SSIM_WINDOW // 2, groups=channels)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + SSIM_C1) * (2 * cov + SSIM_C2)
    den = (mu_a**2 + mu_b**2 + SSIM_C1) * (var_a + var_b + SSIM_C2)
    return (num / den).mean()


def lpips_problem(vgg_weights: str) -> str | None:
    """Why LPIPS cannot be built with ``vgg_weights`` here (a sentence), or None if it can."""
    if importlib.util.find_spec("lpips") is None:
        return "needs the 'lpips' package (pip install lpips), which is not installed"
    if not vgg_weights:
        return ("needs lpips_vgg_weights: the path of torchvision's ImageNet VGG16 state dict "
                "(vgg16-397923af.pth); it is not downloaded during training")
    if not Path(vgg_weights).is_file():
        return f"lpips_vgg_weights {vgg_weights!r} is not a file"
    return None


class LpipsLoss:
    """LPIPS (VGG) distance of two ``[B, 3, H, W]`` batches in [0, 1], batch mean.

    A plain object rather than an ``nn.Module`` attribute of the objective, so its frozen
    parameters never reach the optimizer, the checkpoints or DDP, and ``train()`` on the
    objective cannot switch its dropout on.
    """

    def __init__(self, network: nn.Module) -> None:
        self.network = network.eval().requires_grad_(False)

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        self.network.to(a.device)
        return self.network(a.float() * 2 - 1, b.float() * 2 - 1).mean()  # lpips expects [-1, 1]


def load_lpips(vgg_weights: str) -> LpipsLoss:
    """LPIPS with the package's linear heads and the VGG16 backbone read from ``vgg_weights``.

    Raises:
        ValueError: when :func:`lpips_problem` names a problem, or the file is not a VGG16
            ``features`` state dict.
    """
    problem = lpips_problem(vgg_weights)
    if problem:
        raise ValueError(f"LPIPS {problem}")
    import lpips  # optional dependency, checked above

    network = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
    try:
        state = torch.load(vgg_weights, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise ValueError(f"{vgg_weights}: cannot read it as a torch state dict ({exc})") from exc
    if not isinstance(state, dict):
        raise ValueError(f"{vgg_weights}: not a state dict")
    backbone = {}
    for index, layers in _LPIPS_VGG_SLICES:
        for layer in layers:
            for name in ("weight", "bias"):
                key = f"features.{layer}.{name}"
                if key in state:
                    backbone[f"slice{index}.{layer}.{name}"] = state[key]
    try:
        network.net.load_state_dict(backbone, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{vgg_weights}: not torchvision's VGG16 weights ({exc})") from exc
    log.info("LPIPS: VGG16 backbone from %s", vgg_weights)
    return LpipsLoss(network)
