"""One fuzz case, run and judged: each check returns an outcome label.

Good outcomes: ``ok`` (the input was used) and ``refused:<code>`` (a typed error naming the
cause). Bad outcomes, which the fuzz tests and ``scripts/fuzz_long.py`` count and report:
``crash`` (any other exception), ``hang`` (over the case's time bound), ``escape`` (a file
outside the input's folder was opened, or one outside ``output_dir`` was written),
``damaged`` (an earlier good result no longer reads back whole), ``leftover`` (a request that
failed left files or folders that are not part of a whole result), ``unanswered`` (a line
without its reply) and ``internal`` (the server reported its own failure).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sys
import threading
import traceback
from pathlib import Path

from backend import protocol

GOOD = ("ok", "refused")
BAD = ("crash", "hang", "escape", "damaged", "leftover", "unanswered", "internal")


def is_good(outcome: str) -> bool:
    return outcome.split(":", 1)[0] in GOOD


# --- which files a case opens ------------------------------------------------------------------

class _OpenAudit:
    """Records the paths that ``open()`` sees (Python's ``open`` audit event) while active.

    Audit hooks cannot be removed, so one hook is installed per process and switched on and off.
    """

    def __init__(self) -> None:
        self.active = False
        self.paths: list[str] = []
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple) -> None:
        if self.active and event == "open" and args and isinstance(args[0], str | bytes | os.PathLike):
            self.paths.append(os.fsdecode(args[0]))


_audit: _OpenAudit | None = None
_IGNORED_SUFFIXES = (".py", ".pyc", ".so", ".pth", ".json.gz")


def _ignored(path: str) -> bool:
    """Interpreter and library files (lazy imports), and the kernel's own files."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, "/proc/", "/sys/", "/dev/"}
    return (path.endswith(_IGNORED_SUFFIXES) or any(path.startswith(r) for r in roots)
            or "site-packages" in path)


@contextlib.contextmanager
def opened_files():
    """Yields the list that fills with the (absolute, resolved) paths opened inside the block."""
    global _audit
    if _audit is None:
        _audit = _OpenAudit()
    _audit.paths = []
    _audit.active = True
    seen: list[str] = []
    try:
        yield seen
    finally:
        _audit.active = False
        seen += [str(Path(p).resolve()) for p in _audit.paths if not _ignored(p)]


def escapes(opened: list[str], folder: Path) -> list[str]:
    root = folder.resolve()
    return [p for p in opened if not Path(p).is_relative_to(root)]


# --- a time bound that does not need a second process ---------------------------------------------

class CaseTimeout(Exception):
    """The case ran past its time bound."""


@contextlib.contextmanager
def time_bound(seconds: float):
    """Raise :class:`CaseTimeout` inside the block after ``seconds`` (main thread only; no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise CaseTimeout(f"over {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --- file readers ---------------------------------------------------------------------------------------

def _read_case(folder: Path, name: str, data: bytes, read, typed: tuple[type[BaseException], ...],
               seconds: float) -> tuple[str, str]:
    """Write ``data`` as ``folder/name``, call ``read(path)``; (outcome, detail)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    outcome, detail = "ok", ""
    with opened_files() as opened:
        try:
            with time_bound(seconds):
                read(path)
        except CaseTimeout as exc:
            outcome, detail = "hang", str(exc)
        except typed as exc:
            outcome, detail = f"refused:{type(exc).__name__}", str(exc)
        except Exception as exc:  # noqa: BLE001 - that is what the fuzz suite looks for
            outcome, detail = "crash", "".join(traceback.format_exception(exc))[-2000:]
    outside = escapes(opened, folder)
    if outside:
        outcome, detail = "escape", f"opened {outside}"
    return outcome, detail


def check_mesh_file(folder: Path, name: str, data: bytes, seconds: float = 20.0) -> tuple[str, str]:
    from backend.geometry import MeshError
    from backend.meshio import read_mesh

    return _read_case(folder, name, data, lambda p: read_mesh(p).validate(), (MeshError,), seconds)


def check_ovoxel_file(folder: Path, name: str, data: bytes, seconds: float = 20.0) -> tuple[str, str]:
    from backend.ovoxel.io import read_ovoxel_file
    from backend.ovoxel.types import OVoxelError

    return _read_case(folder, name, data, read_ovoxel_file, (OVoxelError,), seconds)


def check_image_file(folder: Path, name: str, data: bytes, seconds: float = 20.0) -> tuple[str, str]:
    from backend.pipeline.errors import InputError
    from backend.pipeline.image import load_and_preprocess
    from backend.pipeline.rembg import SolidBackgroundRemover

    def read(path: Path) -> None:
        out = load_and_preprocess(path, SolidBackgroundRemover())
        if min(out.size) < 1:
            raise AssertionError(f"preprocessing produced an empty picture {out.size}")

    return _read_case(folder, name, data, read, (InputError,), seconds)


# --- serve ------------------------------------------------------------------------------------------

def tree_state(root: Path) -> dict[str, str]:
    """path -> content hash of every file below ``root`` ("dir" for folders)."""
    state = {}
    for dirpath, dirs, files in os.walk(root):
        state.update((str(Path(dirpath) / d), "dir") for d in dirs)
        for f in files:
            p = Path(dirpath) / f
            with contextlib.suppress(OSError):
                state[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return state


def result_is_whole(result_json: Path) -> bool:
    """The result folder's ``result.json`` parses and every file it names reads back."""
    import numpy as np

    try:
        doc = json.loads(result_json.read_text())
        mesh = result_json.parent / doc["mesh"]
        with np.load(mesh, allow_pickle=False) as z:
            for key in z.files:
                z[key]
        return (result_json.parent.parent / f"{doc['name']}.glb").read_bytes()[:4] == b"glTF"
    except (OSError, ValueError, KeyError, EOFError, TypeError):
        return False
    except Exception:  # noqa: BLE001 - zipfile and zlib errors of a damaged .npz
        return False


def _part_of_whole_result(path: Path) -> bool:
    """A file or folder of a complete result (a job of several inputs may fail after the first
    ones are written: those results are whole and stay), or a folder that leads to one."""
    if path.suffix == ".glb":
        return result_is_whole(path.with_suffix("") / "result.json")
    if path.is_dir():
        return any(result_is_whole(r) for r in path.rglob("result.json"))
    return result_is_whole(path.parent / "result.json")


def check_line(harness, line: bytes, sandbox: Path, out_dir: Path, keep: Path,
               seconds: float = 30.0) -> tuple[str, str]:
    """Send one line to ``harness`` (a :class:`ServiceHarness`) and judge what happened.

    ``sandbox`` holds every file of the case; only ``out_dir`` and the harness's own folder may
    change. ``keep`` is the ``result.json`` of an earlier good result that must stay whole.
    """
    before = tree_state(sandbox)
    try:
        events = harness.send(line, timeout_s=seconds)
    except TimeoutError as exc:
        return "hang", str(exc)
    except Exception as exc:  # noqa: BLE001 - the service promises handle_line never raises
        return "crash", "".join(traceback.format_exception(exc))[-2000:]
    changed = [p for p, h in tree_state(sandbox).items() if before.get(p) != h]
    outside = [p for p in changed if not Path(p).is_relative_to(out_dir) and
               not Path(p).is_relative_to(harness.root)]
    if outside:
        return "escape", f"wrote {outside}"
    if not result_is_whole(keep):
        return "damaged", f"{keep} no longer reads back after {line[:200]!r}"
    if not events:
        return "unanswered", f"no event for {line[:200]!r}"
    errors = [e for e in events if isinstance(e, protocol.Error)]
    for e in errors:
        if e.code not in protocol.ERROR_CODES:
            return "crash", f"unknown error code {e.code!r}"
        if e.code == "internal":
            return "internal", f"{e.message} for {line[:200]!r}"
    dones = [e for e in events if isinstance(e, protocol.Done)]
    ids = {e.job for e in dones}
    if len(ids) != len(dones) or (dones and events[-1] is not dones[-1]):
        return "crash", f"done not exactly once and last: {events}"
    if not dones and not any(e.job is None for e in errors):
        return "unanswered", f"neither a done nor an error for {line[:200]!r}: {events}"
    if errors:
        partial = [c for c in changed if not _part_of_whole_result(Path(c))]
        if partial and any(d.status == "error" for d in dones):
            return "leftover", f"a failed request left {partial[:5]}"
        return f"refused:{errors[0].code}", errors[0].message
    return "ok", ""


# --- the case's files ------------------------------------------------------------------------------------

def make_sandbox(root: Path) -> dict[str, Path]:
    """The folders and files a fuzz run uses, under ``root``; returns them by role.

    ``inputs``: where file cases are written (``secret.bin`` lies next to it, outside);
    ``out``: the output folder requests may name, holding an earlier good result whose
    ``result.json`` is ``keep``; ``server``: the harness's own folder; ``image``, ``mesh``,
    ``bad_image``, ``bad_mesh``: files that requests may name.
    """
    from tests.fixtures import images
    from tests.fixtures.mesh_files import glb_bytes, triangle_glb_parts
    from tests.fuzz.reading_generator import write_result

    from .strategies import SECRET_NAME

    roles = {"inputs": root / "inputs", "out": root / "out", "server": root / "server",
             "files": root / "files"}
    for folder in roles.values():
        folder.mkdir(parents=True, exist_ok=True)
    (root / SECRET_NAME).write_bytes(b"secret: must never be read")
    roles["image"] = images.rgba_transparent(roles["files"] / "object.png")
    roles["mesh"] = roles["files"] / "object.glb"
    roles["mesh"].write_bytes(glb_bytes(*triangle_glb_parts()))
    roles["bad_image"] = roles["files"] / "broken.png"
    roles["bad_image"].write_bytes(roles["image"].read_bytes()[:100])
    roles["bad_mesh"] = roles["files"] / "broken.glb"
    roles["bad_mesh"].write_bytes(glb_bytes([1, 2]))
    roles["keep"] = write_result(roles["out"], "keep", "an earlier good result").direct
    return roles
