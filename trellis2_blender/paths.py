"""Where things live: the add-on's user folder, the backend sources and the backend's Python.

Only :func:`user_dir` touches ``bpy``; the rest is plain path logic that takes its
inputs as arguments so it can be tested without Blender.
"""

from __future__ import annotations

from pathlib import Path

from .core.setup_env import venv_python

ADDON_DIR = Path(__file__).resolve().parent
# Blender's name for this package when it is not installed as an extension (a dev checkout).
_FALLBACK_NAME = "trellis2_blender"


def user_dir(*parts: str) -> Path:
    """A writable folder of ours (``logs``, ``jobs``, ``backend-env`` ...), created on demand.

    Installed extensions get ``extension_path_user``; a package imported from a
    checkout (tests, the batch script) gets a folder under Blender's user data.
    """
    import bpy

    sub = "/".join(parts)
    try:
        base = bpy.utils.extension_path_user(__package__, path=sub, create=True)
    except ValueError:
        base = bpy.utils.user_resource("DATAFILES", path="/".join((_FALLBACK_NAME, sub)).rstrip("/"),
                                       create=True)
    return Path(base)


def backend_root(addon_dir: Path = ADDON_DIR) -> Path | None:
    """The folder that holds the ``backend`` package: the bundled payload, else the dev checkout."""
    for candidate in (addon_dir / "payload", addon_dir.parent):
        if (candidate / "backend" / "__init__.py").is_file():
            return candidate
    return None


def looks_like_repo_id(source: str) -> bool:
    """``owner/name`` that is not an existing folder: a Hugging Face repository id."""
    parts = source.split("/")
    return (len(parts) == 2 and all(p and not p.startswith(".") for p in parts)
            and "\\" not in source and not Path(source).expanduser().is_dir())


def find_backend_python(configured: str, managed_env: Path | None,
                        addon_dir: Path = ADDON_DIR) -> Path | None:
    """The interpreter that runs the backend, or None when there is none yet.

    Order: the path set in the preferences; the environment our setup button made
    (``managed_env``); the ``.venv`` of a dev checkout next to the add-on sources.
    """
    if configured:
        path = Path(configured).expanduser()
        return path if path.is_file() else None
    candidates = []
    if managed_env is not None:
        candidates.append(venv_python(managed_env))
    root = backend_root(addon_dir)
    if root is not None:
        candidates.append(venv_python(root / ".venv"))
        candidates.append(venv_python(root.parent / ".venv"))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None
