"""Where models come from and where they live: the release folder, loading, device placement.

:class:`Runtime` is the explicit settings object (device, low-VRAM, offline,
model source). :class:`ModelStore` resolves the release (a local folder or a
Hugging Face repo id, downloaded on first use unless offline), reads
``pipeline.json`` / ``texturing_pipeline.json`` through ``backend.models``,
loads each network once, and keeps it on the accelerator when it fits; in
low-VRAM mode every network stays on the CPU and :meth:`ModelStore.on_device`
moves it over for one stage only.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import ModelUnavailableError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "microsoft/TRELLIS.2-4B"


@dataclass(frozen=True)
class Runtime:
    """Execution settings of a generator.

    Args:
        model: local release folder or Hugging Face repo id.
        device: torch device string ("cuda", "cuda:1", "cpu").
        low_vram: keep networks on the CPU and move each to the device only for its stage.
        offline: never touch the network; the release must be local or in the HF cache.
        dtype: None keeps the checkpoints' precision policy (bf16/fp16 blocks) on CUDA; on
            CPU everything runs in float32.
        attention_backend: passed to the flow models' ``set_attention_backend`` when set.
        dependencies: Hugging Face repo id -> local folder for models the release refers to
            (DINOv3, the TRELLIS v1 sparse-structure decoder repo); used instead of the hub.
    """

    model: str = DEFAULT_MODEL
    device: str = "cuda"
    low_vram: bool = False
    offline: bool = False
    dtype: torch.dtype | None = None
    attention_backend: str | None = None
    dependencies: Mapping[str, str] = field(default_factory=dict)

    @property
    def load_dtype(self) -> torch.dtype | None:
        return torch.float32 if self.device == "cpu" and self.dtype is None else self.dtype


def resolve_release(model: str, offline: bool) -> Path:
    """The local release folder for ``model`` (downloading the pipeline files unless offline).

    Raises:
        ModelUnavailableError: offline without a local copy, or the hub refused.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "pipeline.json").is_file():
            raise ModelUnavailableError(f"{path} has no pipeline.json",
                                        "point --model at a TRELLIS.2 release folder")
        return path
    if path.suffix == ".json" or model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise ModelUnavailableError(f"model folder {model} does not exist",
                                    "pass --model PATH to a local TRELLIS.2-4B folder or a repo id")
    from huggingface_hub import snapshot_download

    try:
        root = snapshot_download(model, allow_patterns=["pipeline.json", "texturing_pipeline.json"],
                                 local_files_only=offline)
    except Exception as e:  # hub errors come in many classes; all mean "not available"
        how = ("it is not in the local Hugging Face cache and --offline forbids downloading"
               if offline else f"the download failed ({type(e).__name__}: {str(e).splitlines()[0]})")
        raise ModelUnavailableError(
            f"cannot get {model}: {how}",
            f"download it once (e.g. `hf download {model} --local-dir DIR`) and pass --model DIR") from e
    return Path(root)


class ModelStore:
    """Loads networks by their ``pipeline.json`` key and places them per the runtime."""

    def __init__(self, runtime: Runtime) -> None:
        from backend.models import read_pipeline_config

        self.runtime = runtime
        self._models: dict[str, torch.nn.Module] = {}
        self._conditioner = None
        self.root = resolve_release(runtime.model, runtime.offline)
        # Checkpoints load from the folder when it is local, else from the hub repo (cached).
        self.source = str(self.root) if Path(runtime.model).expanduser().is_dir() else runtime.model
        self.config = read_pipeline_config(self.root / "pipeline.json")
        tex_path = self.root / "texturing_pipeline.json"
        self.tex_config = read_pipeline_config(tex_path) if tex_path.is_file() else None

    @classmethod
    def preloaded(cls, runtime: Runtime, config, tex_config, models: dict[str, torch.nn.Module],
                  conditioner) -> ModelStore:
        """A store over networks already in memory (benchmarks with random full-size weights).

        Args:
            config, tex_config: ``backend.models.PipelineConfig`` objects (samplers, normalisation).
            models: pipeline.json key -> network, already on the runtime's home device.
            conditioner: a :class:`~backend.pipeline.conditioning.DinoV3Conditioner`.
        """
        store = cls.__new__(cls)
        store.runtime, store.config, store.tex_config = runtime, config, tex_config
        store.root, store.source = None, None
        store._models, store._conditioner = dict(models), conditioner
        return store

    @property
    def device(self) -> torch.device:
        return torch.device(self.runtime.device)

    def _home(self) -> torch.device:
        return torch.device("cpu") if self.runtime.low_vram else self.device

    def get(self, key: str) -> torch.nn.Module:
        """The network named ``key`` in pipeline.json (or texturing_pipeline.json), loaded once."""
        if key not in self._models:
            from backend.models import CheckpointError, load_model

            name = self.config.models.get(key)
            if name is None and self.tex_config is not None:
                name = self.tex_config.models.get(key)
            if name is None:
                raise ModelUnavailableError(f"the release at {self.root} names no model {key!r}")
            source = self.source
            parts = name.split("/")
            if len(parts) >= 3 and parts[0] != "ckpts" and "/".join(parts[:2]) in self.runtime.dependencies:
                source, name = self.runtime.dependencies["/".join(parts[:2])], "/".join(parts[2:])
            try:
                model = load_model(source, name, device=self._home(), dtype=self.runtime.load_dtype,
                                   offline=self.runtime.offline)
            except CheckpointError as e:
                raise ModelUnavailableError(f"cannot load {key}: {e}",
                                            "check the release folder or drop --offline") from e
            if self.runtime.attention_backend and hasattr(model, "set_attention_backend"):
                model.set_attention_backend(self.runtime.attention_backend)
            self._models[key] = model
        return self._models[key]

    def conditioner(self):
        from .conditioning import DinoV3Conditioner

        if self._conditioner is None:
            name = self.config.image_cond_model.args.get("model_name")
            name = self.runtime.dependencies.get(name, name)
            self._conditioner = DinoV3Conditioner.from_pretrained(name, offline=self.runtime.offline)
            self._conditioner.model.to(self._home())
        return self._conditioner

    @contextlib.contextmanager
    def on_device(self, *modules: torch.nn.Module) -> Iterator[None]:
        """Place ``modules`` on the device for the block (and back to the CPU after, in low-VRAM mode)."""
        if self.runtime.low_vram:
            for m in modules:
                m.to(self.device)
        try:
            yield
        finally:
            if self.runtime.low_vram:
                for m in modules:
                    m.to("cpu")
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()

    def loaded(self) -> list[str]:
        return sorted(self._models)
