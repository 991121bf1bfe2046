"""Flow-matching Euler sampler with classifier-free guidance, as pure functions.

Mirrors ``trellis2/pipelines/samplers/flow_euler.py`` and its guidance
interval / CFG mixins, without the mixin chain:

- forward process ``x_t = (1 - t) x0 + (s + (1 - s) t) eps`` with ``s = sigma_min``;
  the network predicts ``v = (1 - s) eps - x0`` and is called as
  ``model(x_t, 1000 t [B] float32, cond, **kwargs)``;
- time grid ``t_i = r tau_i / (1 + (r - 1) tau_i)``, ``tau = linspace(1, 0, steps + 1)``
  in **float64** (the guidance interval boundary t = 0.6 is hit exactly);
- guidance strength ``w`` applies only when ``lo <= t_i <= hi``; ``w == 1`` is one
  conditional pass, ``w == 0`` one unconditional pass;
- guidance rescale ``phi`` blends the guided x0 with a copy rescaled to the
  conditional x0's standard deviation (dense: unbiased std over all non-batch
  dims; sparse: population std over each sample's tokens x channels).

Random-number contract (see :func:`make_generator`): all noise of a job comes
from ONE CPU ``torch.Generator`` seeded with the job's seed, drawn in the order
sparse structure -> shape (LR, then HR for cascades) -> texture, then moved to
the device. This reproduces the reference's ``torch.manual_seed(seed)`` +
CPU ``torch.randn`` stream bit for bit, without touching the global generator.

Several pictures of one object (:class:`MultiViewCond`): the released networks were
trained on one picture per object, so the views are combined in the sampler, in one
of two ways (both as in TRELLIS v1's multi-image samplers):

- ``"stochastic"``: step ``i`` is conditioned on view ``i mod V`` alone; each step
  costs what a single-view step costs.
- ``"multidiffusion"``: every step averages the conditional velocities of all views,
  then applies guidance against one unconditional pass (the negative condition is
  the same for every view); a guided step costs ``V + 1`` network passes instead of 2.

The passes of one step (conditional, unconditional, each view) run one network call each, or,
with ``SamplerParams.batched_cfg``, as ONE call on a batch of their copies (dense latents: the
copies concatenated on the batch axis; sparse latents: the tokens repeated with their batch
indices offset by ``B`` per copy; per-sample keyword arguments such as ``concat_cond`` repeated
the same way), whose output is split back. The guidance arithmetic is the same either way.

What is constant over a ``sample()`` call is built once (:class:`StepReuse`): the condition
tokens' cross-attention K/V of a flow DiT (a :class:`~backend.models.CondKVCache`, for both
guidance branches), and for batched steps the stacked conditions and the copies' coordinates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from backend.models.flow_trunk import CondKVCache, tensor_version
from backend.protocol import STAGE_SAMPLER_DEFAULTS
from backend.sparse import SparseTensor

from .api import MULTIVIEW_MODES, CancelToken, SamplerOverrides

Latent = torch.Tensor | SparseTensor
ModelFn = Callable[..., Latent]  # model(x_t, t_model [B], cond, **kwargs) -> v
StepCallback = Callable[[int, int], None]  # (step done, total)



@dataclass(frozen=True)
class MultiViewCond:
    """The conditions of ``V`` pictures of one object, and how the sampler combines them.

    Args:
        views: ``V`` tensors ``[B, T, D]``, one per picture (B = samples, the same for all).
        mode: one of :data:`MULTIVIEW_MODES` (see the module docstring).
    """

    views: tuple[torch.Tensor, ...]
    mode: str = "stochastic"

    def __post_init__(self) -> None:
        if not self.views:
            raise ValueError("MultiViewCond needs at least one view")
        if self.mode not in MULTIVIEW_MODES:
            raise ValueError(f"multi-view mode must be one of {MULTIVIEW_MODES}, got {self.mode!r}")
        shapes = {tuple(v.shape) for v in self.views}
        if len(shapes) != 1:
            raise ValueError(f"every view's condition must have the same shape, got {sorted(shapes)}")


Condition = torch.Tensor | MultiViewCond


def cond_batch(cond: Condition) -> int:
    """Samples in a condition (its batch size)."""
    return int((cond.views[0] if isinstance(cond, MultiViewCond) else cond).shape[0])


def cond_device(cond: Condition) -> torch.device:
    return (cond.views[0] if isinstance(cond, MultiViewCond) else cond).device


@dataclass(frozen=True)
class SamplerParams:
    """One stage's sampler settings (``pipeline.json``'s ``*_sampler.params`` + ``args``), and how
    the network passes of a step run.

    ``batched_cfg``: a guided step's conditional and unconditional passes (and multidiffusion's
    views) run as one network call on a batch of their copies instead of one call each. Same
    velocities up to float rounding; fewer, larger kernels (faster where launches dominate, as on
    a GPU), and the activations of all passes are alive at once. ``pipeline.json`` does not set
    it: the pipeline takes it from :attr:`backend.pipeline.runtime.Runtime.batched_cfg`.

    ``cache_cond_kv``: keep each condition's cross-attention K/V for the whole call instead of
    projecting it again at every step (identical results; at release size about 0.76 GB per
    1,024-px condition, so the pipeline turns it off in low-VRAM mode).
    """

    steps: int = 12
    guidance_strength: float = 7.5
    guidance_rescale: float = 0.0
    guidance_interval: tuple[float, float] = (0.0, 1.0)
    rescale_t: float = 1.0
    sigma_min: float = 1e-5
    batched_cfg: bool = False
    cache_cond_kv: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.rescale_t <= 0:
            raise ValueError(f"rescale_t must be > 0, got {self.rescale_t}")
        lo, hi = self.guidance_interval
        if not lo <= hi:
            raise ValueError(f"guidance_interval must be (lo, hi), lo <= hi, got {self.guidance_interval}")
        if not 0.0 <= self.guidance_rescale <= 1.0:
            raise ValueError(f"guidance_rescale must lie in [0, 1], got {self.guidance_rescale}")

    @classmethod
    def from_config(cls, cfg: Any) -> SamplerParams:
        """From a strictly parsed ``pipeline.json`` entry (``backend.models.SamplerConfig``)."""
        return cls(steps=cfg.steps, guidance_strength=cfg.guidance_strength,
                   guidance_rescale=cfg.guidance_rescale, guidance_interval=tuple(cfg.guidance_interval),
                   rescale_t=cfg.rescale_t, sigma_min=cfg.sigma_min)

    def with_overrides(self, o: SamplerOverrides) -> SamplerParams:
        """A copy with every non-None field of ``o`` applied."""
        changes = {k: getattr(o, k) for k in ("steps", "guidance_strength", "guidance_rescale",
                                              "guidance_interval", "rescale_t")
                   if getattr(o, k) is not None}
        if "guidance_interval" in changes:
            changes["guidance_interval"] = tuple(float(v) for v in changes["guidance_interval"])
        return replace(self, **changes)


# The official pipeline.json's sampler settings, used when a release's file lacks an entry and in tests.
DEFAULT_SS = SamplerParams(*STAGE_SAMPLER_DEFAULTS["sparse_structure"], (0.6, 1.0), 5.0)
DEFAULT_SHAPE = SamplerParams(*STAGE_SAMPLER_DEFAULTS["shape"], (0.6, 1.0), 3.0)
DEFAULT_TEX = SamplerParams(*STAGE_SAMPLER_DEFAULTS["texture"], (0.6, 0.9), 3.0)


def make_generator(seed: int) -> torch.Generator:
    """The job's CPU generator (same stream as ``torch.manual_seed(seed)`` on CPU)."""
    return torch.Generator(device="cpu").manual_seed(int(seed))


def time_grid(steps: int, rescale_t: float) -> np.ndarray:
    """``[steps + 1]`` float64 times from 1 (noise) to 0 (data)."""
    tau = np.linspace(1.0, 0.0, steps + 1, dtype=np.float64)
    return rescale_t * tau / (1.0 + (rescale_t - 1.0) * tau)


def strength_at(t: float, params: SamplerParams) -> float:
    """The guidance strength used at time ``t`` (1 outside the inclusive interval)."""
    lo, hi = params.guidance_interval
    return params.guidance_strength if lo <= t <= hi else 1.0


def _feats(x: Latent) -> torch.Tensor:
    return x.feats if isinstance(x, SparseTensor) else x


def _wrap(like: Latent, value: torch.Tensor) -> Latent:
    return like.replace(value) if isinstance(like, SparseTensor) else value


def x0_from_v(x_t: torch.Tensor, t: float, v: torch.Tensor, sigma_min: float) -> torch.Tensor:
    return (1 - sigma_min) * x_t - (sigma_min + (1 - sigma_min) * t) * v


def v_from_x0(x_t: torch.Tensor, t: float, x0: torch.Tensor, sigma_min: float) -> torch.Tensor:
    return ((1 - sigma_min) * x_t - x0) / (sigma_min + (1 - sigma_min) * t)


def sample_std(x: Latent) -> torch.Tensor:
    """Per-sample standard deviation, broadcastable against ``_feats(x)``.

    Dense ``[B, ...]``: unbiased std over all non-batch dims -> ``[B, 1, ...]``.
    Sparse: population std over the sample's tokens x channels -> ``[N, 1]`` (one row per token).
    """
    if not isinstance(x, SparseTensor):
        return x.std(dim=list(range(1, x.ndim)), keepdim=True)
    f = x.feats if x.feats.dtype == torch.float64 else x.feats.float()  # [N, C]
    idx = x.batch_index  # [N]
    count = torch.bincount(idx, minlength=x.batch_size).to(f.dtype) * f.shape[1]  # [B]
    s1 = torch.zeros(x.batch_size, dtype=f.dtype, device=f.device).index_add_(0, idx, f.sum(1))
    s2 = torch.zeros(x.batch_size, dtype=f.dtype, device=f.device).index_add_(0, idx, (f * f).sum(1))
    mean = s1 / count
    std = (s2 / count - mean * mean).clamp_min(0).sqrt()  # [B]
    return std[idx][:, None].to(x.feats.dtype)  # [N, 1]


class StepReuse:
    """What one :func:`sample` call builds once and every step reuses.

    * the cross-attention K/V of each condition tensor, when the model's forward takes a
      ``cond_kv_cache`` (the flow DiTs): one :class:`~backend.models.CondKVCache` for the call,
      shared by both guidance branches;
    * for batched steps: the stacked conditions (one tensor per combination of conditions, so the
      K/V cache sees the same tensor at every step) and the copies' sparse coordinates with their
      coordinate cache (RoPE phases, attention layouts).

    Args:
        model: the network of this call (one stage).
        cache_kv: keep the K/V (``SamplerParams.cache_cond_kv``); False projects them at every step.
    """

    def __init__(self, model: ModelFn, cache_kv: bool = True) -> None:
        takes_cache = cache_kv and getattr(model, "takes_cond_kv_cache", False)
        self.kv_cache = CondKVCache() if takes_cache else None
        # key: the conditions' ids -> (the conditions, their versions, the stacked tensor)
        self._stacked: dict[tuple[int, ...], tuple[tuple[torch.Tensor, ...], tuple[int | None, ...],
                                                   torch.Tensor]] = {}
        self._coords: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, dict[str, Any]]] = {}

    def call(self, model: ModelFn, x: Latent, t_model: torch.Tensor, cond: torch.Tensor,
             kwargs: dict[str, Any]) -> Latent:
        """``model(x, t_model, cond, **kwargs)``, with the K/V cache where the model takes one."""
        if self.kv_cache is not None:
            return model(x, t_model, cond, cond_kv_cache=self.kv_cache, **kwargs)
        return model(x, t_model, cond, **kwargs)

    def stacked(self, conds: Sequence[torch.Tensor]) -> torch.Tensor:
        """``torch.cat(conds)`` on the batch axis, built once per combination of unchanged tensors."""
        key = tuple(id(c) for c in conds)
        versions = tuple(tensor_version(c) for c in conds)
        hit = self._stacked.get(key)
        if hit is None or hit[1] != versions or any(a is not b for a, b in zip(hit[0], conds)):
            hit = (tuple(conds), versions, torch.cat(list(conds)))
            self._stacked[key] = hit
        return hit[2]

    def copies(self, x: Latent, n: int) -> Latent:
        """``n`` copies of every sample of ``x`` as one batch of ``n * B`` (copy ``k``: samples ``kB..``)."""
        if not isinstance(x, SparseTensor):
            return torch.cat([x] * n)
        key = (id(x.coords), n)
        hit = self._coords.get(key)
        if hit is None or hit[0] is not x.coords:
            coords = x.coords.repeat(n, 1)  # [n N, 4]; copy k's batch indices shifted by k B
            shift = torch.arange(n, dtype=coords.dtype, device=coords.device).repeat_interleave(len(x))
            coords[:, 0] += shift * x.batch_size
            hit = (x.coords, coords, {})  # the dict is the copies' coordinate cache, kept for the call
            self._coords[key] = hit
        return SparseTensor(hit[1], x.feats.repeat(n, 1), n * x.batch_size, hit[2])

    def copies_of_kwarg(self, value: Any, n: int, batch: int) -> Any:
        """A per-sample keyword argument for the batch of ``n`` copies: sparse tensors and tensors
        with ``batch`` rows are repeated like the latent; anything else is passed as it is."""
        if isinstance(value, SparseTensor):
            return self.copies(value, n)
        if isinstance(value, torch.Tensor):
            if value.ndim == 0 or value.shape[0] != batch:
                raise ValueError(f"cannot batch a tensor argument of shape {tuple(value.shape)} for "
                                 f"{batch} samples; run the passes one by one (batched_cfg off)")
            return torch.cat([value] * n)
        return value

    def passes(self, model: ModelFn, x: Latent, t_model: torch.Tensor, conds: Sequence[torch.Tensor],
               batched: bool, kwargs: dict[str, Any]) -> list[torch.Tensor]:
        """The velocity features of ``x`` under each condition of ``conds``, in order."""
        if not batched or len(conds) == 1 or len({tuple(c.shape) for c in conds}) != 1:
            # Conditions of different token counts cannot share a batch: one call each.
            return [_feats(self.call(model, x, t_model, c, kwargs)) for c in conds]
        n, b = len(conds), _batch_size(x)
        kw = {k: self.copies_of_kwarg(v, n, b) for k, v in kwargs.items()}
        out = _feats(self.call(model, self.copies(x, n), t_model.repeat(n), self.stacked(conds), kw))
        rows = out.shape[0] // n  # sparse: N tokens per copy; dense: B samples per copy
        return [out[k * rows:(k + 1) * rows] for k in range(n)]


def guided_velocity(model: ModelFn, x: Latent, t: float, cond: torch.Tensor | Sequence[torch.Tensor],
                    neg_cond: torch.Tensor, strength: float, rescale: float, sigma_min: float, *,
                    batched: bool = False, reuse: StepReuse | None = None, **kwargs: Any) -> Latent:
    """The network's velocity at ``(x, t)`` with CFG of ``strength`` and guidance ``rescale``.

    ``cond`` may be a sequence of view conditions: their conditional velocities are averaged
    (multidiffusion) before guidance. ``batched``: the passes run as one network call (see the
    module docstring). ``reuse``: the :func:`sample` call's :class:`StepReuse` (None: a new one,
    nothing reused). ``kwargs`` go to every network call.
    """
    reuse = StepReuse(model) if reuse is None else reuse
    t_model = torch.full((_batch_size(x),), 1000.0 * t, dtype=torch.float32, device=_feats(x).device)
    views = [cond] if isinstance(cond, torch.Tensor) else list(cond)
    if strength == 0.0:
        return reuse.call(model, x, t_model, neg_cond, kwargs)
    guided = strength != 1.0
    outs = reuse.passes(model, x, t_model, [*views, neg_cond] if guided else views, batched, kwargs)
    v_pos = outs[0]
    for v_view in outs[1:len(views)]:
        v_pos = v_pos + v_view
    if len(views) > 1:
        v_pos = v_pos / len(views)
    if not guided:
        return _wrap(x, v_pos)
    v_neg = outs[-1]
    v = strength * v_pos + (1 - strength) * v_neg
    if rescale > 0:
        xt = _feats(x)
        x0_pos = x0_from_v(xt, t, v_pos, sigma_min)
        x0_cfg = x0_from_v(xt, t, v, sigma_min)
        ratio = sample_std(_wrap(x, x0_pos)) / sample_std(_wrap(x, x0_cfg))
        x0 = rescale * (x0_cfg * ratio) + (1 - rescale) * x0_cfg
        v = v_from_x0(xt, t, x0, sigma_min)
    return _wrap(x, v)


def _batch_size(x: Latent) -> int:
    return x.batch_size if isinstance(x, SparseTensor) else int(x.shape[0])


def step_condition(cond: Condition, step: int) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """What step ``step`` is conditioned on: one tensor, or all views to average."""
    if not isinstance(cond, MultiViewCond):
        return cond
    if cond.mode == "stochastic":
        return cond.views[step % len(cond.views)]
    return cond.views


def sample(model: ModelFn, noise: Latent, cond: Condition, neg_cond: torch.Tensor,
           params: SamplerParams, *, on_step: StepCallback | None = None,
           cancel: CancelToken | None = None, **kwargs: Any) -> Latent:
    """Integrate from ``noise`` (t = 1) to t = 0 with ``params.steps`` Euler steps.

    Args:
        model: ``model(x_t, t_model, cond, **kwargs)`` -> velocity (same type as ``x_t``).
        noise: dense ``[B, C, ...]`` tensor or :class:`SparseTensor` with B samples.
        cond, neg_cond: ``[B, T, D]`` conditioning tokens (batch matching ``noise``); ``cond``
            may be a :class:`MultiViewCond` of several pictures.
        on_step: called after every step with ``(done, total)``.
        cancel: checked before every step (raises :class:`Cancelled`).
        kwargs: passed to every model call (e.g. ``concat_cond`` for the texture model).

    ``params.batched_cfg`` chooses how a step's passes run (see the module docstring).
    """
    ts = time_grid(params.steps, params.rescale_t)
    reuse = StepReuse(model, params.cache_cond_kv)  # dropped with this call, and the K/V with it
    x = noise
    for i in range(params.steps):
        if cancel is not None:
            cancel.check()
        t, t_next = float(ts[i]), float(ts[i + 1])
        v = guided_velocity(model, x, t, step_condition(cond, i), neg_cond, strength_at(t, params),
                            params.guidance_rescale, params.sigma_min, batched=params.batched_cfg,
                            reuse=reuse, **kwargs)
        x = _wrap(x, _feats(x) - (t - t_next) * _feats(v))
        if on_step is not None:
            on_step(i + 1, params.steps)
    return x
