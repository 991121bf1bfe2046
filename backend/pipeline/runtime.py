"""Where models come from and where they live: the release folder, loading, device placement.

:class:`Runtime` is the explicit settings object (device, low-VRAM, offline,
model source). :class:`ModelStore` resolves the release (a local folder, a
Hugging Face repo id downloaded on first use unless offline, or the bundled mini
release; see :func:`resolve_model` and :mod:`.model_source`), reads
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
from .model_source import (
    BUNDLED_MINI,
    BUNDLED_MINI_MODEL,
    LOCAL,
    OFFICIAL,
    ModelProvenance,
    bundled_release,
    fallback_notice,
    require_bundled_release,
)

log = logging.getLogger(__name__)

DEFAULT_MODEL = "microsoft/TRELLIS.2-4B"
# Seconds to wait for Hugging Face before calling the official weights unreachable.
HUB_PROBE_TIMEOUT_S = 5.0


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
            A relative image-encoder name that is a folder inside the release needs no entry.
        bundled_release: the bundled mini release folder (``model_source.BUNDLED_MINI_RELEASE``
            for the CLI and the server). ``model`` = ``"mini"`` selects it, and it stands in for the
            official repo when that can be neither found locally nor downloaded. None: neither.
        provenance: what results record as their ``"model"``; None derives it from ``model``
            (callers that resolved the weights themselves, like the server, pass theirs).
    """

    model: str = DEFAULT_MODEL
    device: str = "cuda"
    low_vram: bool = False
    offline: bool = False
    dtype: torch.dtype | None = None
    attention_backend: str | None = None
    dependencies: Mapping[str, str] = field(default_factory=dict)
    bundled_release: Path | None = None
    provenance: ModelProvenance | None = None

    @property
    def load_dtype(self) -> torch.dtype | None:
        return torch.float32 if self.device == "cpu" and self.dtype is None else self.dtype


def resolve_release(model: str, offline: bool) -> Path:
    """The local release folder for ``model``, a folder or a Hugging Face repo id.

    A repo id counts as available when the release (pipeline files, its ``ckpts/`` and the hub
    models it names, such as DINOv3) is in the local Hugging Face cache, or, unless ``offline``,
    when the hub answers for each missing repo within :data:`HUB_PROBE_TIMEOUT_S` and grants
    access; then the pipeline files are downloaded. The checks come first so an unreachable hub
    fails at once instead of after the hub client's retries.

    Raises:
        ModelUnavailableError: not a release folder, offline without a complete cached copy,
            the hub unreachable, or access refused.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "pipeline.json").is_file():
            raise ModelUnavailableError(f"{path} has no pipeline.json",
                                        "point --model at a TRELLIS.2 release folder")
        return path
    if path.suffix == ".json" or model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise ModelUnavailableError(f"model folder {model} does not exist",
                                    "pass --model PATH to a local TRELLIS.2-4B folder, a repo id, or "
                                    f"--model {BUNDLED_MINI_MODEL} for the bundled mini model")
    hint = f"download it once (e.g. `hf download {model} --local-dir DIR`) and pass --model DIR"
    cached = _cached_snapshot(model)
    if cached is not None and not _missing_from_cache(cached):
        return cached
    if offline:
        what = "it is not completely in the local Hugging Face cache" if cached is not None else \
            "it is not in the local Hugging Face cache"
        raise ModelUnavailableError(f"cannot get {model}: {what} and --offline forbids downloading", hint)
    _probe_hub(model, hint)
    from huggingface_hub import snapshot_download

    try:
        root = Path(snapshot_download(model, allow_patterns=["pipeline.json", "texturing_pipeline.json"]))
    except Exception as e:  # hub errors come in many classes; all mean "not available"
        raise ModelUnavailableError(f"cannot get {model}: the download failed ({_first_line(e)})",
                                    hint) from e
    for repo in _hub_dependencies(root):
        if _cached_snapshot(repo) is None:
            _probe_hub(repo, "accept its licence on huggingface.co and log in (`hf auth login`), or "
                             "download it and pass its folder")
    return root


def _first_line(e: BaseException) -> str:
    text = str(e).splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _cached_snapshot(repo: str) -> Path | None:
    """The cached snapshot folder of ``repo`` (never touches the network), or None."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure means "not cached"
        return None


def _probe_hub(repo: str, hint: str) -> None:
    """Fail fast unless the hub answers for ``repo`` and this user may read it."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().model_info(repo, timeout=HUB_PROBE_TIMEOUT_S)
        from huggingface_hub import auth_check

        auth_check(repo)
    except GatedRepoError as e:
        raise ModelUnavailableError(f"access to the gated {repo} was refused", hint) from e
    except RepositoryNotFoundError as e:
        raise ModelUnavailableError(f"{repo} does not exist or access was refused", hint) from e
    except Exception as e:  # noqa: BLE001 - network trouble of any kind
        raise ModelUnavailableError(f"Hugging Face is unreachable for {repo} ({_first_line(e)})", hint) from e


def _hub_dependencies(root: Path) -> list[str]:
    """Hub repos (``owner/name``) the release's pipeline files name outside itself (DINOv3, ...)."""
    import json

    repos: list[str] = []
    for name in ("pipeline.json", "texturing_pipeline.json"):
        path = root / name
        if not path.is_file():
            continue
        args = json.loads(path.read_text()).get("args", {})
        refs = list(args.get("models", {}).values())
        refs.append(args.get("image_cond_model", {}).get("args", {}).get("model_name", ""))
        for ref in map(str, refs):
            parts = ref.split("/")
            if len(parts) >= 2 and parts[0] not in ("ckpts", ".", "") and not (root / ref).exists():
                repo = "/".join(parts[:2])
                if repo not in repos:
                    repos.append(repo)
    return repos


def _missing_from_cache(root: Path) -> list[str]:
    """What a cached release snapshot lacks: ``ckpts/`` files or hub repos it names."""
    import json

    missing = []
    for name in ("pipeline.json", "texturing_pipeline.json"):
        path = root / name
        if not path.is_file():
            if name == "pipeline.json":
                return [name]
            continue
        for ref in json.loads(path.read_text()).get("args", {}).get("models", {}).values():
            if str(ref).startswith("ckpts/"):
                missing += [f"{ref}{ext}" for ext in (".json", ".safetensors")
                            if not (root / f"{ref}{ext}").is_file()]
    missing += [repo for repo in _hub_dependencies(root) if _cached_snapshot(repo) is None]
    return missing


def resolve_model(runtime: Runtime) -> tuple[Path, str, ModelProvenance]:
    """The release folder, where its checkpoints load from, and the provenance of ``runtime.model``.

    ``"mini"`` selects ``runtime.bundled_release``. The official repo id falls back to it (one
    warning naming the reason) when the official weights are unavailable and the folder exists;
    any other source that cannot be resolved raises.

    Returns:
        ``(root, checkpoint_source, provenance)``: ``checkpoint_source`` is the folder for local
        releases and the repo id for hub releases (checkpoints then load through the hub cache).

    Raises:
        ModelUnavailableError: as :func:`resolve_release`, or ``"mini"`` without a bundled release.
    """
    if runtime.model == BUNDLED_MINI_MODEL:
        root = require_bundled_release(runtime.bundled_release)
        return root, str(root), runtime.provenance or ModelProvenance(BUNDLED_MINI, str(root))
    try:
        root = resolve_release(runtime.model, runtime.offline)
    except ModelUnavailableError as e:
        fallback = bundled_release(runtime.bundled_release) if runtime.model == DEFAULT_MODEL else None
        if fallback is None:
            raise
        log.warning("%s", fallback_notice(e.message))
        return fallback, str(fallback), ModelProvenance(BUNDLED_MINI, str(fallback))
    if Path(runtime.model).expanduser().is_dir():
        bundled = bundled_release(runtime.bundled_release)
        source = BUNDLED_MINI if bundled is not None and root.resolve() == bundled else LOCAL
        provenance = ModelProvenance(source, str(root.resolve()))
        return root, str(root), runtime.provenance or provenance
    return root, runtime.model, runtime.provenance or ModelProvenance(OFFICIAL, runtime.model)


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


class ModelStore:
    """Loads networks by their ``pipeline.json`` key and places them per the runtime."""

    def __init__(self, runtime: Runtime) -> None:
        from backend.models import read_pipeline_config

        self.runtime = runtime
        self._models: dict[str, torch.nn.Module] = {}
        self._conditioner = None
        # Checkpoints load from the folder when it is local, else from the hub repo (cached).
        self.root, self.source, self.provenance = resolve_model(runtime)
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
        store.root, store.source, store.provenance = None, None, runtime.provenance
        store._models, store._conditioner = dict(models), conditioner
        return store

    @property
    def device(self) -> torch.device:
        return torch.device(self.runtime.device)

    def _home(self) -> torch.device:
        return torch.device("cpu") if self.runtime.low_vram else self.device

    def _checkpoint_source(self, key: str) -> tuple[str | Path, str]:
        """(source, name) of the network ``key`` for :func:`backend.models.load_model`."""
        name = self.config.models.get(key)
        if name is None and self.tex_config is not None:
            name = self.tex_config.models.get(key)
        if name is None:
            raise ModelUnavailableError(f"the release at {self.root} names no model {key!r}")
        source = self.source
        parts = name.split("/")
        if len(parts) >= 3 and parts[0] != "ckpts" and "/".join(parts[:2]) in self.runtime.dependencies:
            source, name = self.runtime.dependencies["/".join(parts[:2])], "/".join(parts[2:])
        return source, name

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
                files = resolve_checkpoint(source, name, offline=self.runtime.offline)
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
            name = image_encoder_location(str(self.config.image_cond_model.args.get("model_name", "")),
                                          self.root, self.runtime.dependencies)
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
