"""The job contract between Blender (the client) and the backend service.

One home for the wire messages, the pipeline types, every default and limit a front end
offers (the add-on's panel, ``python -m backend generate/retexture``, the batch command) and
the state and error enums. Front ends derive their choices and defaults from here; the
server validates requests against it once, where they arrive.

Stdlib only, so both sides import it. This file is the only copy in the repository: the
extension build places it into the add-on package (``scripts/build_extension.py``), and so
do the test harness and the scripts that run the add-on from a checkout.

Framing: one JSON object per line (UTF-8, ``\\n``-terminated), at most
:data:`MAX_LINE_BYTES` bytes. Every object has a ``type``.

Client -> server (requests), each with a client-chosen ``id``:
``hello``, ``load``, ``check_access``, ``generate``, ``retexture``, ``cancel``, ``status``,
``shutdown``.

Server -> client (events), each with ``job``: the ``id`` of the request it answers
(``None`` only for an error about a line whose id could not be read):
``hello`` and ``status`` (replies), ``access`` (the answer to ``check_access``), ``log``,
``progress``, ``download``, ``result``, ``error`` and ``done``. Every request whose id could
be read gets exactly one ``done``, and it is always the last event for that id.

Meshes, images and textures never travel through the pipe: they are files in the
job's ``output_dir``, and ``result`` names them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

PROTOCOL_VERSION = 1
MAX_LINE_BYTES = 1 << 20  # one message, newline included
MAX_ID_CHARS = 128
MAX_STRING_CHARS = 8192
MAX_LIST_ITEMS = 64
# ``Load.source`` naming the small model that ships with the backend (``backend/mini_release``,
# trained on procedural objects) instead of a repo id or folder.
BUNDLED_MINI_MODEL = "mini"

# Resolution modes of ``Generate.pipeline_type``; every front end offers exactly these.
PIPELINE_TYPES = ("512", "1024", "1024_cascade", "1536_cascade")
DEFAULT_PIPELINE_TYPE = "1024_cascade"
DEFAULT_SEED = 42
# 1536 cascade: the high-resolution pass shrinks its grid until it holds fewer tokens than this.
DEFAULT_MAX_NUM_TOKENS = 49152
# Voxel resolutions of ``Retexture.resolution`` (the texture field's grid).
RETEXTURE_RESOLUTIONS = (512, 1024, 1536)
DEFAULT_RETEXTURE_RESOLUTION = 1024
# Decimation target of a generated mesh: about what Blender keeps interactive with a few objects
# in the scene; the CLI, the batch and the panel start from it.
DEFAULT_FACES = 200_000
MIN_FACES = 4  # the fewest faces of a closed surface (a tetrahedron): the decimator's floor
# Texture side lengths (pixels) ``Export.texture_size`` accepts, and the sizes the panel offers.
MIN_TEXTURE_SIZE = 16
MAX_TEXTURE_SIZE = 8192
TEXTURE_SIZE_CHOICES = (512, 1024, 2048, 4096)
DEFAULT_TEXTURE_SIZE = 2048
TEXTURE_FORMATS = ("png", "webp")
MAX_STEPS = 1000  # sampler steps of one stage
# ``Load.background_removal`` for pictures without transparency: "none" refuses them, "solid" is
# a keyer for objects on a plain background, "rmbg" the RMBG-2.0 / BiRefNet model.
BACKGROUND_REMOVAL_MODES = ("none", "solid", "rmbg")
# What every front end (add-on preference, ``python -m backend generate/retexture``, the batch
# command) does by default with pictures without transparency: the plain-background keyer.
DEFAULT_BACKGROUND_REMOVAL = "solid"
# The command lines' ``--rembg`` spellings -> ``Load.background_removal``.
BACKGROUND_REMOVAL_FLAGS = {"none": "none", "solid": "solid", "birefnet": "rmbg"}
# The released model's sampler per stage (TRELLIS.2-4B pipeline.json): (steps, guidance strength,
# guidance rescale). The backend falls back to them when a release names none; the panel starts a
# stage's override from them, so switching an override on changes nothing until a value is edited.
STAGE_SAMPLER_DEFAULTS = {
    "sparse_structure": (12, 7.5, 0.7),
    "shape": (12, 7.5, 0.5),
    "texture": (12, 1.0, 0.0),
}
# UV unwrapping: "fast" axis-projection charts (seconds at any size; more seams, less texture
# used), "xatlas" (fewer, larger charts: sharper at the same texture size; minutes on large
# meshes), "auto" (xatlas for small meshes, fast for large ones).
UNWRAP_METHODS = ("auto", "fast", "xatlas")
MAX_SAMPLES = 16  # variations per generate request
MAX_VIEWS = 6  # pictures of one object in a multi-view request
# How the sampler combines several pictures of one object (see backend/pipeline/sampler.py).
MULTIVIEW_MODES = ("stochastic", "multidiffusion")
# "stochastic" costs what one view costs per step; "multidiffusion" V + 1 passes per guided step.
# Measured on the CPU with the tiny test checkpoint (512 pipeline, 12 steps per stage, 3 views,
# scripts/measure_multiview.py --timing): stochastic 0.98x, multidiffusion 1.86x the single-view
# job time. No trained model has measured a quality difference yet, so the cheaper mode is the default.
DEFAULT_MULTIVIEW_MODE = "stochastic"

DONE_STATUSES = ("ok", "error", "cancelled")
SERVER_STATES = ("idle", "busy")  # ``StatusReply.state``
REPO_STATUSES = ("local", "cached", "ok", "gated", "missing", "offline", "unreachable")
ALPHA_MODES = ("OPAQUE", "MASK", "BLEND")  # ``Asset.alpha_mode``, as glTF names them
LOG_LEVELS = ("debug", "info", "warning", "error")
# Error codes the server sends; the client adds "backend_died" for a server that went away.
# "invalid_request": a setting the request carries; "invalid_input": an input file (image, mesh)
# that cannot be used: corrupt, truncated, empty or too large; "io_error": a file that could not
# be read or written (disk full, permissions, a path too long for the file system).
ERROR_CODES = (
    "bad_message", "version_mismatch", "not_loaded", "busy", "unknown_job", "invalid_request",
    "invalid_input", "io_error", "out_of_memory", "cancelled", "model_unavailable", "gated_model",
    "pipeline_unavailable", "internal", "backend_died",
)


class ProtocolError(ValueError):
    """A line that is not a valid message; ``job`` is its id when that could be read.

    ``code`` is the :data:`ERROR_CODES` entry to answer with: "bad_message" for a line that is
    not a well-formed message, "invalid_request" for a well-formed one holding a value outside
    the contract's choices and limits.
    """

    def __init__(self, message: str, job: str | None = None, code: str = "bad_message") -> None:
        super().__init__(message)
        self.job = job
        self.code = code


# The values a field may hold beyond its type, checked wherever a message is built from the
# wire or checked before sending (``build_dataclass``): the server validates a request once, on arrival.
def _one_of(choices: tuple) -> dict[str, Any]:
    return {"choices": choices}


def _between(low: int, high: int | None = None) -> dict[str, Any]:
    return {"range": (low, high)}


def vram_budget_problem(gib: float) -> str | None:
    """What is wrong with ``gib`` as a VRAM budget (``Load.vram_budget_gib``, the command lines'
    ``--vram-budget``), worded to follow the setting's name; None when nothing is."""
    if not (math.isfinite(gib) and gib > 0):
        return f"must be a number of GiB above 0, got {gib!r}"
    return None


# --- nested value types -------------------------------------------------------------------

@dataclass(frozen=True)
class Sampler:
    """Per-stage sampler overrides; ``None`` keeps the model's configured value."""

    steps: int | None = field(default=None, metadata=_between(1, MAX_STEPS))
    guidance_strength: float | None = None
    guidance_rescale: float | None = None
    guidance_interval: list[float] | None = None
    rescale_t: float | None = None


@dataclass(frozen=True)
class Export:
    """What to write into the job folder, and how to clean a generated mesh first.

    ``unwrap`` is one of :data:`UNWRAP_METHODS`. ``remove_floaters`` drops small separate
    pieces, ``remove_inner_shells`` pieces enclosed by another closed piece, ``fill_holes``
    closes small holes. ``bake_normal_map`` adds a tangent-space normal map of the full-resolution
    surface to a decimated mesh. Every asset's ``result.json`` carries a ``qa`` report of the result.
    """

    texture_size: int = field(default=DEFAULT_TEXTURE_SIZE,
                              metadata=_between(MIN_TEXTURE_SIZE, MAX_TEXTURE_SIZE))
    faces: int = field(default=DEFAULT_FACES, metadata=_between(MIN_FACES))
    texture_format: str = field(default=TEXTURE_FORMATS[0], metadata=_one_of(TEXTURE_FORMATS))
    write_glb: bool = True
    write_direct: bool = True
    unwrap: str = field(default="auto", metadata=_one_of(UNWRAP_METHODS))
    remove_floaters: bool = False
    remove_inner_shells: bool = False
    fill_holes: bool = False
    bake_normal_map: bool = True


@dataclass(frozen=True)
class Asset:
    """One produced asset: paths are absolute files inside the job folder."""

    name: str
    glb: str | None = None
    direct: str | None = None
    faces: int = 0
    vertices: int = 0
    texture_size: int = 0
    alpha_mode: str = ALPHA_MODES[0]
    extra: dict[str, Any] = field(default_factory=dict)


# --- requests ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Message:
    """Base of every message; ``TYPE`` is the wire ``type``."""

    TYPE: ClassVar[str] = ""


@dataclass(frozen=True)
class Hello(Message):
    """Handshake: the client's protocol version. Answered by :class:`HelloReply`."""

    TYPE: ClassVar[str] = "hello"
    id: str
    version: int
    client: str = ""


@dataclass(frozen=True)
class Load(Message):
    """Load (and if needed download) the models; they stay loaded until the next ``load``.

    ``source`` is a Hugging Face repo id (``owner/name``), a local folder, or
    :data:`BUNDLED_MINI_MODEL` for the bundled mini model. When ``source`` is the official
    ``microsoft/TRELLIS.2-4B`` and its weights can be neither found locally nor downloaded, the
    server loads the bundled mini model instead (when the installation has it) and says so in a
    ``log`` event of level ``warning``. ``image_encoder`` (DINOv3), ``sparse_structure_decoder``
    (``microsoft/TRELLIS-image-large``) and ``background_remover`` name local folders used instead
    of the hub for those dependencies. ``token`` is a Hugging Face token, passed explicitly and
    never logged; ``offline`` forbids any network access. ``commercial_safe`` keeps the
    non-commercial parts out (no nvdiffrast, no RMBG-2.0 / BiRefNet background removal).

    ``low_vram`` keeps every network in host memory and moves each to the GPU for its stage only.
    ``vram_budget_gib`` (not with ``low_vram``; None: no budget, every network stays on the GPU once
    loaded) lets the networks stay on the GPU while they fit this many GiB of weights; a stage that
    needs room first sends the least recently used others back to host memory.

    ``background_removal`` is what happens to pictures without transparency: ``"none"``
    (refused with an explanation), ``"solid"`` (a keyer for objects on a plain background)
    or ``"rmbg"`` (RMBG-2.0 / BiRefNet from ``background_remover`` or the hub). Choosing
    ``"rmbg"`` is the user's consent to download it, when online, under its (non-commercial)
    licence. Those models ship their own Python code, which loading runs: ``"rmbg"`` also needs
    ``allow_model_code`` true, the user's separate, explicit consent to run third-party code.
    """

    TYPE: ClassVar[str] = "load"
    id: str
    source: str
    revision: str | None = None
    image_encoder: str | None = None
    background_remover: str | None = None
    background_removal: str = field(default=DEFAULT_BACKGROUND_REMOVAL,
                                    metadata=_one_of(BACKGROUND_REMOVAL_MODES))
    allow_model_code: bool = False
    token: str | None = field(default=None, repr=False)
    offline: bool = False
    cache_dir: str | None = None
    low_vram: bool = False
    sparse_structure_decoder: str | None = None
    commercial_safe: bool = False
    vram_budget_gib: float | None = None

    def __post_init__(self) -> None:
        if self.vram_budget_gib is not None:
            problem = vram_budget_problem(self.vram_budget_gib)
            if problem is not None:
                raise ValueError(f"vram_budget_gib {problem}")
            if self.low_vram:
                raise ValueError("vram_budget_gib cannot be combined with low_vram")


@dataclass(frozen=True)
class CheckAccess(Message):
    """Which of the repositories ``source`` needs this token can read, and how big the download
    is; nothing is downloaded. The local-folder fields and ``background_removal`` mean what they
    mean in :class:`Load`. Answered by :class:`AccessReport`, then ``done``."""

    TYPE: ClassVar[str] = "check_access"
    id: str
    source: str
    image_encoder: str | None = None
    sparse_structure_decoder: str | None = None
    background_remover: str | None = None
    background_removal: str = field(default=DEFAULT_BACKGROUND_REMOVAL,
                                    metadata=_one_of(BACKGROUND_REMOVAL_MODES))
    token: str | None = field(default=None, repr=False)
    offline: bool = False
    cache_dir: str | None = None


@dataclass(frozen=True)
class Generate(Message):
    """Image(s) -> textured asset(s), written into ``output_dir``.

    ``num_samples`` (1..:data:`MAX_SAMPLES`) assets per object, from one seed. Without
    ``multiview`` every image is its own object; with a mode of :data:`MULTIVIEW_MODES` the
    images are 1..:data:`MAX_VIEWS` pictures of ONE object (front, side, back...) and every
    stage is conditioned on all of them.
    """

    TYPE: ClassVar[str] = "generate"
    id: str
    images: list[str]
    output_dir: str
    pipeline_type: str = field(default=DEFAULT_PIPELINE_TYPE, metadata=_one_of(PIPELINE_TYPES))
    seed: int = DEFAULT_SEED
    num_samples: int = field(default=1, metadata=_between(1, MAX_SAMPLES))
    sparse_structure: Sampler = Sampler()
    shape: Sampler = Sampler()
    texture: Sampler = Sampler()
    max_num_tokens: int = DEFAULT_MAX_NUM_TOKENS
    export: Export = Export()
    name: str | None = None
    multiview: str | None = field(default=None, metadata=_one_of(MULTIVIEW_MODES))


@dataclass(frozen=True)
class Retexture(Message):
    """Mesh + reference image -> the same mesh with new textures, written into ``output_dir``."""

    TYPE: ClassVar[str] = "retexture"
    id: str
    mesh: str
    image: str
    output_dir: str
    seed: int = DEFAULT_SEED
    resolution: int = field(default=DEFAULT_RETEXTURE_RESOLUTION,
                            metadata=_one_of(RETEXTURE_RESOLUTIONS))
    texture: Sampler = Sampler()
    export: Export = Export()
    name: str | None = None


@dataclass(frozen=True)
class Cancel(Message):
    """Cancel a queued or running job (``job`` is that request's id)."""

    TYPE: ClassVar[str] = "cancel"
    id: str
    job: str


@dataclass(frozen=True)
class Status(Message):
    """Ask what the server is doing; answered at once by :class:`StatusReply`."""

    TYPE: ClassVar[str] = "status"
    id: str


@dataclass(frozen=True)
class Shutdown(Message):
    """Cancel everything and exit after the final ``done``."""

    TYPE: ClassVar[str] = "shutdown"
    id: str


# --- events --------------------------------------------------------------------------------

@dataclass(frozen=True)
class HelloReply(Message):
    """The server's side of the handshake.

    ``capabilities``: ``device`` (e.g. "cuda:0" or "cpu"), ``device_name``,
    ``gpu_memory_total`` / ``gpu_memory_free`` (bytes, 0 when unknown), ``models``
    ({repo id: present locally}), ``gated`` ({repo id: what the user must accept}),
    ``generator`` (the factory in use) and ``requests`` (request types understood).
    """

    TYPE: ClassVar[str] = "hello"
    job: str
    version: int
    server: str
    pid: int
    capabilities: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StatusReply(Message):
    """``state`` is "idle" or "busy"; ``running`` the current job id; ``queued`` the waiting ones."""

    TYPE: ClassVar[str] = "status"
    job: str
    state: str
    running: str | None = None
    queued: list[str] = field(default_factory=list)
    loaded: str | None = None
    rss_bytes: int = 0
    jobs_done: int = 0


@dataclass(frozen=True)
class RepoStatus:
    """One repository in an :class:`AccessReport`.

    ``status``: "local" (a folder the user named), "cached", "ok" (readable, ``bytes`` to
    download), "gated" (accept the licence at ``licence_url`` with the token's account),
    "missing", "offline" or "unreachable".
    """

    repo: str
    purpose: str
    licence: str
    status: str
    licence_url: str
    bytes: int = 0
    detail: str = ""


@dataclass(frozen=True)
class AccessReport(Message):
    TYPE: ClassVar[str] = "access"
    job: str
    repos: list[RepoStatus] = field(default_factory=list)


@dataclass(frozen=True)
class Log(Message):
    TYPE: ClassVar[str] = "log"
    job: str | None
    level: str
    message: str


@dataclass(frozen=True)
class ProgressEvent(Message):
    """``step`` of ``total`` within ``stage``; ``fraction`` (0..1) of the whole job."""

    TYPE: ClassVar[str] = "progress"
    job: str
    stage: str
    step: int
    total: int
    fraction: float
    message: str = ""


@dataclass(frozen=True)
class Download(Message):
    """A model file being fetched: ``bytes`` of ``total`` (``total`` 0 when unknown)."""

    TYPE: ClassVar[str] = "download"
    job: str
    repo: str
    file: str
    bytes: int
    total: int


@dataclass(frozen=True)
class Result(Message):
    """The files a job produced (all inside ``output_dir``) and facts about the run."""

    TYPE: ClassVar[str] = "result"
    job: str
    output_dir: str
    assets: list[Asset] = field(default_factory=list)
    seconds_per_stage: dict[str, float] = field(default_factory=dict)
    peak_memory_bytes: int = 0


@dataclass(frozen=True)
class Error(Message):
    """A failure the user should see: ``code`` from :data:`ERROR_CODES`, and a ``hint`` to fix it."""

    TYPE: ClassVar[str] = "error"
    job: str | None
    code: str
    message: str
    hint: str = ""


@dataclass(frozen=True)
class Done(Message):
    """Always the last event for a request: ``status`` is "ok", "error" or "cancelled"."""

    TYPE: ClassVar[str] = "done"
    job: str
    status: str
    seconds: float = 0.0


REQUESTS: dict[str, type[Message]] = {
    cls.TYPE: cls for cls in (Hello, Load, CheckAccess, Generate, Retexture, Cancel, Status, Shutdown)
}
EVENTS: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (HelloReply, StatusReply, AccessReport, Log, ProgressEvent, Download, Result, Error, Done)
}


# --- encode / decode -----------------------------------------------------------------------

def encode(message: Message) -> bytes:
    """One message -> one line of UTF-8 JSON (with the trailing newline)."""
    body = {"type": message.TYPE, **dataclasses.asdict(message)}
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    # Unpaired surrogates (e.g. from an undecodable file name) become "?": the line stays UTF-8.
    line = text.encode("utf-8", "replace") + b"\n"
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError(f"message too large ({len(line)} bytes > {MAX_LINE_BYTES})")
    return line


def check_request(message: Message) -> Message:
    """``message`` if the server would accept it, else :class:`ProtocolError` naming the field.

    For the client, before it sends: :func:`encode` replaces what UTF-8 cannot hold (a file
    name with undecodable bytes), which would make the server look for another file.
    """
    return _read_wire(type(message), dataclasses.asdict(message), message.TYPE)


def decode_request(line: bytes | str) -> Message:
    """A line from the client -> a request object, or :class:`ProtocolError`."""
    return _decode(line, REQUESTS, "id")


def decode_event(line: bytes | str) -> Message:
    """A line from the server -> an event object, or :class:`ProtocolError`."""
    return _decode(line, EVENTS, "job")


def _decode(line: bytes | str, table: dict[str, type[Message]], id_key: str) -> Message:
    if isinstance(line, str):
        line = line.encode()
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError(f"message too large ({len(line)} bytes > {MAX_LINE_BYTES})")
    try:
        obj = json.loads(line, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError included
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("a message must be a JSON object")
    job = obj.get(id_key)
    job = job if isinstance(job, str) and 0 < len(job) <= MAX_ID_CHARS and _is_unicode(job) else None
    kind = obj.pop("type", None)
    if not isinstance(kind, str) or kind not in table:
        raise ProtocolError(f"unknown message type {kind!r}", job)
    try:
        message = _read_wire(table[kind], obj, kind)
    except ProtocolError as exc:
        raise ProtocolError(str(exc), job, exc.code) from None
    if id_key == "id" and job is None:
        raise ProtocolError(f"{kind}: 'id' must be a non-empty string of at most {MAX_ID_CHARS} chars")
    return message


def _is_unicode(text: str) -> bool:
    """False for a string with an unpaired surrogate (JSON ``"\\ud800"``), which UTF-8 cannot hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


# --- JSON objects -> dataclasses -----------------------------------------------------------

_T = TypeVar("_T")
# How much of a wrong value an error message quotes; a longer one is named by its kind and size.
_SHOWN_CHARS = 60
_SHOWN_UNKNOWN_KEYS = 3


def build_dataclass(cls: type[_T], obj: Any, where: str, *,
                    error: Callable[[str], Exception] = ValueError,
                    limit_error: Callable[[str], Exception] | None = None,
                    max_string_chars: int | None = None, max_list_items: int | None = None) -> _T:
    """Dataclass ``cls`` built from ``obj``, a decoded JSON object, checked against ``cls``'s type hints.

    Every mistake raises ``error(text)``. The text starts with the path of the value: ``where``,
    then the keys and list indices below it (``generate.export.faces``, ``run.json: trainer.args.lr``).
    It says what was expected and what was given: ``<path>: unknown key 'x'; known: ...``,
    ``<path>: missing key 'x'`` (a field without a default), ``<path>: expected an integer, got
    '3'``. The value of a field declared with ``repr=False`` (a token) is never quoted, only its kind.

    ``limit_error`` (``error`` when not given) raises for a value of the right type that the field
    refuses: outside its ``choices`` or ``range`` metadata (see :func:`_one_of`, :func:`_between`),
    or refused by ``cls`` itself (a ``ValueError`` or ``TypeError`` from its ``__post_init__``).
    ``max_string_chars`` and ``max_list_items`` bound every string and list (``None``: unbounded).

    Type hints understood: ``bool``, ``int``, ``float`` (an integer is taken as a float), ``str``,
    ``list[X]``, ``dict[str, X]`` and bare ``dict``, unions (``X | None``), ``Any`` and nested
    dataclasses, built from nested objects. Any other hint raises ``TypeError``: a bug in ``cls``.
    """
    reader = _Reader(max_string_chars, max_list_items)
    try:
        return reader.build(cls, obj, where, hidden=False)
    except _Mistake as mistake:
        raise_as = (limit_error or error) if mistake.refused else error
        raise raise_as(str(mistake)) from mistake.__cause__


def _read_wire(cls: type[_T], obj: Any, where: str) -> _T:
    """A message of type ``cls`` from its JSON object, within the wire's limits."""
    return build_dataclass(cls, obj, where, error=ProtocolError, limit_error=_invalid_request,
                           max_string_chars=MAX_STRING_CHARS, max_list_items=MAX_LIST_ITEMS)


def _invalid_request(text: str) -> ProtocolError:
    return ProtocolError(text, code="invalid_request")


class _Mistake(Exception):
    """What :func:`build_dataclass` turns into the caller's exception; ``refused``: a value the
    field or class refuses (its ``limit_error``), not a malformed one."""

    def __init__(self, text: str, refused: bool = False) -> None:
        super().__init__(text)
        self.refused = refused


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _shown(value: Any, hidden: bool) -> str:
    """``value`` as an error message names it: its repr, or its kind when secret or long."""
    text = repr(value)
    if not hidden and len(text) <= _SHOWN_CHARS:
        return text
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return f"a string of {len(value)} chars"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)} items"
    if isinstance(value, dict):
        return f"an object of {len(value)} keys"
    return type(value).__name__


@dataclass(frozen=True)
class _Reader:
    """The bounds of one :func:`build_dataclass` call, passed down the nested values."""

    max_string_chars: int | None
    max_list_items: int | None

    def build(self, cls: type, obj: Any, where: str, hidden: bool) -> Any:
        if not isinstance(obj, dict):
            raise _Mistake(f"{where}: expected an object, got {_shown(obj, hidden)}")
        hints = _hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(obj) - set(fields), key=str)
        if unknown:
            named = ", ".join(_shown(key, False) for key in unknown[:_SHOWN_UNKNOWN_KEYS])
            more = len(unknown) - _SHOWN_UNKNOWN_KEYS
            raise _Mistake(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {named}"
                           f"{f' and {more} more' if more > 0 else ''}; known: {', '.join(sorted(fields))}")
        values = {}
        for name, f in fields.items():
            if name in obj:
                secret = hidden or not f.repr
                value = self.check(obj[name], hints[name], f"{where}.{name}", secret)
                values[name] = _check_limits(value, f, f"{where}.{name}", secret)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise _Mistake(f"{where}: missing key {name!r}")
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:  # the class's own checks (``__post_init__``)
            raise _Mistake(f"{where}: {exc}", refused=True) from exc

    def check(self, value: Any, hint: Any, where: str, hidden: bool) -> Any:
        """``value`` checked against a type hint (nested dataclasses built, integers as floats)."""
        origin = typing.get_origin(hint)
        if origin in (typing.Union, types.UnionType):
            options = [option for option in typing.get_args(hint) if option is not type(None)]
            if value is None and len(options) < len(typing.get_args(hint)):
                return None
            mistakes = []
            for option in options:
                try:
                    return self.check(value, option, where, hidden)
                except _Mistake as mistake:
                    mistakes.append(mistake)
            raise mistakes[0]
        if hint is Any:
            return value
        if dataclasses.is_dataclass(hint):
            return self.build(hint, value, where, hidden)
        if origin is list or hint is list:
            (item,) = typing.get_args(hint) or (Any,)
            return self._list(value, item, where, hidden)
        if origin is dict or hint is dict:
            item = (typing.get_args(hint) or (str, Any))[1]
            return self._dict(value, item, where, hidden)
        if hint is bool:
            if not isinstance(value, bool):
                raise _Mistake(f"{where}: expected true or false, got {_shown(value, hidden)}")
            return value
        if hint is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise _Mistake(f"{where}: expected an integer, got {_shown(value, hidden)}")
            return value
        if hint is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _Mistake(f"{where}: expected a number, got {_shown(value, hidden)}")
            return float(value)
        if hint is str:
            return self._string(value, where, hidden)
        raise TypeError(f"{where}: unsupported type hint {hint!r}")

    def _list(self, value: Any, item: Any, where: str, hidden: bool) -> list:
        limit = self.max_list_items
        if not isinstance(value, list | tuple) or (limit is not None and len(value) > limit):
            expected = "a list" if limit is None else f"a list of at most {limit} items"
            raise _Mistake(f"{where}: expected {expected}, got {_shown(value, hidden)}")
        return [self.check(v, item, f"{where}[{i}]", hidden) for i, v in enumerate(value)]

    def _dict(self, value: Any, item: Any, where: str, hidden: bool) -> dict:
        if not isinstance(value, dict):
            raise _Mistake(f"{where}: expected an object, got {_shown(value, hidden)}")
        for key in value:
            if not isinstance(key, str) or not _is_unicode(key):
                raise _Mistake(f"{where}: expected keys that are valid Unicode strings, "
                               f"got {_shown(key, hidden)}")
        return {k: self.check(v, item, f"{where}.{k}", hidden) for k, v in value.items()}

    def _string(self, value: Any, where: str, hidden: bool) -> str:
        limit = self.max_string_chars
        if not isinstance(value, str) or (limit is not None and len(value) > limit):
            expected = "a string" if limit is None else f"a string of at most {limit} chars"
            raise _Mistake(f"{where}: expected {expected}, got {_shown(value, hidden)}")
        if not _is_unicode(value):
            raise _Mistake(f"{where}: the string holds an unpaired surrogate (not valid Unicode)")
        return value


def _check_limits(value: Any, f: dataclasses.Field, where: str, hidden: bool) -> Any:
    """``value`` if it lies within the field's choices or range (``None`` always passes)."""
    choices, bounds = f.metadata.get("choices"), f.metadata.get("range")
    if value is None:
        return value
    if choices is not None and value not in choices:
        raise _Mistake(f"{where} must be one of {', '.join(map(str, choices))}, got {_shown(value, hidden)}",
                       refused=True)
    if bounds is not None:
        low, high = bounds
        if value < low or (high is not None and value > high):
            limit = f"in {low}..{high}" if high is not None else f"at least {low}"
            raise _Mistake(f"{where} must be {limit}, got {_shown(value, hidden)}", refused=True)
    return value
