"""Where models come from and where they live: the release folder, loading, device placement.

:class:`Runtime` is the explicit settings object (device, low-VRAM, offline,
model source). :class:`Release` resolves the release (a local folder, a
Hugging Face repo id downloaded on first use unless offline, or the bundled mini
release; see :func:`resolve_model` and :mod:`.model_source`) and reads
``pipeline.json`` / ``texturing_pipeline.json`` through ``backend.models``.
:class:`ModelStore` loads each network once and keeps it on the accelerator; in
low-VRAM mode every network stays on the CPU and :meth:`ModelStore.on_device`
moves it over for one stage only, and with a VRAM budget the least recently used networks
leave the accelerator when a stage needs the room (:mod:`.residency`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from backend import protocol

from . import weights
from .accelerator import conv_backend_for, triton_importable
from .api import CancelToken
from .errors import ModelUnavailableError, PipelineError
from .model_source import (
    BUNDLED_MINI,
    BUNDLED_MINI_MODEL,
    LOCAL,
    OFFICIAL,
    TRELLIS2_REPO,
    WEIGHT_REPOS,
    ModelProvenance,
    bundled_release,
    fallback_notice,
    require_bundled_release,
)
from .residency import GIB, Residency, Transfers
from .weights import DownloadCallback, WeightsConfig, WeightsError

if TYPE_CHECKING:
    from backend.models import PipelineConfig

log = logging.getLogger(__name__)

DEFAULT_MODEL = TRELLIS2_REPO
IMAGE_ENCODER_KEY = "image_cond_model"  # pipeline.json's key of the image encoder (DINOv3)


@dataclass(frozen=True)
class Runtime:
    """Execution settings of a generator.

    Args:
        model: local release folder or Hugging Face repo id.
        device: torch device string ("cuda", "cuda:1", "mps", "cpu"); ``accelerator.resolve_device``
            turns "auto" into one.
        low_vram: keep networks on the CPU and move each to the device only for its stage.
        vram_budget_gib: None: every network stays on the device once loaded. A number (GiB, above
            0; not with ``low_vram``): networks load into host memory and move to the device for
            their stage, and they stay there after it while the networks on the device (parameters
            and buffers) fit this many GiB; before a stage, the least recently used networks it
            does not need go back to host memory until its own fit (:mod:`.residency`). A stage
            whose networks alone need more still runs.
        offline: never touch the network; the release must be local or in the HF cache.
        dtype: None keeps the checkpoints' precision policy (bf16/fp16 blocks) on CUDA; on
            CPU everything runs in float32.
        attention_backend: passed to the flow models' ``set_attention_backend`` when set.
        conv_backend: sparse-convolution path of every loaded network ("triton", "torch",
            "im2col"); None chooses per device: Triton on CUDA when it imports, torch otherwise.
        dependencies: Hugging Face repo id -> local folder for models the release refers to
            (DINOv3, the TRELLIS v1 sparse-structure decoder repo); used instead of the hub.
            A relative image-encoder name that is a folder inside the release needs no entry.
        token: Hugging Face token for gated repositories (never printed); None uses the hub's
            own login (``hf auth login``).
        commercial_safe: never use the non-commercial parts (nvdiffrast, RMBG-2.0 / BiRefNet);
            see :mod:`.licences`.
        bundled_release: the bundled mini release folder (``model_source.BUNDLED_MINI_RELEASE``
            for the CLI and the server). ``model`` = ``"mini"`` selects it, and it stands in for the
            official repo when that can be neither found locally nor downloaded. None: neither.
        provenance: what results record as their ``"model"``; None derives it from ``model``
            (callers that resolved the weights themselves, like the server, pass theirs).
        batched_cfg: run each sampler step's conditional and unconditional passes (and
            multi-view passes) as one batched network call (``SamplerParams.batched_cfg``). Off by
            default: it gives the sequential path's results (tested on the CPU), and it may pay on a
            GPU, where a step of the 512 pipeline is launch-bound, but it has not been timed there
            yet; on a CPU the forward is compute-bound, so batching saves nothing and only holds
            both passes' activations at once.
        fp8: run the linears of the flow models' transformer blocks as FP8 (e4m3) matmuls
            (:mod:`backend.models.fp8`): for GPUs with FP8 tensor cores (compute capability 8.9+:
            Ada, Hopper); the CPU runs it too, slowly (to measure its quality cost). Opt-in: it
            changes results slightly (README: FP8).
        compile_blocks: ``torch.compile`` each flow model's transformer blocks (torch's automatic
            dynamic shapes are meant to make the token count symbolic after the first job with
            another count; how often it recompiles is not measured yet). Opt-in until it is timed
            in the product path on a GPU; if compiling fails, the blocks run eagerly (logged).
    """

    model: str = DEFAULT_MODEL
    device: str = "cuda"
    low_vram: bool = False
    vram_budget_gib: float | None = None
    offline: bool = False
    dtype: torch.dtype | None = None
    attention_backend: str | None = None
    conv_backend: str | None = None
    dependencies: Mapping[str, str] = field(default_factory=dict)
    bundled_release: Path | None = None
    provenance: ModelProvenance | None = None
    token: str | None = field(default=None, repr=False)
    commercial_safe: bool = False
    batched_cfg: bool = False
    fp8: bool = False
    compile_blocks: bool = False

    def __post_init__(self) -> None:
        if self.vram_budget_gib is None:
            return
        problem = protocol.vram_budget_problem(self.vram_budget_gib)
        if problem is not None:
            raise ValueError(f"vram_budget_gib {problem}")
        if self.low_vram:
            raise ValueError("vram_budget_gib and low_vram exclude each other: low-VRAM mode keeps no "
                             "network on the device between stages, so there is nothing to budget")

    @property
    def load_dtype(self) -> torch.dtype | None:
        return torch.float32 if self.device == "cpu" and self.dtype is None else self.dtype


@dataclass(frozen=True)
class ResolvedRelease:
    """Where a runtime's weights are: the release folder, its provenance, and a local folder for
    each other repository its pipeline files name (repo id -> folder)."""

    root: Path
    provenance: ModelProvenance
    dependencies: Mapping[str, str] = field(default_factory=dict)


def resolve_model(runtime: Runtime, on_download: DownloadCallback | None = None,
                  cancel: CancelToken | None = None) -> ResolvedRelease:
    """The release folder, its dependencies and the provenance of ``runtime.model``, through the one
    resolver (:func:`.weights.resolve`: cached, downloaded unless offline, or local folders).

    ``"mini"`` selects ``runtime.bundled_release``. The official repo id falls back to it (one
    warning naming the reason) when the official weights are unavailable and the folder exists;
    any other source that cannot be resolved raises.

    Raises:
        ModelUnavailableError: as :func:`.weights.resolve`, a folder without ``pipeline.json``, or
            ``"mini"`` without a bundled release.
    """
    if runtime.model == BUNDLED_MINI_MODEL:
        root = require_bundled_release(runtime.bundled_release)
        return ResolvedRelease(root, runtime.provenance or ModelProvenance(BUNDLED_MINI, str(root)),
                               dict(runtime.dependencies))
    config = WeightsConfig(token=runtime.token, offline=runtime.offline)
    try:
        paths = weights.resolve(runtime.model, config, overrides=dict(runtime.dependencies),
                                on_download=on_download, cancel=cancel)
    except WeightsError as e:
        fallback = bundled_release(runtime.bundled_release) if runtime.model == DEFAULT_MODEL else None
        if fallback is None:
            raise
        log.warning("%s", fallback_notice(e.message))
        return ResolvedRelease(fallback, ModelProvenance(BUNDLED_MINI, str(fallback)),
                               dict(runtime.dependencies))
    root = paths.model_dir
    if not (root / "pipeline.json").is_file():
        raise ModelUnavailableError(f"{root} has no pipeline.json",
                                    "point --model (add-on preferences: Model Source: Local Folder) at a "
                                    "TRELLIS.2 release folder")
    # Entries the release does not name as hub repos (a relative image-encoder name) stay as given.
    dependencies = {**runtime.dependencies, **{repo: str(path) for repo, path in paths.dependencies.items()}}
    if Path(runtime.model).expanduser().is_dir():
        bundled = bundled_release(runtime.bundled_release)
        source = BUNDLED_MINI if bundled is not None and root.resolve() == bundled else LOCAL
        provenance = ModelProvenance(source, str(root.resolve()))
    else:
        provenance = ModelProvenance(OFFICIAL, runtime.model)
    return ResolvedRelease(root, runtime.provenance or provenance, dependencies)


def image_encoder_location(name: str, release_root: Path | None, dependencies: Mapping[str, str]) -> str:
    """Where the image encoder named ``name`` in ``pipeline.json`` loads from.

    An entry in ``dependencies`` wins; otherwise a relative ``name`` that is a folder inside the
    release (the mini release's ``"image_encoder"``) resolves against the release folder; anything
    else (a hub repo id, an absolute folder) stays as it is.
    """
    if name in dependencies:
        return str(dependencies[name])
    if release_root is not None and name and not Path(name).is_absolute() and (release_root / name).is_dir():
        return str((release_root / name).resolve())
    return name


@dataclass(frozen=True)
class Release:
    """What a :class:`ModelStore` serves: the pipeline files and where their checkpoints are.

    Args:
        config, tex_config: ``pipeline.json`` and ``texturing_pipeline.json`` (``tex_config`` None:
            the release has no texturing file).
        root: the release folder the checkpoints load from (None: every network is handed to the
            store already built).
        provenance: what results record as their ``"model"`` (None: unknown).
        dependencies: repo id -> local folder for models the pipeline files name in other repos.
    """

    config: PipelineConfig
    tex_config: PipelineConfig | None = None
    root: Path | None = None
    provenance: ModelProvenance | None = None
    dependencies: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def open(cls, runtime: Runtime) -> Release:
        """Resolve ``runtime.model`` (see :func:`resolve_model`) and read its pipeline files."""
        from backend.models import read_pipeline_config

        resolved = resolve_model(runtime)
        tex_path = resolved.root / "texturing_pipeline.json"
        return cls(read_pipeline_config(resolved.root / "pipeline.json"),
                   read_pipeline_config(tex_path) if tex_path.is_file() else None,
                   resolved.root, resolved.provenance, resolved.dependencies)


def _unresolved_hint(repo: str) -> str:
    """What to do about a repository the store was not given a folder for."""
    info = WEIGHT_REPOS.get(repo)
    copy = info.local_copy_hint() if info is not None else (
        "or point --model (add-on preferences: Model Source: Local Folder) at a release that holds it")
    return f"load the release through its --model source, which resolves every repository it names, {copy}"


class ModelStore:
    """Loads networks by their ``pipeline.json`` key and places them per the runtime.

    Args:
        runtime: device, memory policy, kernels and where the release is.
        release: the release to serve (None: :meth:`Release.open` of ``runtime``).
        models: networks already built (pipeline.json key -> network, on the runtime's home device),
            served instead of loading their checkpoints; they get the runtime's kernel choices too.
        conditioner: the image encoder, already built (a
            :class:`~backend.pipeline.conditioning.DinoV3Conditioner`; None: loaded when first used).
    """

    def __init__(self, runtime: Runtime, release: Release | None = None, *,
                 models: Mapping[str, torch.nn.Module] | None = None, conditioner=None) -> None:
        self.runtime = runtime
        release = release if release is not None else Release.open(runtime)
        self.config, self.tex_config = release.config, release.tex_config
        self.root, self.provenance = release.root, release.provenance
        self.dependencies: Mapping[str, str] = release.dependencies
        if runtime.fp8:
            from backend.models.fp8 import Fp8Unsupported, check_fp8_device

            try:
                check_fp8_device(runtime.device)
            except Fp8Unsupported as e:
                raise PipelineError(str(e), "run without --fp8") from e
        self.conv_backend = runtime.conv_backend or conv_backend_for(runtime.device, triton_importable())
        log.info("sparse convolution: %s path on %s", self.conv_backend, runtime.device)
        self._residency = (Residency(self.device, round(runtime.vram_budget_gib * GIB))
                           if runtime.vram_budget_gib is not None else None)
        self._models: dict[str, torch.nn.Module] = {}
        for key, model in (models or {}).items():
            self._models[key] = self._configured(model)
            self._track(key, model)
        self._conditioner = conditioner

    @property
    def device(self) -> torch.device:
        return torch.device(self.runtime.device)

    def _home(self) -> torch.device:
        """Where networks load: host memory when something else decides when they go to the device."""
        budgeted = self.runtime.low_vram or self._residency is not None
        return torch.device("cpu") if budgeted else self.device

    def _track(self, key: str, model: torch.nn.Module) -> None:
        if self._residency is not None:
            self._residency.track(key, model)

    @property
    def residency(self) -> Residency | None:
        """The VRAM budget's bookkeeping: which networks are on the device, least recently used
        first (None without a budget)."""
        return self._residency

    @property
    def transfers(self) -> Transfers:
        """Bytes the VRAM budget has moved onto the device and back since the store was made
        (none without a budget)."""
        return self._residency.moved if self._residency is not None else Transfers()

    def _checkpoint_source(self, key: str) -> tuple[Path | str, str]:
        """(source, name) of the network ``key`` for :func:`backend.models.load_model`."""
        name = self.config.models.get(key)
        if name is None and self.tex_config is not None:
            name = self.tex_config.models.get(key)
        if name is None:
            raise ModelUnavailableError(f"the release at {self.root} names no model {key!r}")
        if self.root is None:
            raise ModelUnavailableError(f"{key} was not handed to the model store, and it has no release "
                                        "folder to load it from")
        parts = name.split("/")
        repo = "/".join(parts[:2])
        in_release = any((self.root / f"{name}{suffix}").exists() for suffix in (".json", ".safetensors"))
        if len(parts) < 3 or parts[0] == "ckpts" or in_release:
            return self.root, name
        if repo not in self.dependencies:  # resolve_model resolves every repo the release names
            raise ModelUnavailableError(
                f"{key} is in the repository {repo}, which was not resolved to a folder",
                _unresolved_hint(repo))
        return self.dependencies[repo], "/".join(parts[2:])

    def check_checkpoints(self) -> None:
        """Check every network the release names without loading its weights: the config JSON
        builds the network (on the meta device) and the safetensors header holds every tensor it
        needs, in its shape, within the file's size. So a release that would fail at its first
        job (a truncated file, an invalid or mismatched config) fails when it is loaded.

        Raises:
            ModelUnavailableError: naming the network, the file and what is wrong.
        """
        from backend.models.loading import (
            CheckpointError,
            build_model,
            read_model_config,
            read_safetensors_header,
            resolve_checkpoint,
        )

        keys = sorted(set(self.config.models) | set(self.tex_config.models if self.tex_config else {}))
        for key in keys:
            source, name = self._checkpoint_source(key)
            try:
                files = resolve_checkpoint(source, name)
                model = build_model(read_model_config(files.config), source=str(files.config))
                header = read_safetensors_header(files.weights)
            except CheckpointError as e:
                raise ModelUnavailableError(f"cannot load {key}: {e}", "check the release folder") from e
            computed = set(model.computed_buffers("cpu")) if hasattr(model, "computed_buffers") else set()
            expected = {k: list(v.shape) for k, v in model.state_dict().items()}
            found = {k: list(v["shape"]) for k, v in header.items()}
            problems = [f"missing {k}" for k in sorted(set(expected) - set(found) - computed)]
            problems += [f"unexpected {k}" for k in sorted(set(found) - set(expected))]
            problems += [f"{k}: file {found[k]}, model {expected[k]}"
                         for k in sorted(set(found) & set(expected)) if found[k] != expected[k]]
            if problems:
                raise ModelUnavailableError(
                    f"cannot load {key}: {files.weights} does not match {files.config} "
                    f"({len(problems)} problem(s): {'; '.join(problems[:5])})", "check the release folder")

    def get(self, key: str) -> torch.nn.Module:
        """The network named ``key`` in pipeline.json (or texturing_pipeline.json), loaded once."""
        if key not in self._models:
            from backend.models import CheckpointError, load_model

            source, name = self._checkpoint_source(key)
            try:
                model = load_model(source, name, device=self._home(), dtype=self.runtime.load_dtype)
            except CheckpointError as e:
                raise ModelUnavailableError(f"cannot load {key}: {e}",
                                            f"check the release folder {source}, or download it again") from e
            self._models[key] = self._configured(model)
            self._track(key, self._models[key])
        return self._models[key]

    def _configured(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` on the runtime's sparse-convolution path and attention backend (and, with
        ``Runtime.fp8``, a flow model's block linears in FP8)."""
        from backend.models.flow_trunk import FlowTrunk
        from backend.sparse.conv import set_conv_backend

        set_conv_backend(model, self.conv_backend)
        if self.runtime.attention_backend and hasattr(model, "set_attention_backend"):
            model.set_attention_backend(self.runtime.attention_backend)
        if self.runtime.fp8 and isinstance(model, FlowTrunk):
            from backend.models.fp8 import convert_blocks_to_fp8

            convert_blocks_to_fp8(model)
        if self.runtime.compile_blocks and isinstance(model, FlowTrunk):
            for block in model.blocks:
                compile_with_eager_fallback(block)
        return model

    def conditioner(self):
        from .conditioning import DinoV3Conditioner

        if self._conditioner is None:
            name = image_encoder_location(str(self.config.image_cond_model.args.get("model_name", "")),
                                          self.root, self.dependencies)
            if not Path(name).is_dir():  # hub ids were resolved to folders by resolve_model
                raise ModelUnavailableError(f"the image encoder {name!r} was not resolved to a folder",
                                            _unresolved_hint(name))
            self._conditioner = DinoV3Conditioner.from_pretrained(name, offline=True)
            self._conditioner.model.to(self._home())
        if isinstance(getattr(self._conditioner, "model", None), torch.nn.Module):
            self._track(IMAGE_ENCODER_KEY, self._conditioner.model)
        return self._conditioner

    @contextlib.contextmanager
    def on_device(self, *modules: torch.nn.Module) -> Iterator[None]:
        """Place ``modules`` on the device for the block: in low-VRAM mode back to the CPU after it;
        with a VRAM budget they stay, and other networks make room first (:meth:`.Residency.place`)."""
        if self._residency is not None:
            self._residency.place(modules)
            yield
            return
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


def compile_with_eager_fallback(module: torch.nn.Module) -> None:
    """``module.compile()`` in place; if compiling fails at its first call (no C compiler, an
    unsupported op), the module runs eagerly from then on and the failure is logged once.
    A module compiled already is left as it is (a store may be handed the same networks again)."""
    if module._compiled_call_impl is not None:
        return
    module.compile()
    compiled = module._compiled_call_impl  # what Module.__call__ runs once compile() was called

    def call(*args, **kwargs):
        try:
            return compiled(*args, **kwargs)
        except Exception as exc:  # the compiler's errors share no base class, only their modules
            if not type(exc).__module__.startswith(("torch._dynamo", "torch._inductor")):
                raise
            log.warning("torch.compile failed for %s, running it eagerly: %s", type(module).__name__, exc)
            module._compiled_call_impl = None
            return module._call_impl(*args, **kwargs)

    module._compiled_call_impl = call
