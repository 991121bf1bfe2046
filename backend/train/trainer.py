"""The training loop every trainer shares: DDP, AdamW, EMA, adaptive clipping, bf16, checkpoints, logs.

One step: for each of ``batch_split`` micro-batches, forward the objective and backward
``loss / batch_split`` (DDP synchronises only on the last); then the global gradient norm is
clipped (:class:`AdaptiveGradClipper`), a step with a non-finite norm is skipped, AdamW updates
the fp32 master weights and the EMA copy follows. Activations run in bf16 autocast.

Checkpoints (``OUTPUT/ckpts/step_{step:07d}.pt``, rank 0, written to a temporary file and renamed)
hold the raw and EMA weights, the optimizer, the clipper's norm buffer and every RNG state of
every rank. Which data a step uses depends only on the step number (``datasets.StepPlan``), so
``resume`` continues exactly where the checkpoint was taken: the next step's weights are
bit-identical to an uninterrupted run's on the same machine.

Outputs: ``config.json``, ``log.jsonl`` (one JSON line per logged step), ``loss.png`` (curves),
``ckpts/``, and ``export/NAME.{json,safetensors}`` (the EMA weights in the official checkpoint
layout and stored dtypes, loadable by the inference pipeline unchanged).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from backend.fileio import write_atomic
from backend.models.loading import CheckpointError, copy_checkpoint_into
from backend.models.registry import model_class

from .conditioning import ConditionCache, load_image_encoder, save_image_encoder
from .config import ConfigError, TrainConfig, split_args
from .datasets import StepBatches, StepPlan, build_dataset
from .init import initialize
from .latent_scale import channel_rms, describe, fold_latent_scale
from .objectives import trainer_entry
from .plots import plot_losses
from .probe import TRAINING_ONLY_MODELS
from .release import export_checkpoint

log = logging.getLogger(__name__)

CKPT_PREFIX = "step_"
PROFILE_WARMUP_STEPS = 3
LATENT_SCALE_ITEMS = 256  # training objects the exported SS VAE's latent scale is measured on


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job (torchrun's RANK / WORLD_SIZE / LOCAL_RANK)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class AdaptiveGradClipper:
    """Clip the global gradient norm to ``min(max_norm, percentile of the last buffer_size norms)``.

    Until ``buffer_size`` finite norms have been seen, the threshold is ``max_norm``.
    """

    def __init__(self, max_norm: float, percentile: float, buffer_size: int) -> None:
        self.max_norm, self.percentile, self.buffer_size = max_norm, percentile, buffer_size
        self.norms: collections.deque[float] = collections.deque(maxlen=buffer_size)

    @property
    def threshold(self) -> float:
        if len(self.norms) < self.buffer_size:
            return self.max_norm
        return min(self.max_norm, float(np.percentile(np.asarray(self.norms), self.percentile)))

    def __call__(self, params: list[nn.Parameter]) -> tuple[float, float]:
        """Clip in place; returns (pre-clip norm, threshold used)."""
        tau = self.threshold
        norm = float(torch.nn.utils.clip_grad_norm_(params, tau))
        if math.isfinite(norm):
            self.norms.append(norm)
        return norm, tau

    def state_dict(self) -> dict:
        return {"norms": list(self.norms)}

    def load_state_dict(self, state: dict) -> None:
        self.norms = collections.deque(state["norms"], maxlen=self.buffer_size)


def training_args(spec_args: dict) -> dict:
    """Constructor args for training: fp32 parameters everywhere (bf16 comes from autocast)."""
    args = dict(spec_args)
    if "use_fp16" in args:
        args["use_fp16"] = False
    if "dtype" in args:
        args["dtype"] = "float32"
    return args


def build_networks(config: TrainConfig) -> dict[str, nn.Module]:
    """Instantiate every ``models`` entry with training args; bad args are ``ConfigError``."""
    nets = {}
    for key, spec in config.models.items():
        try:
            cls = TRAINING_ONLY_MODELS.get(spec.name) or model_class(spec.name)
            nets[key] = cls(**training_args(spec.args))
        except (TypeError, ValueError, IndexError, KeyError) as exc:  # e.g. per-level lists too short
            raise ConfigError(f"{config.path}: models.{key}.args: {exc}") from exc
    return nets


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def release_sources(release: str | Path, release_names: dict[str, str],
                    config_path: Path | str) -> dict[str, str]:
    """Model key -> checkpoint stem in ``release/ckpts`` for every released name found there.

    Raises:
        ConfigError: the config names no released networks, or none of them is in the release.
    """
    ckpts = Path(release) / "ckpts"
    if not release_names:
        raise ConfigError(
            f"--init-from: {config_path} names no released networks (trainer.args.release_names)")
    found = {key: str(ckpts / name) for key, name in release_names.items()
             if (ckpts / f"{name}.json").is_file() and (ckpts / f"{name}.safetensors").is_file()}
    if not found:
        names = ", ".join(f"{n}.json" for n in release_names.values())
        raise ConfigError(f"--init-from: {ckpts} has none of this run's networks ({names})")
    return found


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    found = sorted(ckpt_dir.glob(f"{CKPT_PREFIX}*.pt"))
    return found[-1] if found else None


class Trainer:
    """Runs one config to ``max_steps`` (see the module docstring).

    Args:
        config: the parsed config.
        output: the run folder (created).
        data_dir: the data-toolkit folder.
        device: compute device for this rank.
        dist_info: rank / world size (1 process: the default).
        image_encoder: overrides ``trainer.args.image_cond_model`` (flows only).
        resume: continue from the newest checkpoint in ``output/ckpts`` (error if there is none).
        init_from: a release folder (the official layout) to start a new run from: each network
            whose ``trainer.args.release_names`` entry is in ``init_from/ckpts`` starts from those
            weights (:func:`release_sources`); ``finetune_ckpt`` entries take precedence. A resumed
            run ignores it.
    """

    def __init__(
        self,
        config: TrainConfig,
        output: str | Path,
        data_dir: str | Path,
        *,
        device: torch.device | str = "cpu",
        dist_info: DistInfo = DistInfo(),  # noqa: B008
        image_encoder: str | None = None,
        resume: bool = False,
        init_from: str | Path | None = None,
    ) -> None:
        self.config = config
        self.output = Path(output)
        self.device = torch.device(device)
        self.dist = dist_info
        objective_cls, args_cls = trainer_entry(config.trainer.name, config.path)
        self.loop, self.objective_args = split_args(
            config.trainer.args, args_cls, f"{config.path}: trainer.args"
        )
        if image_encoder is not None:
            if not hasattr(self.objective_args, "image_cond_model"):
                raise ConfigError(f"--image-encoder: trainer {config.trainer.name} takes no image condition")
            self.objective_args = type(self.objective_args)(
                **{**self.objective_args.__dict__, "image_cond_model": image_encoder}
            )
        for setting in ("release_names", "finetune_ckpt"):
            unknown = set(getattr(self.loop, setting)) - set(config.models)
            if unknown:
                raise ConfigError(
                    f"{config.path}: trainer.args.{setting} names no model {sorted(unknown)[0]!r}")

        torch.manual_seed(self.loop.seed + self.dist.rank)
        np.random.seed(self.loop.seed + self.dist.rank)
        random.seed(self.loop.seed + self.dist.rank)

        self.dataset = build_dataset(
            config.dataset.name, config.dataset.args, data_dir, config.path, context={"seed": self.loop.seed}
        )
        self.nets = build_networks(config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.loop.seed)  # identical initial weights on every rank
            for net in self.nets.values():
                initialize(net)
        if not resume:  # a resumed run's weights come from its own checkpoint
            sources = dict(self.loop.finetune_ckpt)
            if init_from is not None:
                sources = {**release_sources(init_from, self.loop.release_names, config.path), **sources}
            for key in sorted(set(self.nets) - set(sources)):
                log.info("%s starts from its initialisation", key)
            for key, source in sources.items():
                try:
                    copy_checkpoint_into(self.nets[key], source)
                except CheckpointError as exc:
                    raise ConfigError(f"{config.path}: trainer.args.finetune_ckpt.{key}: {exc}") from exc
        for net in self.nets.values():
            if self.loop.gradient_checkpointing and hasattr(net, "set_gradient_checkpointing"):
                net.set_gradient_checkpointing(True)
            if self.loop.conv_backend != "auto" and hasattr(net, "set_conv_backend"):
                net.set_conv_backend(self.loop.conv_backend)
            if self.loop.compile:
                # In place, so state_dict keys, EMA, checkpoints and the export stay as they are.
                net.compile()
        trains_encoder = getattr(objective_cls, "always_trains_image_encoder", False) or getattr(
            self.objective_args, "train_image_encoder", False)
        encoder = None
        if self.dataset.needs_condition:
            encoder = load_image_encoder(self.objective_args.image_cond_model, self.device)
            if trains_encoder:
                model = encoder.model.float().requires_grad_(True)
                # The readout never uses the mask token or the final norm (it applies its own
                # parameter-free LayerNorm): parameters without gradients would stall DDP.
                for p in (model.embeddings.mask_token, *model.norm.parameters()):
                    p.requires_grad_(False)
                self.nets["image_encoder"] = model
        elif trains_encoder:
            raise ConfigError(
                f"{config.path}: trainer.args.train_image_encoder: the dataset has no image condition")
        self.objective = objective_cls(self.nets, self.objective_args).to(self.device)
        self.params = [p for p in self.objective.parameters() if p.requires_grad]
        self.ema = {
            k: {n: t.detach().clone() for n, t in net.state_dict().items()} for k, net in self.nets.items()
        }
        opt = self.loop.optimizer
        self.optimizer = torch.optim.AdamW(
            self.params, lr=opt.lr, betas=tuple(opt.betas), eps=opt.eps, weight_decay=opt.weight_decay
        )
        clip = self.loop.grad_clip
        self.clipper = AdaptiveGradClipper(clip.max_norm, clip.clip_percentile, clip.buffer_size)
        self.step = 0
        self.model = self.objective
        if self.dist.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(
                self.objective, device_ids=ids, bucket_cap_mb=128
            )
        self.condition = None
        if encoder is not None:
            self.condition = ConditionCache(
                encoder,
                self.dataset.data_dir,
                [r["id"] for r in self.dataset.records],
                [self.dataset.views_of(i) for i in range(len(self.dataset))],
                self.dataset.args.image_size,
                self.device,
                pixels=trains_encoder,
            )
            del encoder
        self.ckpt_dir = self.output / "ckpts"
        if resume:
            self._resume()
        elif latest_checkpoint(self.ckpt_dir) is not None:
            raise ConfigError(
                f"{self.ckpt_dir} already holds checkpoints: pass --resume to continue that run, "
                "or choose a new --output"
            )

    # ------------------------------------------------------------------ checkpoints
    def _resume(self) -> None:
        path = latest_checkpoint(self.ckpt_dir)
        if path is None:
            raise ConfigError(f"--resume: no checkpoint in {self.ckpt_dir}")
        state = torch.load(path, map_location="cpu", weights_only=False)
        for key, net in self.nets.items():
            try:
                net.load_state_dict(state["nets"][key])
            except (KeyError, RuntimeError) as exc:
                raise ConfigError(f"{path}: model {key!r} does not match the config: {exc}") from exc
            self.ema[key] = {n: t.to(self.device) for n, t in state["ema"][key].items()}
        self.optimizer.load_state_dict(state["optimizer"])
        self.clipper.load_state_dict(state["clipper"])
        if len(state["rng"]) != self.dist.world_size:
            log.warning("%s was written by %d rank(s), this run has %d: training continues, but not "
                        "bit-identically (data order and noise depend on the world size)", path,
                        len(state["rng"]), self.dist.world_size)
        rng = state["rng"][self.dist.rank % len(state["rng"])]
        _set_rng_state(rng)
        self.step = int(state["step"])
        log.info("resumed from %s at step %d", path, self.step)

    def save_checkpoint(self) -> Path | None:
        """Write ``ckpts/step_N.pt`` on rank 0 (every rank contributes its RNG state)."""
        rng = [_rng_state()]
        if self.dist.world_size > 1:
            gathered: list[Any] = [None] * self.dist.world_size
            dist.all_gather_object(gathered, rng[0])
            rng = gathered
        if not self.dist.is_main:
            return None
        state = {
            "step": self.step,
            "nets": {k: net.state_dict() for k, net in self.nets.items()},
            "ema": self.ema,
            "optimizer": self.optimizer.state_dict(),
            "clipper": self.clipper.state_dict(),
            "rng": rng,
            "config": self.config.to_json(),
        }
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        path = self.ckpt_dir / f"{CKPT_PREFIX}{self.step:07d}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        for old in sorted(self.ckpt_dir.glob(f"{CKPT_PREFIX}*.pt"))[: -self.loop.keep_checkpoints]:
            old.unlink()
        self.export()
        return path

    def export(self) -> None:
        """:meth:`export_state` of every network with a release name, in the official layout, into
        ``export/``."""
        state = self.export_state()
        for key, name in self.loop.release_names.items():
            export_checkpoint(self.config.models[key], state[key], self.output / "export", name)
        if "image_encoder" in self.nets:
            save_image_encoder(self.nets["image_encoder"], self.ema["image_encoder"],
                               self.output / "export" / "image_encoder")

    def export_state(self) -> dict[str, dict[str, torch.Tensor]]:
        """What the export writes: the EMA weights, with the SS VAE's latent scale folded in when
        ``trainer.args.standardize_latents`` is on (see :meth:`_unit_scale_latents`)."""
        if getattr(self.objective_args, "standardize_latents", False):
            return self._unit_scale_latents(self.ema)
        return self.ema

    def _unit_scale_latents(self, ema: dict[str, dict[str, torch.Tensor]]
                            ) -> dict[str, dict[str, torch.Tensor]]:
        """``ema`` with the SS VAE's latent RMS, measured on the first training objects, folded into
        its encoder and decoder (written to ``latent_scale.json`` too); the training weights stay."""
        items = list(range(min(len(self.dataset), LATENT_SCALE_ITEMS)))
        size = self.loop.batch_size_per_gpu
        batches = (self.dataset.collate(items[i:i + size], 0)["occupancy"]
                   for i in range(0, len(items), size))
        encoder = self.nets["encoder"]
        was_training = encoder.training
        encoder.eval()
        try:
            scale = channel_rms(encoder, ema["encoder"], batches, self.device)
        finally:
            encoder.train(was_training)
        log.info("step %d: %s", self.step, describe(scale))
        write_atomic(self.output / "latent_scale.json",
                     json.dumps({"step": self.step, "items": len(items), "rms": scale.tolist()}).encode())
        encoder_state, decoder_state = fold_latent_scale(ema["encoder"], ema["decoder"], scale)
        return {**ema, "encoder": encoder_state, "decoder": decoder_state}

    # ------------------------------------------------------------------ the loop
    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        out = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        if self.condition is not None:
            key = "pixels" if self.condition.pixels else "cond"
            out[key] = self.condition.lookup(out.pop("item"), out.pop("view"))
        return out

    def _autocast(self):
        enabled = self.loop.mix_precision == "bf16"
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=enabled)

    @torch.no_grad()
    def _update_ema(self) -> None:
        rate = self.loop.ema_rate
        for key, net in self.nets.items():
            ema = self.ema[key]
            for name, value in net.state_dict().items():
                if value.dtype.is_floating_point:
                    ema[name].mul_(rate).add_(value, alpha=1 - rate)
                else:
                    ema[name].copy_(value)

    def train_step(self, micro_batches: list[dict[str, Any]]) -> dict[str, float]:
        """One optimisation step over this rank's micro-batches; returns averaged logs."""
        self.objective.train()
        self.optimizer.zero_grad(set_to_none=True)
        logs: dict[str, float] = collections.defaultdict(float)
        n = len(micro_batches)
        for i, mb in enumerate(micro_batches):
            mb = self._to_device(mb)
            sync = self.dist.world_size == 1 or i == n - 1
            ctx = contextlib.nullcontext() if sync else self.model.no_sync()
            with ctx:
                with self._autocast():
                    loss, parts = self.model(mb)
                (loss / n).backward()
            for k, v in parts.items():
                logs[k] += v / n
        norm, tau = self.clipper(self.params)
        lr = self.loop.optimizer.lr * self.loop.lr_schedule.factor(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if math.isfinite(norm):
            self.optimizer.step()
        else:
            logs["skipped"] = 1.0
            self.optimizer.zero_grad(set_to_none=True)
        self._update_ema()
        self.step += 1
        logs.update(grad_norm=norm, clip=tau, lr=lr)
        return dict(logs)

    def _loader(self) -> torch.utils.data.DataLoader:
        plan = StepPlan(
            len(self.dataset),
            self.loop.batch_size_per_gpu,
            self.dist.world_size,
            self.dist.rank,
            self.loop.seed,
        )
        steps = StepBatches(self.dataset, plan, self.loop.batch_split, self.step, self.loop.max_steps)
        workers = self.loop.num_workers
        # A private generator: the loader must not draw from the global RNG the objectives use.
        return torch.utils.data.DataLoader(
            steps,
            batch_size=None,
            shuffle=False,
            num_workers=workers,
            persistent_workers=False,
            prefetch_factor=4 if workers else None,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(0),
        )

    def _start_profiler(self):
        activities = [torch.profiler.ProfilerActivity.CPU]
        if self.device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        profiler = torch.profiler.profile(activities=activities)
        profiler.__enter__()
        return profiler

    def _write_profile(self, profiler) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        profiler.__exit__(None, None, None)
        key = "self_cuda_time_total" if self.device.type == "cuda" else "self_cpu_time_total"
        table = profiler.key_averages().table(sort_by=key, row_limit=40)
        if self.dist.is_main:
            write_atomic(self.output / "profile.txt", table.encode())
            log.info("wrote %s", self.output / "profile.txt")

    def _out_of_time(self, t0: float, max_minutes: float) -> bool:
        flag = torch.tensor([float(time.perf_counter() - t0 > 60 * max_minutes)], device=self.device)
        if self.dist.world_size > 1:
            dist.broadcast(flag, 0)
        return bool(flag.item())

    def run(
        self, max_steps: int | None = None, max_minutes: float | None = None, profile_steps: int = 0
    ) -> None:
        """Train until ``max_steps`` (default: the config's) or, when given, ``max_minutes`` of wall time.

        Checkpoints every ``i_save`` steps and at the end. With several ranks, rank 0's clock decides
        (broadcast), so every rank stops at the same step. ``profile_steps > 0`` records that many steps,
        after three warm-up steps, with ``torch.profiler`` and writes the op table to ``profile.txt``.
        """
        stop = self.loop.max_steps if max_steps is None else min(max_steps, self.loop.max_steps)
        if self.dist.is_main:
            self.output.mkdir(parents=True, exist_ok=True)
            (self.output / "config.json").write_text(json.dumps(self.config.to_json(), indent=2))
        log_path = self.output / "log.jsonl"
        window: list[dict[str, float]] = []
        t0 = time.perf_counter()
        samples = 0
        start = self.step
        profiler = None
        for micro_batches in self._loader():
            if self.step >= stop:
                break
            profiling = profile_steps > 0 and self.step == start + PROFILE_WARMUP_STEPS
            if profiling:
                profiler = self._start_profiler()
            logs = self.train_step(micro_batches)
            if profiler is not None and self.step == start + PROFILE_WARMUP_STEPS + profile_steps:
                self._write_profile(profiler)
                profiler = None
            samples += (
                sum(
                    int(mb.get("batch_size", len(mb.get("x0", mb.get("occupancy", [])))))
                    for mb in micro_batches
                )
                * self.dist.world_size
            )
            window.append(logs)
            if self.step % self.loop.i_log == 0 or self.step == stop:
                elapsed = time.perf_counter() - t0
                record = {
                    "step": self.step,
                    # every key of the window: "skipped" appears only on the steps it happened
                    **{k: float(np.mean([w.get(k, 0.0) for w in window])) for k in dict.fromkeys(
                        k for w in window for k in w)},
                    "samples_per_s": samples / max(elapsed, 1e-9),
                    "elapsed_s": elapsed,
                }
                if self.device.type == "cuda":
                    record["peak_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
                if self.dist.is_main and hasattr(self.objective, "condition_gap"):
                    with self._autocast():
                        record.update(self.objective.condition_gap(self._to_device(micro_batches[0])))
                window.clear()
                if self.dist.is_main:
                    with log_path.open("a") as fh:
                        fh.write(json.dumps(record) + "\n")
                    log.info(
                        "step %d: %s",
                        self.step,
                        ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "step"),
                    )
            if max_minutes is not None and self._out_of_time(t0, max_minutes):
                log.info("time limit of %.1f min reached at step %d", max_minutes, self.step)
                break
            if self.step % self.loop.i_save == 0 and self.step != stop:
                self.save_checkpoint()
        if profiler is not None:  # the run ended inside the profiled window
            self._write_profile(profiler)
        self.save_checkpoint()
        if self.dist.is_main:
            if log_path.exists():
                plot_losses(log_path, self.output / "loss.png", title=self.config.trainer.name)
            # A finished run (max_steps or the time limit); wrappers use it to skip the stage.
            write_atomic(self.output / "done.json", json.dumps({"step": self.step}).encode())
