"""Which TRELLIS.2 weights a job runs on, and how that is recorded with its results.

Three sources:

* ``official``: the released ``microsoft/TRELLIS.2-4B`` from Hugging Face (cached or downloaded);
* ``local``: a release folder the user named (``--model DIR``, the add-on's "Local folder");
* ``bundled-mini``: the small model trained on procedural objects that ships with the backend in
  ``backend/mini_release`` (:data:`BUNDLED_MINI_RELEASE`). It is chosen by name
  (:data:`BUNDLED_MINI_MODEL`, ``--model mini``) or used as the fallback when the official
  weights are neither local nor downloadable; the fallback is announced in one log line
  (:func:`fallback_notice`).

Every result says which source made it: ``result.json`` carries
``"model": {"source": ..., "path": ...}`` (:meth:`ModelProvenance.as_json`).

:data:`WEIGHT_REPOS` lists every Hugging Face repository a run may need, once: what it is for,
its licence, whether it is gated, the files the pipeline reads from it, and the command-line
flag and add-on setting that name a local copy instead. :mod:`.weights` resolves and downloads
them; error texts and the add-on's notices take their wording from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from backend.protocol import BUNDLED_MINI_MODEL

from .errors import ModelUnavailableError

__all__ = ["BUNDLED_MINI_MODEL", "BUNDLED_MINI_RELEASE", "OFFICIAL", "LOCAL", "BUNDLED_MINI",
           "ModelProvenance", "bundled_release", "require_bundled_release", "fallback_notice",
           "WeightRepo", "WEIGHT_REPOS", "TRELLIS2_REPO", "SS_DECODER_REPO", "DINOV3_REPO", "RMBG_REPO"]

# The bundled mini release folder (official layout), relative to the backend package.
BUNDLED_MINI_RELEASE: Path = Path(__file__).resolve().parents[1] / "mini_release"

OFFICIAL, LOCAL, BUNDLED_MINI = "official", "local", "bundled-mini"
BUNDLED_MINI_DESCRIPTION = "trained on procedural objects, not the official weights"

TRELLIS2_REPO = "microsoft/TRELLIS.2-4B"
SS_DECODER_REPO = "microsoft/TRELLIS-image-large"
DINOV3_REPO = "facebook/dinov3-vitl16-pretrain-lvd1689m"
RMBG_REPO = "briaai/RMBG-2.0"
# What the official release reads from outside itself: repo -> checkpoints named in its pipeline
# files ("" for the whole repo). Used where the release's own pipeline.json is not at hand yet.
TRELLIS2_EXTERNAL_REFERENCES: dict[str, list[str]] = {
    SS_DECODER_REPO: ["ckpts/ss_dec_conv3d_16l8_fp16"], DINOV3_REPO: [""]}


@dataclass(frozen=True)
class WeightRepo:
    """One Hugging Face repository the pipeline may read.

    Args:
        repo: ``owner/name``.
        purpose: what it is used for, in words.
        licence: its licence, in words (non-commercial ones say so).
        gated: the user must accept its licence on huggingface.co before the hub serves it.
        allow_patterns: the files the pipeline reads (``fnmatch`` patterns), when the reference in
            ``pipeline.json`` does not name them itself (a ``owner/name/sub/path`` reference means
            ``sub/path.json`` and ``sub/path.safetensors``); empty: every file.
        cli_flag: the ``python -m backend generate/retexture`` (and batch) flag naming a local copy.
        setting: the add-on preference (its label) naming a local copy.
    """

    repo: str
    purpose: str
    licence: str
    gated: bool
    allow_patterns: tuple[str, ...]
    cli_flag: str
    setting: str

    @property
    def licence_url(self) -> str:
        """Where the user reads (and for gated repos accepts) the licence."""
        return f"https://huggingface.co/{self.repo}"

    def local_copy_hint(self) -> str:
        """How to use a local copy instead, naming the flag and the add-on setting."""
        return f"or pass a local copy with {self.cli_flag} DIR (add-on preferences: {self.setting})"


WEIGHT_REPOS: dict[str, WeightRepo] = {w.repo: w for w in (
    WeightRepo(TRELLIS2_REPO, "the TRELLIS.2 networks", "MIT", False,
               ("pipeline.json", "texturing_pipeline.json", "ckpts/*.json", "ckpts/*.safetensors"),
               "--model", "Model Source: Local Folder"),
    WeightRepo(SS_DECODER_REPO, "the sparse-structure decoder (TRELLIS-image-large)", "MIT", False, (),
               "--ss-decoder", "Sparse-Structure Decoder Folder"),
    WeightRepo(DINOV3_REPO, "image features (DINOv3)", "Meta's DINOv3 License", True,
               ("*.json", "*.safetensors"), "--image-encoder", "DINOv3 Folder"),
    # Only the PyTorch weights and the model's code; the repository's ONNX exports stay behind.
    WeightRepo(RMBG_REPO, "background removal (RMBG-2.0)", "CC BY-NC 4.0, non-commercial use only", True,
               ("*.py", "*.json", "model.safetensors"), "--rembg-model", "RMBG Folder"),
)}


@dataclass(frozen=True)
class ModelProvenance:
    """Which weights made a result.

    Args:
        source: :data:`OFFICIAL` (a Hugging Face repo), :data:`LOCAL` (a folder the user named)
            or :data:`BUNDLED_MINI` (the mini release shipped with the backend).
        path: the repo id (official) or the release folder.
    """

    source: str
    path: str

    def as_json(self) -> dict[str, str]:
        """The ``"model"`` entry of ``result.json``."""
        return {"source": self.source, "path": self.path}

    def describe(self) -> str:
        """One phrase for the console, e.g. ``bundled-mini model (/x/mini_release; trained on ...)``."""
        note = f"; {BUNDLED_MINI_DESCRIPTION}" if self.source == BUNDLED_MINI else ""
        return f"{self.source} model ({self.path}{note})"


def bundled_release(folder: Path | None) -> Path | None:
    """``folder`` when it holds a release (a ``pipeline.json``), else None (also for None)."""
    if folder is None or not (Path(folder) / "pipeline.json").is_file():
        return None
    return Path(folder).resolve()


def require_bundled_release(folder: Path | None,
                            hint: str = "pass --model with the official repo id or a local TRELLIS.2 release "
                                        "folder") -> Path:
    """The bundled mini release folder for an explicit ``--model mini``; ``hint`` says how to choose
    another model where the choice was made (command line or add-on setting).

    Raises:
        ModelUnavailableError: this installation has no bundled mini release.
    """
    found = bundled_release(folder)
    if found is None:
        where = f"no {Path(folder) / 'pipeline.json'}" if folder is not None else "none configured"
        raise ModelUnavailableError(
            f"the bundled mini model is not part of this installation ({where})", hint)
    return found


def fallback_notice(reason: str) -> str:
    """The one line announcing that the bundled mini model stands in for the official weights."""
    return (f"official TRELLIS.2 weights unavailable ({reason}); generating with the bundled mini model "
            f"({BUNDLED_MINI_DESCRIPTION})")
