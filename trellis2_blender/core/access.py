"""Check, before any download, which model repositories the user's token can read (no ``bpy``).

:class:`AccessCheck` starts a short-lived backend (on the CPU; it imports no torch for this),
sends one ``check_access`` request with the same model settings a ``load`` would carry, and
stops the backend again, all on a helper thread; the operator polls ``state``.
:func:`describe` turns each repository's answer into one line for the user.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .. import protocol
from .client import BackendClient, BackendConfig, BackendError
from .session import BackendSettings

log = logging.getLogger(__name__)

RUNNING, OK, ERROR = "running", "ok", "error"
# Starting the backend plus one short hub probe per repository.
CHECK_TIMEOUT_S = 120.0


def describe(repo: protocol.RepoStatus) -> tuple[str, str]:
    """``(level, line)`` for one repository: level is "INFO" when usable, else "WARNING"."""
    size = f"{repo.bytes / 1e9:.2f} GB to download" if repo.bytes else "size unknown"
    usable = {
        "local": f"uses the local folder ({repo.detail.removeprefix('local copy ')})",
        "cached": "already downloaded",
        "ok": f"readable with your token, {size}",
    }
    if repo.status in usable:
        return "INFO", f"{repo.repo} ({repo.purpose}): {usable[repo.status]}"
    problems = {
        "gated": f"no access yet: accept {repo.licence} at {repo.licence_url} with the account of your "
                 "Hugging Face Token",
        "missing": "not found, or hidden from your token: check the Hugging Face Token or the folder setting",
        "offline": "not downloaded and online access is off (Preferences > System > Network)",
        "unreachable": f"Hugging Face did not answer ({repo.detail})",
    }
    return "WARNING", f"{repo.repo} ({repo.purpose}): {problems.get(repo.status, repo.status)}"


def download_summary(repos: list[protocol.RepoStatus]) -> tuple[bool, str]:
    """``(ready, text)`` for the download consent: ready when every repository is usable; the text
    gives the total and each repository's share, or the first problem."""
    blocked = [describe(r)[1] for r in repos if describe(r)[0] != "INFO"]
    if blocked:
        return False, blocked[0]
    fetched = [r for r in repos if r.status == "ok"]
    if not fetched:
        return True, "Nothing to download: every model is local or already downloaded."
    parts = ", ".join(f"{r.repo} {r.bytes / 1e9:.2f} GB" for r in fetched)
    total = sum(r.bytes for r in fetched)
    return True, f"To download: {total / 1e9:.2f} GB ({parts})."


class AccessCheck:
    """One ``check_access`` round trip on a helper thread; ``state`` is running, ok or error."""

    def __init__(self, settings: BackendSettings,
                 client_factory: Callable[[BackendConfig], BackendClient] = BackendClient) -> None:
        self.settings = settings
        self._client_factory = client_factory
        self.state = RUNNING
        self.message = ""
        self.repos: list[protocol.RepoStatus] = []
        self._thread = threading.Thread(target=self._run, daemon=True, name="trellis2-access-check")

    def start(self) -> None:
        problem = self.settings.problem()
        if problem:
            self.state, self.message = ERROR, problem
            return
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        args = ("--device", "cpu") + (("--offline",) if self.settings.offline else ())
        client = self._client_factory(BackendConfig(
            python=self.settings.python, backend_root=self.settings.backend_root,
            log_path=self.settings.log_path, server_args=args))
        try:
            client.start()
            request = client.check_access(self.settings.model_source, **self.settings.weight_fields())
            events = client.wait(request, CHECK_TIMEOUT_S)
        except (BackendError, OSError, TimeoutError) as exc:
            self.state, self.message = ERROR, f"The access check failed: {exc}"
            return
        finally:
            try:
                client.stop()
            except Exception:  # noqa: BLE001 - stopping a helper backend must not fail the check
                log.exception("stopping the access-check backend")
                client.kill()
        errors = [e for e in events if isinstance(e, protocol.Error)]
        reports = [e for e in events if isinstance(e, protocol.AccessReport)]
        if errors or not reports:
            first = errors[0] if errors else None
            self.state = ERROR
            self.message = (f"{first.message} ({first.hint})" if first is not None and first.hint
                            else first.message if first is not None else "The backend sent no access report")
            return
        self.repos = list(reports[0].repos)
        self.state = OK
        blocked = sum(describe(r)[0] != "INFO" for r in self.repos)
        self.message = ("Every model is available" if not blocked
                        else f"{blocked} of {len(self.repos)} models need attention")
