"""What a job asks for and how it is going. No ``bpy``: plain data, fed by protocol events."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .. import protocol

Sampler = tuple  # (steps or None, guidance or None[, guidance rescale or None])


def _sampler(value: Sampler) -> protocol.Sampler:
    steps, guidance, rescale = (*value, None)[:3]
    return protocol.Sampler(steps=steps, guidance_strength=guidance, guidance_rescale=rescale)


@dataclass(frozen=True)
class GenerateSpec:
    """One object -> ``num_samples`` assets; copied out of the scene before the job starts.

    ``image`` is the (first) picture; ``views`` are more pictures of the same object, combined
    by the ``multiview`` sampling mode (see ``protocol.Generate``).
    """

    image: str
    name: str
    output_dir: str
    pipeline_type: str = protocol.DEFAULT_PIPELINE_TYPE
    seed: int = protocol.DEFAULT_SEED
    sparse_structure: Sampler = (None, None)
    shape: Sampler = (None, None)
    texture: Sampler = (None, None)
    face_target: int = protocol.DEFAULT_FACES
    texture_size: int = protocol.DEFAULT_TEXTURE_SIZE
    num_samples: int = 1
    views: tuple[str, ...] = ()
    multiview: str = protocol.DEFAULT_MULTIVIEW_MODE
    unwrap: str = protocol.Export.unwrap
    remove_floaters: bool = False
    remove_inner_shells: bool = False
    fill_holes: bool = False
    write_glb: bool = False  # the scene import reads the direct result; a GLB only when one is wanted
    kind: str = "generate"

    @property
    def images(self) -> list[str]:
        return [self.image, *self.views]

    def request_fields(self) -> dict:
        return dict(
            pipeline_type=self.pipeline_type, seed=self.seed, name=self.name, num_samples=self.num_samples,
            multiview=self.multiview if self.views else None,
            sparse_structure=_sampler(self.sparse_structure), shape=_sampler(self.shape),
            texture=_sampler(self.texture),
            export=protocol.Export(texture_size=self.texture_size, faces=self.face_target,
                                   write_glb=self.write_glb, unwrap=self.unwrap,
                                   remove_floaters=self.remove_floaters,
                                   remove_inner_shells=self.remove_inner_shells, fill_holes=self.fill_holes),
        )

    def record(self) -> dict:
        """The settings to keep on the generated object (ID-property safe: no None)."""
        return _record(asdict(self))


@dataclass(frozen=True)
class RetextureSpec:
    """A mesh (already written as the backend's PLY) + an image -> new textures on the mesh's UVs."""

    mesh: str
    image: str
    name: str
    output_dir: str
    seed: int = protocol.DEFAULT_SEED
    resolution: int = protocol.DEFAULT_RETEXTURE_RESOLUTION
    texture: Sampler = (None, None)
    texture_size: int = protocol.DEFAULT_TEXTURE_SIZE
    write_glb: bool = False
    kind: str = "retexture"

    def request_fields(self) -> dict:
        return dict(seed=self.seed, resolution=self.resolution, name=self.name,
                    texture=_sampler(self.texture),
                    export=protocol.Export(texture_size=self.texture_size, write_glb=self.write_glb))

    def record(self) -> dict:
        return _record(asdict(self))


def _record(values: dict) -> dict:
    out = {}
    for key, value in values.items():
        if key == "views":
            value = list(value)
        elif isinstance(value, tuple):
            steps, guidance, rescale = (*value, None)[:3]
            value = {"override": any(v is not None for v in value),
                     "steps": steps or 0, "guidance": guidance if guidance is not None else 0.0,
                     "rescale": rescale if rescale is not None else 0.0}
        if value is not None:
            out[key] = value
    return out


RUNNING, OK, ERROR, CANCELLED = "running", "ok", "error", "cancelled"

# What each backend stage does, in the words the panel and the status bar use.
STAGE_WORDS = {
    "preprocess": "Reading the picture",
    "sparse_structure": "Sketching the rough shape",
    "shape": "Shaping the surface",
    "texture": "Painting the materials",
    "decode": "Building the mesh",
    "export": "Baking textures and saving",
}
RETEXTURE_STAGE_WORDS = {**STAGE_WORDS, "preprocess": "Reading the picture and the mesh",
                         "shape": "Reading the mesh's shape", "export": "Baking the new textures"}
# The sampler's sub-step labels (the backend's progress messages) that need other words.
SUB_STEP_WORDS = {"shape LR": "coarse pass", "shape HR": "fine pass", "sparse structure": "", "shape": "",
                  "texture": "", "done": ""}


def progress_text(kind: str, stage: str, step: int, total: int, message: str = "") -> str:
    """A progress event in words: "Shaping the surface (fine pass): step 3 of 12"."""
    if not stage:
        return "Waiting for the backend"
    words = (RETEXTURE_STAGE_WORDS if kind == "retexture" else STAGE_WORDS).get(
        stage, stage.replace("_", " ").capitalize())
    detail = SUB_STEP_WORDS.get(message, message)
    if total > 1:
        return f"{words} ({detail}): step {step} of {total}" if detail else f"{words}: step {step} of {total}"
    return f"{words}: {detail}" if detail else words


@dataclass
class Job:
    """A submitted request and everything the backend said about it."""

    spec: GenerateSpec | RetextureSpec
    id: str = ""
    state: str = RUNNING
    stage: str = ""
    step: int = 0
    total: int = 0
    fraction: float = 0.0
    message: str = ""
    result: protocol.Result | None = None
    error: protocol.Error | None = None
    logs: list[tuple[str, str]] = field(default_factory=list)
    cancel_requested: bool = False
    seconds: float = 0.0

    @property
    def finished(self) -> bool:
        return self.state != RUNNING

    def handle(self, event: protocol.Message) -> None:
        if isinstance(event, protocol.ProgressEvent):
            self.stage, self.step, self.total = event.stage, event.step, event.total
            self.fraction, self.message = event.fraction, event.message
        elif isinstance(event, protocol.Log):
            self.logs.append((event.level, event.message))
        elif isinstance(event, protocol.Result):
            self.result = event
        elif isinstance(event, protocol.Error):
            self.error = event
        elif isinstance(event, protocol.Done):
            self.seconds = event.seconds
            if event.status == "ok" and self.result is not None:
                self.state = OK
            elif event.status == "cancelled":
                self.state = CANCELLED
            else:
                self.state = ERROR
                if self.error is None:
                    self.error = protocol.Error(job=self.id, code="internal",
                                                message="the job ended without a result")

    def fail(self, code: str, message: str, hint: str = "") -> None:
        """End the job from the client side (e.g. the backend could not start)."""
        self.error = protocol.Error(job=self.id or None, code=code, message=message, hint=hint)
        self.state = ERROR

    def result_file(self) -> str | None:
        """The direct result (result.json) of the first asset, if any."""
        files = self.result_files()
        return files[0] if files else None

    def result_files(self) -> list[str]:
        """The direct results (result.json) of every asset, in the backend's order (sample 0 first)."""
        if self.result is None:
            return []
        return [asset.direct for asset in self.result.assets if asset.direct]

    def glb_file(self) -> str | None:
        """The backend's GLB of the first asset, if the spec asked for one and the job wrote it."""
        if self.result is None or not self.result.assets:
            return None
        return self.result.assets[0].glb

    def progress_text(self) -> str:
        return progress_text(self.spec.kind, self.stage, self.step, self.total, self.message)

    def error_text(self) -> str:
        if self.error is None:
            return ""
        text = self.error.message
        return f"{text} ({self.error.hint})" if self.error.hint else text
