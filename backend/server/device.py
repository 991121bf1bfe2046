"""What the machine offers, for the ``hello`` reply: device, its name and memory."""

from __future__ import annotations

import logging
import sys
from typing import Any

log = logging.getLogger(__name__)


def describe(device: str) -> dict[str, Any]:
    """``device`` is "auto", "cpu", "mps" or "cuda[:N]"; "cpu" never imports torch.

    Returns ``device``, ``device_name``, ``gpu_memory_total`` and ``gpu_memory_free`` (bytes).
    """
    info: dict[str, Any] = {"device": "cpu", "device_name": "CPU",
                            "gpu_memory_total": 0, "gpu_memory_free": 0}
    if device == "cpu":
        return info
    try:
        import torch
    except ImportError:
        log.warning("torch is not installed; reporting a CPU device")
        return info
    if not torch.cuda.is_available():
        mps = getattr(torch.backends, "mps", None)
        if device in ("auto", "mps") and mps is not None and mps.is_available():
            # Apple GPUs share the system memory; torch reports no total for them.
            info.update(device="mps", device_name="Apple GPU (MPS)")
        return info
    index = int(device.split(":")[1]) if device.startswith("cuda:") else 0
    free, total = torch.cuda.mem_get_info(index)
    info.update(device=f"cuda:{index}", device_name=torch.cuda.get_device_name(index),
                gpu_memory_total=int(total), gpu_memory_free=int(free))
    return info


def release_memory() -> None:
    """Return cached GPU memory to the driver, if torch is already in use (never imports it)."""
    import gc

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def rss_bytes() -> int:
    """This process's resident memory (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
