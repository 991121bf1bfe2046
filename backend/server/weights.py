"""Where the model weights come from: a local folder or a Hugging Face repository.

A model source is either an existing folder or a repo id (``owner/name``). Besides the
main checkpoint, TRELLIS.2 needs two *gated* models (DINOv3 and RMBG-2.0); their repo
ids are found in the checkpoint's ``pipeline.json``. Before anything is downloaded, every
repo that is not cached yet is checked for access, so a user without approval learns it
before gigabytes arrive, with a message saying what to accept and how to give a token or
a local copy instead. Tokens are passed explicitly; nothing here reads the environment.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from backend.pipeline.api import CancelToken

log = logging.getLogger(__name__)

TRELLIS2_REPO = "microsoft/TRELLIS.2-4B"
DINOV3_REPO = "facebook/dinov3-vitl16-pretrain-lvd1689m"
RMBG_REPO = "briaai/RMBG-2.0"

# repo id -> (what it is used for, what the user has to accept)
GATED: dict[str, tuple[str, str]] = {
    DINOV3_REPO: ("image features (DINOv3)", "Meta's DINOv3 license"),
    RMBG_REPO: ("background removal (RMBG-2.0)", "BRIA's RMBG-2.0 license (non-commercial use)"),
}

# Used only when the user names a copy (or it is already cached): the pipeline can do without it
# (images with alpha, or a plain-background keyer), so it is never downloaded unasked.
OPTIONAL = frozenset({RMBG_REPO})

# on_download(repo, file, bytes_done, bytes_total)
DownloadCallback = Callable[[str, str, int, int], None]


class WeightsError(Exception):
    """Weights could not be resolved; ``code`` is a protocol error code, ``hint`` the fix."""

    def __init__(self, code: str, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.hint = hint


@dataclass(frozen=True)
class WeightsConfig:
    """How to reach Hugging Face: explicit token, cache folder, and whether the network is allowed."""

    token: str | None = None
    cache_dir: Path | None = None
    offline: bool = False


@dataclass(frozen=True)
class ModelPaths:
    """Resolved local folders: the main checkpoint and each dependency (repo id -> folder)."""

    model_dir: Path
    dependencies: dict[str, Path] = field(default_factory=dict)


def gated_notice(repos: list[str] | None = None) -> str:
    """What the user must do to use the gated models (all of them, or ``repos``)."""
    repos = list(GATED) if repos is None else repos
    lines = []
    for repo in repos:
        purpose, terms = GATED.get(repo, ("a dependency", "the model's terms"))
        lines.append(f"{repo} ({purpose}): accept {terms} at https://huggingface.co/{repo}")
    return (
        "Gated models: " + "; ".join(lines) + ". Approval can take days. Then create a read token at "
        "https://huggingface.co/settings/tokens and give it to the backend (add-on preferences), "
        "or point the matching model setting at a local folder holding a copy of that model."
    )


def is_repo_id(source: str) -> bool:
    """``owner/name`` with no other path parts, as Hugging Face spells repo ids."""
    parts = source.split("/")
    return len(parts) == 2 and all(p and not p.startswith(".") for p in parts) and "\\" not in source


def dependencies_of(model_dir: Path) -> list[str]:
    """Repo ids named in the checkpoint's ``pipeline.json`` (``owner/name`` or ``owner/name/sub/path``)."""
    path = model_dir / "pipeline.json"
    if not path.is_file():
        return []
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError("model_unavailable", f"{path} is not valid JSON: {exc}") from None
    found: list[str] = []

    def visit(value: object) -> None:
        if isinstance(value, dict):
            for v in value.values():
                visit(v)
        elif isinstance(value, list):
            for v in value:
                visit(v)
        elif isinstance(value, str) and value.count("/") >= 1 and not (model_dir / value).exists():
            repo = "/".join(value.split("/")[:2])
            if is_repo_id(repo) and not value.startswith(("ckpts/", "./", "/")) and repo not in found:
                found.append(repo)

    visit(config)
    return found


def cached_snapshot(repo: str, config: WeightsConfig, revision: str | None = None) -> Path | None:
    """The locally cached snapshot folder of ``repo``, or None; never touches the network."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, revision=revision, cache_dir=config.cache_dir,
                                      local_files_only=True, token=config.token))
    except Exception:  # noqa: BLE001 - any failure means "not cached"
        return None


def resolve(source: str, config: WeightsConfig, *, revision: str | None = None,
            overrides: dict[str, str] | None = None, on_download: DownloadCallback | None = None,
            cancel: CancelToken | None = None) -> ModelPaths:
    """Local folders for ``source`` and its dependencies, downloading what is missing.

    ``overrides`` maps a dependency's repo id to another source (a folder or repo id), e.g.
    a local copy of DINOv3.
    """
    overrides = overrides or {}
    cancel = cancel or CancelToken()
    on_download = on_download or (lambda repo, file, done, total: None)
    main = _resolve_one(source, config, revision, on_download, cancel)
    deps = [repo for repo in dependencies_of(main)
            if repo not in OPTIONAL or repo in overrides or cached_snapshot(repo, config) is not None]
    sources = {repo: overrides.get(repo, repo) for repo in deps}
    local = {repo: _local_path(src) for repo, src in sources.items() if not is_repo_id(src)}
    for repo, path in local.items():
        if not path.is_dir():
            raise WeightsError("model_unavailable", f"local copy of {repo} not found: {path}",
                               "point the setting at an existing folder")
    remote = {repo: src for repo, src in sources.items() if repo not in local}
    cached = {repo: cached_snapshot(src, config) for repo, src in remote.items()}
    missing = [src for repo, src in remote.items() if cached[repo] is None]
    if missing:
        _preflight(missing, config)
    resolved = dict(local)
    for repo, src in remote.items():
        cancel.check()
        resolved[repo] = cached[repo] or _download(src, config, None, on_download, cancel)
    return ModelPaths(model_dir=main, dependencies=resolved)


def _local_path(source: str) -> Path:
    """``source`` as a folder path (``~`` expanded), or a :class:`WeightsError` saying why it is none."""
    try:
        return Path(source).expanduser()
    except RuntimeError as exc:  # "~user" of a user that does not exist
        hint = f"give an existing folder or a Hugging Face repo id such as {TRELLIS2_REPO}"
        raise WeightsError("model_unavailable", f"model source {source!r} is not a usable path: {exc}",
                           hint) from None


def _resolve_one(source: str, config: WeightsConfig, revision: str | None,
                 on_download: DownloadCallback, cancel: CancelToken) -> Path:
    path = _local_path(source)
    if path.is_dir():
        return path.resolve()
    if not is_repo_id(source):
        raise WeightsError("model_unavailable", f"model source not found: {source}",
                           "give an existing folder or a Hugging Face repo id such as " + TRELLIS2_REPO)
    cached = cached_snapshot(source, config, revision)
    if cached is not None:
        return cached
    _preflight([source], config)
    return _download(source, config, revision, on_download, cancel)


def _preflight(repos: list[str], config: WeightsConfig) -> None:
    """Fail before downloading if any repo is unreachable offline, missing or gated for this token."""
    if config.offline:
        raise WeightsError(
            "model_unavailable", f"offline mode and not in the local cache: {', '.join(repos)}",
            "turn offline mode off to download them, or point the model settings at local folders"
            + (f". {gated_notice([r for r in repos if r in GATED])}" if set(repos) & set(GATED) else ""))
    from huggingface_hub import auth_check
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    gated = []
    for repo in repos:
        try:
            auth_check(repo, token=config.token)
        except GatedRepoError:
            gated.append(repo)
        except RepositoryNotFoundError:
            raise WeightsError("model_unavailable", f"no such model repository (or no access): {repo}",
                               "check the repo id, or give a token that can read it") from None
        except Exception as exc:  # noqa: BLE001 - network trouble
            raise WeightsError("model_unavailable", f"cannot reach Hugging Face for {repo}: {exc}",
                               "check the network, or use offline mode with local copies") from None
    if gated:
        raise WeightsError("gated_model", f"no access yet to gated model(s): {', '.join(gated)}",
                           gated_notice(gated))


def _download(repo: str, config: WeightsConfig, revision: str | None, on_download: DownloadCallback,
              cancel: CancelToken) -> Path:
    """Fetch ``repo`` file by file, reporting each file's size before and after."""
    from huggingface_hub import HfApi, hf_hub_download

    info = HfApi().model_info(repo, revision=revision, files_metadata=True, token=config.token)
    files = [(s.rfilename, int(s.size or 0)) for s in (info.siblings or [])]
    total_bytes = sum(size for _, size in files)
    log.info("downloading %s: %d files, %.2f GB", repo, len(files), total_bytes / 1e9)
    for name, size in files:
        cancel.check()
        on_download(repo, name, 0, size)
        hf_hub_download(repo, name, revision=info.sha, cache_dir=config.cache_dir, token=config.token)
        on_download(repo, name, size, size)
    path = cached_snapshot(repo, config, info.sha)
    if path is None:
        raise WeightsError("model_unavailable", f"{repo} was downloaded but is not in the cache")
    return path
