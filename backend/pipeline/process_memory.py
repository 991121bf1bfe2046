"""Peak resident memory of this process, on every platform the backend runs on.

``resource`` exists on Linux and macOS only; Windows reports the peak working set through
``GetProcessMemoryInfo`` (psapi). Either way the answer is in bytes.
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process in bytes (0 when the platform does not tell)."""
    try:
        import resource
    except ImportError:  # Windows
        return _windows_peak_working_set()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # macOS counts bytes, Linux KiB


class _ProcessMemoryCounters(ctypes.Structure):
    # PROCESS_MEMORY_COUNTERS from psapi.h; only PeakWorkingSetSize is read.
    _fields_ = [("cb", ctypes.c_uint32), ("PageFaultCount", ctypes.c_uint32),
                ("PeakWorkingSetSize", ctypes.c_size_t), ("WorkingSetSize", ctypes.c_size_t),
                ("QuotaPeakPagedPoolUsage", ctypes.c_size_t), ("QuotaPagedPoolUsage", ctypes.c_size_t),
                ("QuotaPeakNonPagedPoolUsage", ctypes.c_size_t), ("QuotaNonPagedPoolUsage", ctypes.c_size_t),
                ("PagefileUsage", ctypes.c_size_t), ("PeakPagefileUsage", ctypes.c_size_t)]


def _windows_peak_working_set() -> int:
    windll = getattr(ctypes, "windll", None)
    if windll is None:
        return 0
    counters = _ProcessMemoryCounters()
    counters.cb = ctypes.sizeof(counters)
    try:
        handle = windll.kernel32.GetCurrentProcess()
        ok = windll.psapi.GetProcessMemoryInfo(handle, ctypes.byref(counters), counters.cb)
    except OSError as exc:
        log.debug("GetProcessMemoryInfo unavailable: %s", exc)
        return 0
    return int(counters.PeakWorkingSetSize) if ok else 0
