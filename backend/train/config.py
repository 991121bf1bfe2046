"""Training configs: the reference's JSON schema (``models`` / ``dataset`` / ``trainer``), read strictly.

A config file is::

    {
      "models":  {"denoiser": {"name": "SLatFlowModel", "args": {...}}},      # or encoder/decoder
      "dataset": {"name": "ImageConditionedSLatShape", "args": {...}},
      "trainer": {"name": "ImageConditionedSparseFlowMatchingCFGTrainer", "args": {...}}
    }

Every unknown key, every missing key and every value of the wrong type is an error that names
the file and the key (``ConfigError``): a silently ignored field is how a run drifts from what
its author meant. Model names are the official class names of ``backend.models.registry``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.models.pipeline_config import ComponentSpec
from backend.models.registry import known_model_names
from backend.protocol import build_dataclass

from .probe import TRAINING_ONLY_MODELS


class ConfigError(ValueError):
    """A training config (or a value given on the command line) is invalid; says which and why."""


@dataclass(frozen=True)
class TrainConfig:
    """A parsed config file. ``path`` is where it was read from (for messages)."""

    models: dict[str, ComponentSpec]
    dataset: ComponentSpec
    trainer: ComponentSpec
    path: str = "<config>"

    def to_json(self) -> dict[str, Any]:
        return {
            "models": {k: {"name": m.name, "args": m.args} for k, m in self.models.items()},
            "dataset": {"name": self.dataset.name, "args": self.dataset.args},
            "trainer": {"name": self.trainer.name, "args": self.trainer.args},
        }


def _object(value: Any, where: str, required: set[str], optional: set[str] = frozenset()) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected an object, got {type(value).__name__}")
    missing = sorted(required - set(value))
    unknown = sorted(set(value) - required - set(optional))
    if missing:
        raise ConfigError(f"{where}: missing key {missing[0]!r}")
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}")
    return value


def parse_config(data: Any, where: str = "<config>") -> TrainConfig:
    """Validate the three sections of an already-parsed config (see the module docstring)."""
    top = _object(data, where, {"models", "dataset", "trainer"})
    models_raw = top["models"]
    if not isinstance(models_raw, dict) or not models_raw:
        raise ConfigError(f"{where}: 'models' must be a non-empty object")
    models = {}
    known = set(known_model_names()) | set(TRAINING_ONLY_MODELS)
    for key, spec in models_raw.items():
        spec = _object(spec, f"{where}: models.{key}", {"name", "args"})
        if spec["name"] not in known:
            raise ConfigError(
                f"{where}: models.{key}.name: unknown model {spec['name']!r}; "
                f"known: {', '.join(sorted(known))}"
            )
        if not isinstance(spec["args"], dict):
            raise ConfigError(f"{where}: models.{key}.args: expected an object")
        models[key] = ComponentSpec(spec["name"], dict(spec["args"]))
    sections = {}
    for section in ("dataset", "trainer"):
        spec = _object(top[section], f"{where}: {section}", {"name", "args"})
        if not isinstance(spec["name"], str) or not isinstance(spec["args"], dict):
            raise ConfigError(f"{where}: {section}: 'name' must be a string and 'args' an object")
        sections[section] = ComponentSpec(spec["name"], dict(spec["args"]))
    return TrainConfig(models, sections["dataset"], sections["trainer"], where)


def read_config(path: str | Path) -> TrainConfig:
    """Read and validate a config file; errors name the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from exc
    return parse_config(data, str(path))


# ---------------------------------------------------------------------------- typed args
def typed_args(cls: type, raw: Any, where: str):
    """Build dataclass ``cls`` from a JSON object; unknown keys and wrong types are ``ConfigError``.

    Fields without a default are required; nested dataclass fields take nested objects; integers
    are taken where a float is expected. A value the class's ``__post_init__`` refuses is a
    ``ConfigError`` naming ``where``. The checks and messages are the job contract's
    (:func:`backend.protocol.build_dataclass`), with no bound on string or list lengths.
    """
    return build_dataclass(cls, raw, where, error=ConfigError)


@dataclass(frozen=True)
class OptimizerArgs:
    """AdamW settings (the reference's flows: betas (0.9, 0.95), weight decay 0.01; VAEs: defaults, 0)."""

    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")


@dataclass(frozen=True)
class GradClipArgs:
    """Adaptive clipping: ``max_norm`` until ``buffer_size`` norms are known, then min(it, percentile)."""

    max_norm: float = 1.0
    clip_percentile: float = 95.0
    buffer_size: int = 1000


LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class LrScheduleArgs:
    """The learning rate over the steps of a run.

    "constant" (the reference recipe): the optimizer's ``lr`` throughout. "cosine": from ``lr`` at
    step 0 down a half cosine to ``lr * final_ratio`` at step ``steps``, then held there; for
    runs of a fixed, short length (continuing a release for a few minutes), where ending at a
    small rate settles the weights. The rate depends on the step number alone, so a resumed run
    follows the same curve.
    """

    name: str = "constant"
    steps: int = 0
    final_ratio: float = 0.05

    def __post_init__(self) -> None:
        if self.name not in LR_SCHEDULES:
            raise ValueError(f"name must be one of {', '.join(LR_SCHEDULES)}, got {self.name!r}")
        if self.name == "cosine" and self.steps < 1:
            raise ValueError(f"a cosine schedule needs steps >= 1, got {self.steps}")
        if not 0.0 <= self.final_ratio <= 1.0:
            raise ValueError(f"final_ratio must lie in [0, 1], got {self.final_ratio}")

    def factor(self, step: int) -> float:
        """The multiplier of the optimizer's ``lr`` for the update made at ``step`` (0-based)."""
        if self.name == "constant":
            return 1.0
        progress = min(step, self.steps) / self.steps
        return self.final_ratio + (1.0 - self.final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class LoopArgs:
    """Settings every trainer shares (the ``trainer.args`` keys not specific to an objective)."""

    max_steps: int
    batch_size_per_gpu: int
    batch_split: int = 1
    optimizer: OptimizerArgs = OptimizerArgs()
    lr_schedule: LrScheduleArgs = LrScheduleArgs()
    ema_rate: float = 0.9999
    grad_clip: GradClipArgs = GradClipArgs()
    mix_precision: str = "bf16"  # "bf16": fp32 master weights, bf16 autocast; "fp32": no autocast
    gradient_checkpointing: bool = False
    compile: bool = False  # torch.compile each network in place (weights and their names unchanged)
    conv_backend: str = "auto"  # sparse convs: "auto" (Triton on CUDA), "torch", "im2col" or "triton"
    i_log: int = 10
    i_save: int = 1000
    keep_checkpoints: int = 2
    seed: int = 0
    num_workers: int = 0
    release_names: dict = field(default_factory=dict)  # model key -> released checkpoint name
    # model key -> checkpoint stem (NAME.json + NAME.safetensors) a new run starts from (fine-tuning)
    finetune_ckpt: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.batch_size_per_gpu < 1 or self.batch_split < 1:
            raise ValueError("max_steps, batch_size_per_gpu and batch_split must be >= 1")
        if self.batch_split > self.batch_size_per_gpu:
            raise ValueError(
                f"batch_split {self.batch_split} exceeds batch_size_per_gpu {self.batch_size_per_gpu}"
            )
        if self.mix_precision not in ("bf16", "fp32"):
            raise ValueError(f"mix_precision must be 'bf16' or 'fp32', got {self.mix_precision!r}")
        if not 0.0 <= self.ema_rate < 1.0:
            raise ValueError(f"ema_rate must lie in [0, 1), got {self.ema_rate}")
        if self.conv_backend not in ("auto", "torch", "im2col", "triton"):
            raise ValueError(f"conv_backend must be auto, torch, im2col or triton, got {self.conv_backend!r}")
        if self.i_log < 1 or self.i_save < 1 or self.keep_checkpoints < 1:
            raise ValueError("i_log, i_save and keep_checkpoints must be >= 1")


def split_args(raw: dict, objective_cls: type, where: str) -> tuple[LoopArgs, Any]:
    """Split ``trainer.args`` into the shared :class:`LoopArgs` and the objective's own dataclass."""
    loop_keys = {f.name for f in dataclasses.fields(LoopArgs)}
    loop = typed_args(LoopArgs, {k: v for k, v in raw.items() if k in loop_keys}, where)
    own = typed_args(objective_cls, {k: v for k, v in raw.items() if k not in loop_keys}, where)
    return loop, own
