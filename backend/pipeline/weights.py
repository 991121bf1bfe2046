"""The one resolver for model weights: local folders or Hugging Face repositories.

The CLI (:func:`.runtime.resolve_model`), the server's ``load`` and its ``check_access``
request all come through here; the checkpoint loader (``backend.models.loading``) and the
:class:`~.runtime.ModelStore` read only the folders it returns and never reach the hub.
A source is an existing folder or a repo id (``owner/name``).
Besides the release itself, TRELLIS.2's ``pipeline.json`` names other repositories: DINOv3
(gated), the sparse-structure decoder inside ``microsoft/TRELLIS-image-large``, and, when the
user chooses it, RMBG-2.0 (gated, non-commercial). Each can be replaced by a local folder
(``overrides``); :data:`.model_source.WEIGHT_REPOS` says which flag and add-on setting do that.

Before anything is downloaded, every repo that is not cached is probed with a short timeout
and checked for access with the user's token, so a user without approval, or without a
network, learns it at once, with a message naming what to accept and which flag or setting
takes a local copy. Downloads fetch only the files the pipeline reads (``allow_patterns``),
report bytes as they arrive, stop at the next progress report after a cancel, and resume the
partial files on the next attempt (the hub keeps them). Tokens are passed explicitly and never
logged; nothing here reads the environment.
"""

from __future__ import annotations

import fnmatch
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from backend import protocol

from .api import CancelToken
from .errors import ModelUnavailableError
from .model_source import (
    DINOV3_REPO,
    RMBG_REPO,
    SS_DECODER_REPO,
    TRELLIS2_EXTERNAL_REFERENCES,
    TRELLIS2_REPO,
    WEIGHT_REPOS,
    WeightRepo,
)

log = logging.getLogger(__name__)

__all__ = ["TRELLIS2_REPO", "SS_DECODER_REPO", "DINOV3_REPO", "RMBG_REPO", "OPTIONAL", "HUB_PROBE_TIMEOUT_S",
           "OFFLINE_HINT", "WeightsError", "WeightsConfig", "ModelPaths", "RepoAccess", "gated_notice",
           "is_repo_id", "dependencies_of", "allow_patterns_for", "cached_snapshot", "missing_from_release",
           "resolve", "check_access"]

# Used only when the user names a copy (or it is already cached): the pipeline can do without it
# (images with alpha, or a plain-background keyer), so it is never downloaded unasked.
OPTIONAL = frozenset({RMBG_REPO})
# Seconds to wait for Hugging Face before calling a repository unreachable.
HUB_PROBE_TIMEOUT_S = 5.0
OFFLINE_HINT = ("drop --offline (command line) or allow online access in Blender (Preferences > System > "
                "Network) to download them")

# on_download(repo, file, bytes_done, bytes_total); file is "" for a repo's running total.
DownloadCallback = Callable[[str, str, int, int], None]


class WeightsError(ModelUnavailableError):
    """Weights could not be resolved; ``code`` is a protocol error code, ``hint`` the fix."""

    def __init__(self, code: str, message: str, hint: str = "") -> None:
        super().__init__(message, hint)
        self.code = code


@dataclass(frozen=True)
class WeightsConfig:
    """How to reach Hugging Face: the user's token (never printed), cache folder, network allowed."""

    token: str | None = field(default=None, repr=False)
    cache_dir: Path | None = None
    offline: bool = False


@dataclass(frozen=True)
class ModelPaths:
    """Resolved local folders: the main checkpoint and each dependency (repo id -> folder)."""

    model_dir: Path
    dependencies: dict[str, Path] = field(default_factory=dict)


# What :func:`check_access` finds for one repository is the protocol's own record, so the
# server sends it as is (field meanings in :class:`backend.protocol.RepoStatus`).
RepoAccess = protocol.RepoStatus


def _describe(repo: str) -> WeightRepo:
    return WEIGHT_REPOS.get(repo) or WeightRepo(repo, "a model the release names", "see its model card",
                                                 False, (), "--model", "Model Source: Local Folder")


def gated_notice(repos: list[str] | None = None) -> str:
    """What the user must do to use the gated models (all of them, or ``repos``)."""
    repos = [w.repo for w in WEIGHT_REPOS.values() if w.gated] if repos is None else repos
    lines = [f"{repo} ({_describe(repo).purpose}): accept {_describe(repo).licence} at "
             f"{_describe(repo).licence_url}, {_describe(repo).local_copy_hint()}" for repo in repos]
    return ("Gated models: " + "; ".join(lines) + ". Approval can take days. Then create a read token at "
            "https://huggingface.co/settings/tokens and paste it into the add-on (add-on preferences: "
            "Hugging Face Token); on the command line, log in once with `hf auth login`.")


def is_repo_id(source: str) -> bool:
    """``owner/name`` with no other path parts, as Hugging Face spells repo ids."""
    parts = source.split("/")
    return len(parts) == 2 and all(p and not p.startswith(".") for p in parts) and "\\" not in source


def _references(model_dir: Path) -> dict[str, list[str]]:
    """Repo id -> sub-paths the release's pipeline files name inside it ("" for the whole repo)."""
    found: dict[str, list[str]] = {}
    for name in ("pipeline.json", "texturing_pipeline.json"):
        path = model_dir / name
        if not path.is_file():
            continue
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise WeightsError("model_unavailable", f"{path} is not valid JSON: {exc}",
                               "download the release again, or point --model at another folder") from None
        _collect(config, model_dir, found)
    return found


def _collect(value: object, model_dir: Path, found: dict[str, list[str]]) -> None:
    if isinstance(value, dict):
        for v in value.values():
            _collect(v, model_dir, found)
    elif isinstance(value, list):
        for v in value:
            _collect(v, model_dir, found)
    elif isinstance(value, str) and value.count("/") >= 1 and not (model_dir / value).exists():
        parts = value.split("/")
        repo = "/".join(parts[:2])
        if is_repo_id(repo) and not value.startswith(("ckpts/", "./", "/")):
            subs = found.setdefault(repo, [])
            sub = "/".join(parts[2:])
            if sub not in subs:
                subs.append(sub)


def dependencies_of(model_dir: Path) -> list[str]:
    """Repo ids named in the checkpoint's pipeline files (``owner/name`` or ``owner/name/sub/path``)."""
    return list(_references(model_dir))


def allow_patterns_for(repo: str, subpaths: list[str] | None = None) -> list[str] | None:
    """The files of ``repo`` the pipeline reads: ``sub.json``/``sub.safetensors`` for each named
    checkpoint, else the repo's :class:`WeightRepo` patterns; None means every file."""
    named = [p for sub in (subpaths or []) if sub for p in (f"{sub}.json", f"{sub}.safetensors")]
    if named:
        return named
    patterns = _describe(repo).allow_patterns
    return list(patterns) if patterns else None


def cached_snapshot(repo: str, config: WeightsConfig, revision: str | None = None) -> Path | None:
    """The locally cached snapshot folder of ``repo``, or None; never touches the network."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, revision=revision, cache_dir=config.cache_dir,
                                      local_files_only=True, token=config.token))
    except Exception:  # noqa: BLE001 - any failure means "not cached"
        return None


def missing_from_release(root: Path) -> list[str]:
    """``ckpts/`` files the release's pipeline files name but the folder lacks."""
    missing: list[str] = []
    for name in ("pipeline.json", "texturing_pipeline.json"):
        path = root / name
        if not path.is_file():
            continue
        for ref in json.loads(path.read_text(encoding="utf-8")).get("args", {}).get("models", {}).values():
            if str(ref).startswith("ckpts/"):
                missing += [f"{ref}{ext}" for ext in (".json", ".safetensors")
                            if not (root / f"{ref}{ext}").is_file()]
    return missing


def _complete_cached(repo: str, config: WeightsConfig, revision: str | None,
                     subpaths: list[str]) -> Path | None:
    """The cached snapshot when it holds what the pipeline reads from it, else None."""
    root = cached_snapshot(repo, config, revision)
    if root is None:
        return None
    needed = [n for n in (allow_patterns_for(repo, subpaths) or []) if not any(c in n for c in "*?[")]
    if any(not (root / n).is_file() for n in needed):
        return None
    if (root / "pipeline.json").is_file() and missing_from_release(root):
        return None
    return root


def resolve(source: str, config: WeightsConfig, *, revision: str | None = None,
            overrides: dict[str, str] | None = None, on_download: DownloadCallback | None = None,
            cancel: CancelToken | None = None) -> ModelPaths:
    """Local folders for ``source`` and the repos its pipeline files name, downloading what is missing.

    ``overrides`` maps a dependency's repo id to another source (a folder or repo id), e.g. a local
    copy of DINOv3; an override for an optional repo (RMBG-2.0) asks for it.

    Raises:
        WeightsError: a folder that does not exist, offline without a cached copy, a hub that does
            not answer, access refused (code ``gated_model``), or a failed download.
    """
    overrides = overrides or {}
    cancel = cancel or CancelToken()
    on_download = on_download or (lambda repo, file, done, total: None)
    main = _resolve_one(source, config, revision, [], on_download, cancel)
    refs = _references(main)
    deps = [repo for repo in refs
            if repo not in OPTIONAL or repo in overrides or cached_snapshot(repo, config) is not None]
    sources = {repo: overrides.get(repo, repo) for repo in deps}
    local = {repo: _local_path(src) for repo, src in sources.items() if not is_repo_id(src)}
    for repo, path in local.items():
        if not path.is_dir():
            info = _describe(repo)
            raise WeightsError("model_unavailable", f"local copy of {repo} not found: {path}",
                               f"point {info.cli_flag} (add-on preferences: {info.setting}) at an "
                               "existing folder")
    remote = {repo: src for repo, src in sources.items() if repo not in local}
    cached = {repo: _complete_cached(src, config, None, refs.get(repo, [])) for repo, src in remote.items()}
    missing = [src for repo, src in remote.items() if cached[repo] is None]
    if missing:
        _preflight(missing, config)
    resolved = dict(local)
    for repo, src in remote.items():
        cancel.check()
        resolved[repo] = cached[repo] or _download(src, config, None, allow_patterns_for(src, refs.get(repo)),
                                                   on_download, cancel)
    return ModelPaths(model_dir=main, dependencies=resolved)


def _local_path(source: str) -> Path:
    """``source`` as a folder path (``~`` expanded), or a :class:`WeightsError` saying why it is none."""
    try:
        return Path(source).expanduser()
    except RuntimeError as exc:  # "~user" of a user that does not exist
        hint = f"give an existing folder or a Hugging Face repo id such as {TRELLIS2_REPO}"
        raise WeightsError("model_unavailable", f"model source {source!r} is not a usable path: {exc}",
                           hint) from None


def _resolve_one(source: str, config: WeightsConfig, revision: str | None, subpaths: list[str],
                 on_download: DownloadCallback, cancel: CancelToken) -> Path:
    path = _local_path(source)
    if path.is_dir():
        return path.resolve()
    if not is_repo_id(source):
        raise WeightsError("model_unavailable", f"model folder {source} does not exist",
                           f"point --model (add-on preferences: Model Source: Local Folder) at a TRELLIS.2 "
                           f"release folder, or give a Hugging Face repo id such as {TRELLIS2_REPO}")
    cached = _complete_cached(source, config, revision, subpaths)
    if cached is not None:
        return cached
    _preflight([source], config)
    return _download(source, config, revision, allow_patterns_for(source, subpaths), on_download, cancel)


def _preflight(repos: list[str], config: WeightsConfig) -> None:
    """Fail before downloading if any repo is unreachable offline, missing or gated for this token."""
    if config.offline:
        gated = [r for r in repos if _describe(r).gated]
        copies = "; ".join(f"{r}: {_describe(r).cli_flag} DIR (add-on preferences: {_describe(r).setting})"
                           for r in repos)
        raise WeightsError(
            "model_unavailable", f"offline, and not in the local Hugging Face cache: {', '.join(repos)}",
            f"{OFFLINE_HINT}, or use local copies ({copies})" + (f". {gated_notice(gated)}" if gated else ""))
    refused = []
    for repo in repos:
        status, detail = _probe(repo, config)
        if status == "gated":
            refused.append(repo)
        elif status == "missing":
            raise WeightsError("model_unavailable", f"no such model repository (or no access): {repo}",
                               "check the repo id, or give a token that can read it (add-on preferences: "
                               "Hugging Face Token; command line: `hf auth login`)")
        elif status != "ok":
            raise WeightsError("model_unavailable", f"Hugging Face is unreachable for {repo} ({detail})",
                               f"check the network, or work offline with local copies: "
                               f"{_describe(repo).local_copy_hint().removeprefix('or ')}")
    if refused:
        raise WeightsError("gated_model", f"no access yet to gated model(s): {', '.join(refused)}",
                           gated_notice(refused))


def _probe(repo: str, config: WeightsConfig) -> tuple[str, str]:
    """``("ok" | "gated" | "missing" | "unreachable", detail)`` for ``repo`` and this token; a hub
    that does not answer within :data:`HUB_PROBE_TIMEOUT_S` counts as unreachable."""
    from huggingface_hub import HfApi, auth_check
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().model_info(repo, timeout=HUB_PROBE_TIMEOUT_S, token=config.token)
        auth_check(repo, token=config.token)
    except GatedRepoError:
        return "gated", "licence not accepted for this token"
    except RepositoryNotFoundError:
        return "missing", "no such repository, or hidden from this token"
    except Exception as exc:  # noqa: BLE001 - network trouble of any kind
        text = str(exc).splitlines()
        return "unreachable", f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return "ok", ""


def _wanted(name: str, patterns: list[str] | None) -> bool:
    return patterns is None or any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _planned_files(repo: str, config: WeightsConfig, revision: str | None,
                   patterns: list[str] | None) -> tuple[str, list[tuple[str, int]]]:
    """The commit and the (file, size) pairs of ``repo`` matching ``patterns``."""
    from huggingface_hub import HfApi

    info = HfApi().model_info(repo, revision=revision, files_metadata=True, token=config.token,
                              timeout=HUB_PROBE_TIMEOUT_S)
    files = [(s.rfilename, int(s.size or 0)) for s in (info.siblings or []) if _wanted(s.rfilename, patterns)]
    return info.sha, files


def _download(repo: str, config: WeightsConfig, revision: str | None, patterns: list[str] | None,
              on_download: DownloadCallback, cancel: CancelToken) -> Path:
    """Fetch the files of ``repo`` that match ``patterns``, reporting bytes as they arrive."""
    from huggingface_hub import snapshot_download

    try:
        sha, files = _planned_files(repo, config, revision, patterns)
    except Exception as exc:  # noqa: BLE001 - hub errors come in many classes
        raise WeightsError("model_unavailable", f"cannot list the files of {repo}: {exc}",
                           "check the network and try again") from None
    total = sum(size for _, size in files)
    log.info("downloading %s: %d files, %.2f GB", repo, len(files), total / 1e9)
    on_download(repo, "", 0, total)
    try:
        path = snapshot_download(repo, revision=sha, cache_dir=config.cache_dir, token=config.token,
                                 allow_patterns=[name for name, _ in files],
                                 tqdm_class=_progress_class(repo, total, len(files), on_download, cancel))
    except Exception as exc:
        cancel.check()  # a cancel raised inside the hub's worker threads ends here as Cancelled
        raise WeightsError("model_unavailable", f"downloading {repo} failed: {exc}",
                           "try again: finished files are kept and partial ones resume") from None
    on_download(repo, "", total, total)
    return Path(path)


def _progress_class(repo: str, total: int, count: int, on_download: DownloadCallback, cancel: CancelToken):
    """A tqdm class for ``snapshot_download`` that turns its bars into ``on_download`` reports.

    Byte bars (``unit="B"``) report bytes; where the hub only shows a files bar, the finished share
    of files stands in. Every update checks ``cancel``: raising there stops the download.
    """
    from huggingface_hub.utils import tqdm as hub_tqdm

    class DownloadProgress(hub_tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True  # no terminal output: stdout may be the server's protocol channel
            self.counts_bytes = kwargs.get("unit") == "B"
            self.seen = 0
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            cancel.check()
            self.seen += int(n or 0)
            done = self.seen if self.counts_bytes else total * self.seen // max(count, 1)
            on_download(repo, "", min(done, total), total)
            return super().update(n)

    return DownloadProgress


def check_access(source: str, config: WeightsConfig,
                 overrides: dict[str, str] | None = None) -> list[RepoAccess]:
    """Per repository the release needs: readable with this token, where to accept its licence, and
    the download size of the files the pipeline reads. Never downloads weights.

    ``source`` is a folder or a repo id; for a repo id the dependencies come from its cached
    ``pipeline.json``, else, before anything was downloaded, from the known TRELLIS.2 ones
    (:data:`.model_source.TRELLIS2_EXTERNAL_REFERENCES`; none for another repo).
    """
    overrides = overrides or {}
    reports = [_access(source, config, [])] if is_repo_id(source) else []
    path = Path(source).expanduser()
    if path.is_dir():
        refs = _references(path)
    else:
        root = cached_snapshot(source, config) if is_repo_id(source) else None
        known = TRELLIS2_EXTERNAL_REFERENCES if source == TRELLIS2_REPO else {}
        refs = _references(root) if root is not None else {repo: list(subs) for repo, subs in known.items()}
    for repo, subs in refs.items():
        if repo in OPTIONAL and repo not in overrides:
            continue
        src = overrides.get(repo, repo)
        if not is_repo_id(src):
            info = _describe(repo)
            status = "local" if Path(src).expanduser().is_dir() else "missing"
            reports.append(RepoAccess(repo, info.purpose, info.licence, status, info.licence_url,
                                      detail=f"local copy {src}"))
        else:
            reports.append(_access(src, config, subs))
    for repo, src in overrides.items():
        if repo not in refs and repo in OPTIONAL and is_repo_id(src):
            reports.append(_access(src, config, []))
    return reports


def _access(repo: str, config: WeightsConfig, subpaths: list[str]) -> RepoAccess:
    info = _describe(repo)
    if _complete_cached(repo, config, None, subpaths) is not None:
        return RepoAccess(repo, info.purpose, info.licence, "cached", info.licence_url)
    if config.offline:
        return RepoAccess(repo, info.purpose, info.licence, "offline", info.licence_url, detail=OFFLINE_HINT)
    status, detail = _probe(repo, config)
    size = 0
    if status == "ok":
        try:
            _, files = _planned_files(repo, config, None, allow_patterns_for(repo, subpaths))
            size = sum(s for _, s in files)
        except Exception as exc:  # noqa: BLE001 - the size is a courtesy; access was confirmed
            detail = f"size unknown ({type(exc).__name__})"
    return RepoAccess(repo, info.purpose, info.licence, status, info.licence_url, size, detail)
