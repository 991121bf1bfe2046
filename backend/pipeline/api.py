"""The pipeline's public contract: requests, results, progress and cancellation.

Everything that drives generation (the CLI, the server, the tests) goes through
these types, so they are plain dataclasses with no torch in their signatures.

The result folder for Blender ("direct result", no GLB round trip) is
``OUT/<name>/``: ``result.json`` (name, mesh, textures, alpha_mode,
double_sided, stats), ``<name>.npz`` and PNG textures (see
``backend/pipeline/export/direct.py``). Mesh arrays are in Blender's frame
(Z-up, metres = unit cube units): ``positions [V,3] float32``, ``faces [F,3]
int32``, ``uvs [V,2] float32`` (Blender convention: v = 0 at the bottom of the
image), ``normals [V,3] float32``. The GLB (``OUT/<name>.glb``) is Y-up.

The implementation of :class:`Generator` is
``backend.pipeline.generator.Trellis2Generator``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from backend import protocol
from backend.protocol import (  # noqa: F401 - re-exported
    DEFAULT_MULTIVIEW_MODE,
    MAX_VIEWS,
    MULTIVIEW_MODES,
    UNWRAP_METHODS,
)

from .errors import PipelineError

PipelineType = Literal["512", "1024", "1024_cascade", "1536_cascade"]
PIPELINE_TYPES: tuple[str, ...] = protocol.PIPELINE_TYPES
STAGES: tuple[str, ...] = ("preprocess", "sparse_structure", "shape", "texture", "decode", "export")


MAX_NAME_BYTES = 200  # leaves room for suffixes such as "_metallic_roughness.png" within 255 bytes
_NAME_FORBIDDEN = frozenset("/\\:")  # path separators (POSIX, Windows) and Windows drive letters


def check_output_name(name: str, field: str = "name") -> str:
    """``name`` if it is one safe file-name component, else :class:`PipelineError` naming ``field``.

    Output files are ``<output_dir>/<name>.glb`` and ``<output_dir>/<name>/...``, so a name
    with a path separator, ``..``, a drive or an absolute path would write outside the
    output folder. Refused: empty names, ``.`` and ``..``, ``/``, ``\\`` and ``:``, control
    characters (NUL included), unpaired surrogates, and names over :data:`MAX_NAME_BYTES`
    UTF-8 bytes.
    """
    hint = "use a plain file name such as 'chair' (letters, digits, spaces, '.', '-' and '_')"
    if not isinstance(name, str) or not name:
        raise PipelineError(f"{field} must be a non-empty file name, got {name!r}", hint)
    if name in (".", ".."):
        raise PipelineError(f"{field} must not be {name!r}", hint)
    bad = sorted({c for c in name if c in _NAME_FORBIDDEN or ord(c) < 32 or ord(c) == 127})
    if bad:
        raise PipelineError(f"{field} {name!r} contains {', '.join(repr(c) for c in bad)}: it must be a "
                            "single file name, not a path", hint)
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise PipelineError(f"{field} {name!r} is not valid Unicode (unpaired surrogate)", hint) from None
    if size > MAX_NAME_BYTES:
        raise PipelineError(f"{field} is {size} bytes long; at most {MAX_NAME_BYTES} are allowed", hint)
    return name


class Cancelled(Exception):
    """Raised inside a job when its :class:`CancelToken` is set."""


class CancelToken:
    """Checked between sampler steps and stages; set from any thread."""

    def __init__(self) -> None:
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def check(self) -> None:
        if self._cancelled:
            raise Cancelled("cancelled")


@dataclass(frozen=True)
class Progress:
    """One progress report: ``step`` of ``total`` within ``stage``; ``fraction`` of the whole job."""

    stage: str
    step: int
    total: int
    fraction: float
    message: str = ""


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class SamplerOverrides:
    """Per-call overrides of a stage's sampler parameters (None = keep pipeline.json's)."""

    steps: int | None = None
    guidance_strength: float | None = None
    guidance_rescale: float | None = None
    guidance_interval: tuple[float, float] | None = None
    rescale_t: float | None = None


@dataclass(frozen=True)
class ExportOptions:
    texture_size: int = protocol.DEFAULT_TEXTURE_SIZE
    faces: int = protocol.DEFAULT_FACES  # decimation target (faces)
    texture_format: Literal["png", "webp"] = "png"
    write_glb: bool = True
    write_direct: bool = True  # the Blender result folder (npz + PNGs + result.json)
    # "auto": OPAQUE when the baked alpha is opaque, else BLEND; "MASK" asks for a cutout instead.
    alpha_mode: Literal["auto", "MASK", "BLEND"] = "auto"
    double_sided: bool = False
    # "auto": nvdiffrast when importable on CUDA (non-commercial licence), else our own rasterizer;
    # "ours" forces the licence-clean path.
    rasterizer: Literal["auto", "ours", "nvdiffrast"] = "auto"
    # "auto": xatlas for small meshes, fast axis-projection charts for large ones.
    unwrap: Literal["auto", "fast", "xatlas"] = "auto"
    # Clean-ups of a generated mesh before decimation (see backend/geometry/inspect.py for the terms).
    remove_floaters: bool = False
    remove_inner_shells: bool = False
    fill_holes: bool = False  # close holes smaller than export.asset.SMALL_HOLE_PERIMETER
    # A tangent-space normal map from the dense surface, when decimation removed faces. On by
    # default: it reuses the colour bake's projection onto the dense surface (one more texture
    # and a few array passes), and without it decimation visibly flattens fine relief.
    bake_normal_map: bool = True
    # Threads for the export steps that run beside its main line (the QA topology report during
    # the bake, the texture encodes during the mesh write; three cover all of them), and the
    # threads each PNG encode deflates its row bands on; 0 runs all in turn (PNGs on one thread).
    # The files written do not depend on it.
    threads: int = 3

    def __post_init__(self) -> None:
        # The contract's limits (the server already refused these when decoding; the CLI did not).
        if not protocol.MIN_TEXTURE_SIZE <= self.texture_size <= protocol.MAX_TEXTURE_SIZE:
            raise PipelineError(f"texture size must lie in [{protocol.MIN_TEXTURE_SIZE}, "
                                f"{protocol.MAX_TEXTURE_SIZE}], got {self.texture_size}",
                                "choose another --texture-size")
        if self.faces < protocol.MIN_FACES:
            raise PipelineError(f"the face target must be at least {protocol.MIN_FACES}, got {self.faces}",
                                "choose another --faces")
        if self.threads < 0:
            raise PipelineError(f"export threads must be 0 or more, got {self.threads}",
                                "choose another ExportOptions.threads")


@dataclass(frozen=True)
class GenerateRequest:
    images: tuple[Path, ...]
    output_dir: Path
    # None: the release's default_pipeline_type
    pipeline_type: PipelineType | None = protocol.DEFAULT_PIPELINE_TYPE
    seed: int = protocol.DEFAULT_SEED
    num_samples: int = 1
    sparse_structure: SamplerOverrides = SamplerOverrides()
    shape: SamplerOverrides = SamplerOverrides()
    texture: SamplerOverrides = SamplerOverrides()
    max_num_tokens: int = protocol.DEFAULT_MAX_NUM_TOKENS
    export: ExportOptions = ExportOptions()
    name: str | None = None  # output base name; default: the (first) image's stem
    # None: every image is its own object. A mode of MULTIVIEW_MODES: the images are 1..MAX_VIEWS
    # pictures of ONE object (front, side, back...), and every stage is conditioned on all of them.
    multiview: Literal["stochastic", "multidiffusion"] | None = None

    def __post_init__(self) -> None:
        if self.name is not None:
            check_output_name(self.name)
        if not 1 <= self.num_samples <= protocol.MAX_SAMPLES:  # the contract's limit, for the CLI too
            raise PipelineError(f"the number of variations must lie in [1, {protocol.MAX_SAMPLES}], "
                                f"got {self.num_samples}", "choose another --samples")
        if self.multiview is not None:
            if self.multiview not in MULTIVIEW_MODES:
                raise PipelineError(f"multiview must be one of {', '.join(MULTIVIEW_MODES)}, "
                                    f"got {self.multiview!r}")
            if not 1 <= len(self.images) <= MAX_VIEWS:
                raise PipelineError(
                    f"a multi-view job takes 1 to {MAX_VIEWS} pictures, got {len(self.images)}",
                    "leave out the least informative views")


@dataclass(frozen=True)
class RetextureRequest:
    mesh: Path
    image: Path
    output_dir: Path
    seed: int = protocol.DEFAULT_SEED
    # protocol.RETEXTURE_RESOLUTIONS; the pipeline itself takes any multiple of 16 in [64, 1536]
    resolution: int = protocol.DEFAULT_RETEXTURE_RESOLUTION
    texture: SamplerOverrides = SamplerOverrides()
    export: ExportOptions = ExportOptions()
    name: str | None = None
    up_axis: Literal["y", "z"] = "y"  # the mesh file's up axis (glTF/OBJ: y); output keeps the file frame

    def __post_init__(self) -> None:
        if self.name is not None:
            check_output_name(self.name)


@dataclass
class AssetResult:
    """One produced asset: files written and facts about it."""

    name: str
    glb: Path | None = None
    direct: Path | None = None  # the result.json of the Blender result folder
    faces: int = 0
    vertices: int = 0
    texture_size: int = 0
    alpha_mode: str = "OPAQUE"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class JobResult:
    assets: list[AssetResult]
    seconds_per_stage: dict[str, float]
    peak_memory_bytes: int = 0
    # Network weights the VRAM budget (``Runtime.vram_budget_gib``) moved in this job; 0 without one.
    moved_to_device_bytes: int = 0
    moved_to_host_bytes: int = 0


class Generator(Protocol):
    """What the CLI and the server drive; models stay loaded between calls."""

    def generate(self, request: GenerateRequest, on_progress: ProgressCallback,
                 cancel: CancelToken) -> JobResult: ...

    def retexture(self, request: RetextureRequest, on_progress: ProgressCallback,
                  cancel: CancelToken) -> JobResult: ...
