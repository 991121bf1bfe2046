"""What each trainer optimises: flow matching with CFG dropout, and the three VAE reconstructions.

An objective is an ``nn.Module`` that owns the trainable networks (``self.nets``, keyed like the
config's ``models`` section) and whose ``forward(batch)`` returns ``(loss, logs)`` for one
micro-batch. The training loop wraps the whole objective in DDP, so every network's gradients
are synchronised without the loop knowing which networks an objective calls or how.

Random numbers (noise, timesteps, condition dropout, posterior samples) come from the global
torch generator of the process, which the loop seeds per rank and checkpoints: a resumed run
draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from backend.pipeline.conditioning import IMAGENET_MEAN, IMAGENET_STD, dinov3_tokens
from backend.sparse import SparseTensor

from .config import ConfigError
from .image_losses import load_lpips, lpips_problem
from .render_losses import PbrRenderLossWeights, RenderedPbrLoss, RenderedShapeLoss, RenderLossWeights

DINOV3_REPO = "facebook/dinov3-vitl16-pretrain-lvd1689m"
MAX_RENDER_VIEWS = 64
MIN_RENDER_RESOLUTION, MAX_RENDER_RESOLUTION = 16, 4096


# --------------------------------------------------------------------------- flow matching
@dataclass(frozen=True)
class FlowArgs:
    """Flow-matching settings (the reference: p_uncond 0.1, sigma_min 1e-5)."""

    p_uncond: float = 0.1
    sigma_min: float = 1e-5
    t_schedule: dict = field(
        default_factory=lambda: {"name": "logitNormal", "args": {"mean": 0.0, "std": 1.0}}
    )
    image_cond_model: str = DINOV3_REPO
    # Train the image encoder with this flow (its EMA weights are exported as ``export/image_encoder``)
    # instead of reading frozen features: a randomly initialised encoder's tokens say what a patch
    # shows but hardly where it is (its RoPE is relative), which a flow needs to place shapes.
    train_image_encoder: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.p_uncond <= 1.0:
            raise ValueError(f"p_uncond must lie in [0, 1], got {self.p_uncond}")
        name = self.t_schedule.get("name")
        if name not in ("uniform", "logitNormal"):
            raise ValueError(f"t_schedule.name must be 'uniform' or 'logitNormal', got {name!r}")
        allowed_args = {"mean", "std"} if name == "logitNormal" else set()
        unknown = set(self.t_schedule) - {"name", "args"}
        unknown |= {f"args.{k}" for k in set(self.t_schedule.get("args", {})) - allowed_args}
        if unknown:
            raise ValueError(f"t_schedule has unknown keys: {sorted(unknown)}")


def sample_timesteps(schedule: dict, n: int, device: torch.device,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """``[n]`` times in (0, 1): uniform, or ``sigmoid(mean + std * N(0, 1))`` (logit-normal).

    Drawn on the CPU from ``generator`` (default: the global one), then moved to ``device``.
    """
    if schedule["name"] == "uniform":
        return torch.rand(n, generator=generator).to(device)
    args = schedule.get("args", {})
    normal = torch.randn(n, generator=generator)
    return torch.sigmoid(args.get("mean", 0.0) + args.get("std", 1.0) * normal).to(device)


def noised(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, sigma_min: float):
    """``x_t = (1 - t) x0 + (s + (1 - s) t) eps`` and the target ``v = (1 - s) eps - x0`` (t broadcast)."""
    return (1 - t) * x0 + (sigma_min + (1 - sigma_min) * t) * eps, (1 - sigma_min) * eps - x0


class FlowMatchingObjective(nn.Module):
    """Rectified-flow (v-prediction) loss with classifier-free condition dropout.

    Batches carry ``x0`` (dense ``[B, C, R, R, R]``, or sparse feats ``[N, C]`` with ``coords``),
    the condition (filled in by the loop from the condition cache: tokens ``cond [B, T, Cc]``, or
    ``pixels [B, 3, S, S]`` that the trained ``image_encoder`` turns into tokens) and, for the
    texture flow, ``concat`` (normalised shape latent on the same voxels, never dropped). The loss
    is the mean over every token and channel of the micro-batch.
    """

    def __init__(self, nets: dict[str, nn.Module], args: FlowArgs) -> None:
        super().__init__()
        expected = {"denoiser", "image_encoder"} if args.train_image_encoder else {"denoiser"}
        if set(nets) != expected:
            raise ConfigError(f"this flow trainer trains {sorted(expected)}, got {sorted(nets)}")
        self.nets = nn.ModuleDict(nets)
        self.args = args

    def train(self, mode: bool = True) -> FlowMatchingObjective:
        super().train(mode)
        if "image_encoder" in self.nets:  # trained, but never with its train-mode RoPE augmentation
            self.nets["image_encoder"].eval()
        return self

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        cond = self._condition(batch)
        B = cond.shape[0]
        device = cond.device
        t = sample_timesteps(self.args.t_schedule, B, device)  # [B]
        drop = torch.rand(B) < self.args.p_uncond
        cond = torch.where(drop.to(device)[:, None, None], torch.zeros_like(cond), cond)
        eps = torch.randn(batch["x0"].shape).to(device)
        loss = self._loss(batch, cond, t, eps)
        return loss, {"loss": loss.item()}

    @torch.no_grad()
    def condition_gap(self, batch: dict[str, Any], seed: int = 0) -> dict[str, float]:
        """How much the denoiser reads its condition: the loss with each sample's own condition
        (``cond_loss``) and how much higher it is with the next sample's (``cond_gap``).

        Same times and noise for both (drawn from a private generator: the training RNG is
        untouched); no condition dropout. A flow that ignores its picture has a gap of ~0.
        """
        cond = self._condition(batch)
        B, device = cond.shape[0], cond.device
        if B < 2:
            return {}
        gen = torch.Generator().manual_seed(seed)
        t = sample_timesteps(self.args.t_schedule, B, device, gen)
        eps = torch.randn(batch["x0"].shape, generator=gen).to(device)
        own = self._loss(batch, cond, t, eps).item()
        other = self._loss(batch, cond.roll(1, 0), t, eps).item()
        return {"cond_loss": own, "cond_gap": other - own}

    def _condition(self, batch: dict[str, Any]) -> torch.Tensor:
        if "pixels" in batch:
            return dinov3_tokens(self.nets["image_encoder"], batch["pixels"])
        return batch["cond"]

    def _loss(self, batch: dict[str, Any], cond: torch.Tensor, t: torch.Tensor,
              eps: torch.Tensor) -> torch.Tensor:
        """Mean squared velocity error at times ``t [B]`` with noise ``eps`` (shaped like ``x0``)."""
        denoiser = self.nets["denoiser"]
        x0 = batch["x0"]
        B = cond.shape[0]
        if "coords" in batch:  # sparse: one t per sample, broadcast over its tokens
            coords = batch["coords"]
            t_tok = t[coords[:, 0].long()][:, None]
            x_t, target = noised(x0, eps, t_tok, self.args.sigma_min)
            kwargs = {}
            if "concat" in batch:
                kwargs["concat_cond"] = SparseTensor(coords, batch["concat"], B)
            pred = denoiser(SparseTensor(coords, x_t, B), t * 1000, cond, **kwargs).feats
        else:
            x_t, target = noised(x0, eps, t.view(B, *[1] * (x0.ndim - 1)), self.args.sigma_min)
            pred = denoiser(x_t, t * 1000, cond)
        return F.mse_loss(pred.float(), target)


# --------------------------------------------------------------------------- VAEs
def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``0.5 * mean(mu^2 + sigma^2 - log sigma^2 - 1)`` over all elements."""
    return 0.5 * torch.mean(mean.pow(2) + logvar.exp() - logvar - 1)


def reparameterize(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape).to(mean.device)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    p = torch.sigmoid(logits)
    return 1 - (2 * (p * target).sum() + eps) / (p.sum() + target.sum() + eps)


class _AutoencoderObjective(nn.Module):
    """The three VAE objectives: an ``encoder`` and a ``decoder`` trained together."""

    def __init__(self, nets: dict[str, nn.Module], args: Any) -> None:
        super().__init__()
        if set(nets) != {"encoder", "decoder"}:
            raise ConfigError(f"VAE trainers train 'encoder' and 'decoder', got {sorted(nets)}")
        self.nets = nn.ModuleDict(nets)
        self.args = args


@dataclass(frozen=True)
class SparseStructureVaeArgs:
    """SS VAE: occupancy BCE (+ dice, which keeps a ~2% occupied grid from collapsing to empty) and KL."""

    lambda_kl: float = 1e-6
    lambda_dice: float = 1.0
    # Export the encoder and decoder with each latent channel's RMS folded in, so the latents come
    # out at unit scale for the structure flow (backend.train.latent_scale); training is unchanged.
    standardize_latents: bool = False


class SparseStructureVaeObjective(_AutoencoderObjective):
    """Dense occupancy autoencoder: ``64^3`` occupancy -> ``8 x 16^3`` latent -> occupancy logits."""

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        occ = batch["occupancy"]
        _, mean, logvar = self.nets["encoder"](occ, sample_posterior=False, return_raw=True)
        z = reparameterize(mean.float(), logvar.float())
        logits = self.nets["decoder"](z).float()
        bce = F.binary_cross_entropy_with_logits(logits, occ)
        dice = dice_loss(logits, occ)
        kl = kl_divergence(mean.float(), logvar.float())
        loss = bce + self.args.lambda_dice * dice + self.args.lambda_kl * kl
        with torch.no_grad():
            pred = logits > 0
            iou = (pred & (occ > 0.5)).sum() / ((pred | (occ > 0.5)).sum()).clamp_min(1)
        return loss, {
            "loss": loss.item(),
            "bce": bce.item(),
            "dice": dice.item(),
            "kl": kl.item(),
            "iou": iou.item(),
        }


def _check_render_settings(args: Any, weights: Sequence[str], *, outer: str, term: str) -> None:
    """The checks a VAE's rendered-loss settings share: ``weights`` (plus ``lambda_ssim`` and
    ``lambda_lpips``) finite and >= 0, views and resolution in range, SSIM/LPIPS only inside a
    weighted ``outer`` term, and LPIPS only with its weights file."""
    for name in (*weights, "lambda_ssim", "lambda_lpips"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    if not 1 <= args.render_views <= MAX_RENDER_VIEWS:
        raise ValueError(f"render_views must lie in [1, {MAX_RENDER_VIEWS}], got {args.render_views}")
    if not MIN_RENDER_RESOLUTION <= args.render_resolution <= MAX_RENDER_RESOLUTION:
        raise ValueError(f"render_resolution must lie in [{MIN_RENDER_RESOLUTION}, "
                         f"{MAX_RENDER_RESOLUTION}], got {args.render_resolution}")
    for name in ("lambda_ssim", "lambda_lpips"):
        if getattr(args, name) > 0 and getattr(args, outer) == 0:
            raise ValueError(f"{name} scales a part of the {term}, so it needs {outer} > 0")
    if args.lambda_lpips > 0:
        problem = lpips_problem(args.lpips_vgg_weights)
        if problem:
            raise ValueError(f"lambda_lpips > 0: LPIPS {problem}")


@dataclass(frozen=True)
class ShapeVaeArgs:
    """Shape SC-VAE loss weights and render settings.

    The reference: 0.1 BCE flags, 0.01 vertex MSE, 0.1 subdivision, 1e-6 KL, and rendered
    losses (:mod:`.render_losses`) with mask 1, depth 10, normal 1 (within it SSIM 0.2 and
    LPIPS 0.2), one view per sample at 1024 px. The rendered weights default to 0 (off); LPIPS
    also needs ``lpips_vgg_weights`` (see :mod:`.image_losses`). Without rendered losses the
    vertex term is the only geometric signal, so small configs raise ``lambda_vertex``.
    """

    lambda_intersected: float = 0.1
    lambda_vertex: float = 0.01
    lambda_subdiv: float = 0.1
    lambda_kl: float = 1e-6
    lambda_mask: float = 0.0
    lambda_depth: float = 0.0
    lambda_normal: float = 0.0
    lambda_ssim: float = 0.0  # scales 1 - SSIM of the normal maps inside the normal term
    lambda_lpips: float = 0.0  # scales LPIPS of the normal maps inside the normal term
    lpips_vgg_weights: str = ""  # torchvision VGG16 state dict, needed when lambda_lpips > 0
    render_views: int = 1  # loss views per sample and step
    render_resolution: int = 512  # square loss renders, pixels per side

    def __post_init__(self) -> None:
        _check_render_settings(self, ("lambda_intersected", "lambda_vertex", "lambda_subdiv", "lambda_kl",
                                      "lambda_mask", "lambda_depth", "lambda_normal"),
                               outer="lambda_normal", term="normal term")

    def render_weights(self) -> RenderLossWeights:
        return RenderLossWeights(self.lambda_mask, self.lambda_depth, self.lambda_normal, self.lambda_ssim,
                                 self.lambda_lpips, self.render_views, self.render_resolution)


class ShapeVaeObjective(_AutoencoderObjective):
    """Flexible-dual-grid autoencoder with teacher forcing: the decoder follows the encoder's maps."""

    def __init__(self, nets: dict[str, nn.Module], args: ShapeVaeArgs) -> None:
        super().__init__(nets, args)
        weights = args.render_weights()
        lpips = _lpips_for(args, weights.enabled and weights.lpips > 0)
        self.rendered = RenderedShapeLoss(weights, lpips) if weights.enabled else None

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        coords, B = batch["coords"], batch["batch_size"]
        vertices = SparseTensor(coords, batch["vertices"], B)
        flags = SparseTensor(coords, batch["intersected"], B)
        mean, logvar, maps = self.nets["encoder"].encode_posterior(vertices, flags)
        z = mean.replace(reparameterize(mean.feats.float(), logvar.feats.float()))
        out, subs = self.nets["decoder"](z, s2c_maps=maps, return_subs=True)
        masks = [m.child_mask().float() for m in maps]
        subdiv = sum(F.binary_cross_entropy_with_logits(s.feats.float(), m) for s, m in zip(subs, masks))
        inter = F.binary_cross_entropy_with_logits(out.intersection_logits.float(), batch["intersected"])
        vertex = F.mse_loss(out.offsets.float(), batch["vertices"])
        kl = kl_divergence(mean.feats.float(), logvar.feats.float())
        a = self.args
        loss = (
            a.lambda_intersected * inter
            + a.lambda_vertex * vertex
            + a.lambda_subdiv * subdiv
            + a.lambda_kl * kl
        )
        rendered_logs: dict[str, float] = {}
        if self.rendered is not None:
            if not torch.equal(out.coords, coords):
                raise RuntimeError("teacher-forced decoder output is not row-aligned with the input voxels")
            rendered, rendered_logs = self.rendered(batch, out.offsets, out.split_weight)
            loss = loss + rendered
        with torch.no_grad():
            acc = ((out.intersection_logits > 0).float() == batch["intersected"]).float().mean()
            sub_acc = sum(((s.feats > 0).float() == m).float().mean() for s, m in zip(subs, masks)) / max(
                1, len(subs)
            )
        return loss, {
            "loss": loss.item(),
            "intersected_bce": inter.item(),
            "vertex_mse": vertex.item(),
            "subdiv_bce": subdiv.item() if torch.is_tensor(subdiv) else float(subdiv),
            "kl": kl.item(),
            "flag_acc": acc.item(),
            "subdiv_acc": float(sub_acc),
            **rendered_logs,
        }


@dataclass(frozen=True)
class PbrVaeArgs:
    """Texture SC-VAE: L1 on ``attr * 2 - 1``, KL, and optional rendered losses.

    The reference: KL 1e-6; rendered losses off at grid 256 and ``lambda_render`` 1 in the 512
    fine-tune, with ``0.2 (1 - SSIM) + 0.2 LPIPS`` of a base-colour and a material image, one
    view of 512 px (:class:`~.render_losses.RenderedPbrLoss`, which also says how our images
    differ from the reference's). ``lambda_ssim`` and ``lambda_lpips`` weigh their part inside
    ``lambda_render``; all three default to 0 (off). LPIPS also needs ``lpips_vgg_weights``
    (see :mod:`.image_losses`).
    """

    lambda_kl: float = 1e-6
    lambda_render: float = 0.0  # overall weight of the rendered terms
    lambda_ssim: float = 0.0  # scales 1 - SSIM of each image inside the rendered term
    lambda_lpips: float = 0.0  # scales LPIPS of each image inside the rendered term
    lpips_vgg_weights: str = ""  # torchvision VGG16 state dict, needed when lambda_lpips > 0
    render_views: int = 1  # loss views per sample and step
    render_resolution: int = 512  # square loss renders, pixels per side

    def __post_init__(self) -> None:
        _check_render_settings(self, ("lambda_kl", "lambda_render"), outer="lambda_render",
                               term="rendered term")
        if self.lambda_render > 0 and self.lambda_ssim == 0 and self.lambda_lpips == 0:
            raise ValueError("lambda_render > 0 weighs the SSIM and LPIPS terms, so it needs "
                             "lambda_ssim > 0 or lambda_lpips > 0")

    def render_weights(self) -> PbrRenderLossWeights:
        return PbrRenderLossWeights(self.lambda_render, self.lambda_ssim, self.lambda_lpips,
                                    self.render_views, self.render_resolution)


def _lpips_for(args: Any, enabled: bool):
    """The LPIPS network the args ask for, or None; a bad weights file is a config error."""
    if not enabled:
        return None
    try:
        return load_lpips(args.lpips_vgg_weights)
    except ValueError as exc:
        raise ConfigError(f"trainer.args.lpips_vgg_weights: {exc}") from exc


class PbrVaeObjective(_AutoencoderObjective):
    """PBR attribute autoencoder on the O-Voxel's voxels, teacher-forced like the shape VAE."""

    def __init__(self, nets: dict[str, nn.Module], args: PbrVaeArgs) -> None:
        super().__init__(nets, args)
        weights = args.render_weights()
        lpips = _lpips_for(args, weights.enabled and weights.lpips > 0)
        self.rendered = RenderedPbrLoss(weights, lpips) if weights.enabled else None

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        x = batch["attributes"] * 2 - 1
        inp = SparseTensor(batch["coords"], x, batch["batch_size"])
        mean, logvar, maps = self.nets["encoder"].encode_posterior(inp)
        z = mean.replace(reparameterize(mean.feats.float(), logvar.feats.float()))
        out = self.nets["decoder"](z, s2c_maps=maps)
        recon = out.feats.float()
        l1 = (recon - x).abs().mean()
        kl = kl_divergence(mean.feats.float(), logvar.feats.float())
        loss = l1 + self.args.lambda_kl * kl
        rendered_logs: dict[str, float] = {}
        if self.rendered is not None:
            if not torch.equal(out.coords, batch["coords"]):
                raise RuntimeError("teacher-forced decoder output is not row-aligned with the input voxels")
            rendered, rendered_logs = self.rendered(batch, recon)
            loss = loss + rendered
        with torch.no_grad():
            psnr = -10 * math.log10(max(F.mse_loss(recon * 0.5, x * 0.5).item(), 1e-12))
        return loss, {"loss": loss.item(), "l1": l1.item(), "kl": kl.item(), "psnr": psnr, **rendered_logs}


# --------------------------------------------------------------------------- image encoder
@dataclass(frozen=True)
class EncoderPretrainArgs:
    """Image-encoder pretraining: occupancy BCE + dice from the picture, with colour jitter."""

    image_cond_model: str = DINOV3_REPO  # the encoder to start from (a folder or repo id)
    lambda_dice: float = 1.0
    # Per-sample, per-channel gain in [1 - j, 1 + j] on the picture's colours: occupancy does not
    # depend on colour, so the encoder is pushed to read shape rather than remember palettes.
    color_jitter: float = 0.3

    def __post_init__(self) -> None:
        if not 0.0 <= self.color_jitter < 1.0:
            raise ValueError(f"color_jitter must lie in [0, 1), got {self.color_jitter}")


class EncoderPretrainObjective(nn.Module):
    """Teach the image encoder what its picture shows in 3D: a ``probe`` (:class:`StructureProbe`)
    reads the ``grid^3`` occupancy of the pictured object from the encoder's tokens.

    Batches carry ``pixels [B, 3, S, S]`` (normalised) and ``occupancy [B, g, g, g]``.
    """

    always_trains_image_encoder = True

    def __init__(self, nets: dict[str, nn.Module], args: EncoderPretrainArgs) -> None:
        super().__init__()
        if set(nets) != {"probe", "image_encoder"}:
            raise ConfigError(f"this trainer trains 'probe' and the image encoder, got {sorted(nets)}")
        self.nets = nn.ModuleDict(nets)
        self.args = args
        self.register_buffer("_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> EncoderPretrainObjective:
        super().train(mode)
        self.nets["image_encoder"].eval()  # as the flows run it: no train-mode RoPE augmentation
        return self

    def _jitter(self, pixels: torch.Tensor) -> torch.Tensor:
        j = self.args.color_jitter
        if not self.training or j == 0:
            return pixels
        gain = 1 + j * (2 * torch.rand(pixels.shape[0], 3, 1, 1) - 1)
        rgb = (pixels * self._std + self._mean) * gain.to(pixels.device)
        return (rgb.clamp(0, 1) - self._mean) / self._std

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        tokens = dinov3_tokens(self.nets["image_encoder"], self._jitter(batch["pixels"]))
        logits = self.nets["probe"](tokens).float()
        target = batch["occupancy"]
        bce = F.binary_cross_entropy_with_logits(logits, target)
        dice = dice_loss(logits, target)
        loss = bce + self.args.lambda_dice * dice
        with torch.no_grad():
            pred, full = logits > 0, target > 0.5
            iou = (pred & full).sum() / (pred | full).sum().clamp_min(1)
        return loss, {"loss": loss.item(), "bce": bce.item(), "dice": dice.item(), "iou": iou.item()}


# name -> (objective, its args dataclass, what the data loader must add)
TRAINERS: dict[str, tuple[type[nn.Module], type]] = {
    "ImageConditionedFlowMatchingCFGTrainer": (FlowMatchingObjective, FlowArgs),
    "ImageConditionedSparseFlowMatchingCFGTrainer": (FlowMatchingObjective, FlowArgs),
    "SparseStructureVaeTrainer": (SparseStructureVaeObjective, SparseStructureVaeArgs),
    "ShapeVaeTrainer": (ShapeVaeObjective, ShapeVaeArgs),
    "PbrVaeTrainer": (PbrVaeObjective, PbrVaeArgs),
    "ImageEncoderPretrainer": (EncoderPretrainObjective, EncoderPretrainArgs),
}


def trainer_entry(name: str, where: str) -> tuple[type[nn.Module], type]:
    if name not in TRAINERS:
        raise ConfigError(
            f"{where}: trainer.name: unknown trainer {name!r}; known: {', '.join(sorted(TRAINERS))}"
        )
    return TRAINERS[name]
