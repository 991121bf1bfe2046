"""Third-party calls that may hang, run in a child process that can be abandoned.

Some native libraries never return on hostile input (xatlas on a mesh at 1e30 scale
charts forever) and hold the GIL while they run, so a thread in the same process can
neither stop them nor answer anything else: the server would stop answering ``cancel``,
``status`` and ``shutdown``. :func:`run_isolated` runs such a call in a freshly spawned
process instead. The caller waits in short polls, checking its cancel token; on cancel,
on timeout, or when the child dies, the child is killed and the job gets a typed error.
The child also runs under an address-space limit, so runaway memory use fails there.
"""

from __future__ import annotations

import logging
import multiprocessing
import pickle
import time
from collections.abc import Callable
from typing import Any

from .api import CancelToken
from .errors import InputError, PipelineError

log = logging.getLogger(__name__)

POLL_S = 0.05  # how often the caller checks the cancel token while it waits


class StageTimeout(InputError):
    """A third-party call ran past its time limit and was stopped."""


def _child(conn, fn: Callable[..., Any], args: tuple, memory_bytes: int | None) -> None:
    if memory_bytes is not None:
        try:
            import resource  # Linux and macOS
        except ImportError:  # Windows: no address-space limit; the time limit and cancel still hold
            resource = None
        if resource is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    try:
        outcome = ("ok", fn(*args))
    except MemoryError:
        outcome = ("memory", None)
    except Exception as exc:  # noqa: BLE001 - handed to the caller, which re-raises it
        outcome = ("error", exc)
    try:
        conn.send(outcome)
    except (pickle.PicklingError, TypeError, AttributeError):
        conn.send(("error", RuntimeError(f"{type(outcome[1]).__name__}: {outcome[1]}")))
    conn.close()


def run_isolated(fn: Callable[..., Any], *args: Any, what: str, timeout_s: float,
                 cancel: CancelToken | None = None, memory_bytes: int | None = None) -> Any:
    """``fn(*args)`` in a spawned child process; its return value (both must pickle).

    Args:
        fn: a module-level function (the child imports it by name).
        what: the step, for messages ("UV unwrapping (xatlas)").
        timeout_s: the longest the call may take before it is stopped.
        cancel: checked every :data:`POLL_S` seconds; a cancelled job stops the child at once.
        memory_bytes: the child's address-space limit (None: unlimited; not applied on Windows).

    Raises:
        Cancelled: ``cancel`` was set (the child has been killed).
        StageTimeout: the call ran past ``timeout_s`` (killed).
        InputError: the call ran out of ``memory_bytes``.
        PipelineError: the child process died without an answer.
        Exception: whatever ``fn`` raised, re-raised here.
    """
    if cancel is not None:
        cancel.check()  # a cancelled job starts nothing
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(send, fn, args, memory_bytes), daemon=True,
                        name=f"isolated {what}")
    child.start()
    send.close()
    deadline = time.monotonic() + timeout_s
    try:
        while not receive.poll(POLL_S):
            if cancel is not None:
                cancel.check()
            if time.monotonic() > deadline:
                raise StageTimeout(f"{what} did not finish within {timeout_s:.0f} s and was stopped",
                                   "the input may be degenerate (extreme scale, many tiny faces)")
            if not child.is_alive() and not receive.poll():
                raise PipelineError(f"{what} failed: its worker process ended with code {child.exitcode}")
        try:
            status, value = receive.recv()
        except EOFError:
            raise PipelineError(f"{what} failed: its worker process ended without an answer") from None
    finally:
        if child.is_alive():
            child.kill()
            log.info("stopped the %s worker (pid %s)", what, child.pid)
        child.join(5)
        receive.close()
    if status == "memory":
        limit = f"{memory_bytes / 2**30:.1f} GiB" if memory_bytes else "the available memory"
        raise InputError(f"{what} needed more than {limit}", "the input may be too large or degenerate")
    if status == "error":
        raise value
    return value
