"""Which torch device a job runs on, and which sparse-convolution path suits it.

One place for both choices, used by the CLI, the server and :class:`~.generator.Trellis2Generator`:

* ``"auto"`` means the first CUDA GPU, else Apple's GPU (``"mps"``), else the CPU;
* the sparse convolution uses the Triton kernel only on CUDA and only when ``triton`` imports
  (Linux wheels ship it; on Windows it is the optional ``triton-windows`` package); everywhere
  else it takes the torch gather-GEMM path, which gives the same results.

On Apple GPUs, operators that MPS lacks run on the CPU: ``python -m backend`` turns on
PyTorch's MPS fallback before torch is imported (see ``backend/__main__.py``).
"""

from __future__ import annotations

import importlib
import logging
import re

from .errors import InputError

log = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cuda", "cuda:N", "mps", "cpu")
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device_name(device: str) -> str:
    """``device`` when it is one of :data:`DEVICE_CHOICES` (``cuda:N`` with a number).

    Raises:
        InputError: anything else, naming the ``--device`` flag.
    """
    if not _DEVICE_PATTERN.match(device):
        raise InputError(f"unknown device {device!r}", f"--device takes one of {', '.join(DEVICE_CHOICES)}")
    return device


def resolve_device(requested: str | None) -> str:
    """The torch device for ``requested`` ("auto" or None: CUDA, else MPS, else CPU).

    An explicit accelerator that this machine lacks is refused rather than silently replaced.

    Raises:
        InputError: an unknown name, or CUDA/MPS asked for where torch cannot use it.
    """
    import torch

    device = check_device_name(requested or "auto")
    cuda, mps = torch.cuda.is_available(), _mps_available(torch)
    if device == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if device.startswith("cuda") and not cuda:
        raise InputError(f"--device {device} asked for, but torch sees no CUDA GPU",
                         "use --device auto or cpu, or install a CUDA build of torch")
    if device == "mps" and not mps:
        raise InputError("--device mps asked for, but this torch has no Apple GPU (MPS) support",
                         "use --device auto or cpu")
    return device


def _mps_available(torch) -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def triton_importable() -> bool:
    """Whether ``import triton`` works in this process (a broken install counts as missing)."""
    try:
        importlib.import_module("triton")
    except Exception as exc:  # noqa: BLE001 - ImportError, or a wheel that fails while loading
        log.debug("triton unavailable: %s", exc)
        return False
    return True


def conv_backend_for(device: str, triton_ok: bool) -> str:
    """``"triton"`` on CUDA when Triton imports, else ``"torch"`` (a ``backend.sparse.conv.ConvBackend``)."""
    return "triton" if device.startswith("cuda") and triton_ok else "torch"
