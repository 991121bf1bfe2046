"""Autotune configurations for the sparse conv kernel, as data plus a prune filter.

Shipped tuned configs (``tuned_configs.json`` beside this file) skip autotuning on GPUs that
were tuned before: ``{device name: {key: config}}``.

* device name: exactly as ``torch.cuda.get_device_name()`` gives it, e.g. ``"NVIDIA H200"``.
* key: Triton's autotune key for the launch, its parts joined by commas (:func:`table_key`):
  ``LOGN,Ci,Co,FP32_IEEE`` (``LOGN = floor(log2 N)``), then the dtypes of the kernel's tensor
  arguments in order: feats, weight, bias (the output when there is none), neighbours, output.
  E.g. ``"14,1024,4096,False,torch.float16,torch.float16,torch.float16,torch.int32,torch.float16"``.
* config: ``{"BLOCK_N", "BLOCK_CO", "BLOCK_K", "num_warps", "num_stages"}``, all ints.

The table is written by ``scripts/tune_sparse_conv.py`` on the GPU it describes. A malformed
table raises ``ValueError`` naming the file and the entry: it ships with the code and a test
checks it, so a bad entry is a build bug, and skipping it would silently bring back the
first-job tuning the table exists to avoid.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import triton

log = logging.getLogger(__name__)

TUNED_CONFIGS_PATH = Path(__file__).with_name("tuned_configs.json")
CONFIG_FIELDS = ("BLOCK_N", "BLOCK_CO", "BLOCK_K", "num_warps", "num_stages")
_KEY_PATTERN = re.compile(r"\d+,\d+,\d+,(True|False)(,torch\.[a-z0-9_]+){5}")

# (BLOCK_N, BLOCK_CO, BLOCK_K, num_warps, num_stages)
_CUDA_CONFIGS: tuple[tuple[int, int, int, int, int], ...] = (
    (128, 128, 64, 8, 3),
    (128, 128, 32, 4, 4),
    (128, 64, 64, 4, 3),
    (128, 64, 32, 4, 4),
    (64, 128, 64, 4, 3),
    (64, 128, 32, 4, 4),
    (64, 64, 64, 4, 3),
    (64, 64, 32, 4, 4),
    (64, 32, 32, 4, 4),
    (128, 32, 32, 4, 4),
    (64, 32, 16, 2, 4),
    (128, 16, 16, 4, 3),
    (64, 16, 16, 2, 3),
)

# One small config for the CPU interpreter (tests) and for callers that skip tuning.
INTERPRETER_CONFIG: dict[str, int] = {"BLOCK_N": 32, "BLOCK_CO": 16, "BLOCK_K": 16}
DEFAULT_CUDA_CONFIG: dict[str, int] = {"BLOCK_N": 64, "BLOCK_CO": 64, "BLOCK_K": 32,
                                       "num_warps": 4, "num_stages": 3}


def cuda_configs() -> list[triton.Config]:
    """Candidate configs for NVIDIA GPUs (sm80+)."""
    return [
        triton.Config({"BLOCK_N": bn, "BLOCK_CO": bco, "BLOCK_K": bk}, num_warps=w, num_stages=s)
        for bn, bco, bk, w, s in _CUDA_CONFIGS
    ]


def _pow2_at_least(n: int, lo: int) -> int:
    return max(lo, 1 << max(0, int(n) - 1).bit_length())


def prune_configs(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Drop tiles far larger than the problem (tiny Ci or Co) so tuning stays cheap."""
    ci, co = int(named_args["Ci"]), int(named_args["Co"])
    max_k = _pow2_at_least(ci, 16)
    max_co = _pow2_at_least(co, 16)
    kept = [c for c in configs if c.kwargs["BLOCK_K"] <= max_k and c.kwargs["BLOCK_CO"] <= max_co]
    return kept or configs[-1:]


def bucket_log2(n: int) -> int:
    """Autotune key for the voxel count: floor(log2 N), so nearby N share a tuned config."""
    return max(0, int(n).bit_length() - 1)


def table_key(parts: Iterable[Any]) -> str:
    """The table's key for an autotune key: Triton's key tuple (or the same parts built by
    ``ops.autotune_key``) joined by commas; dtypes print as ``torch.float16``."""
    return ",".join(str(p) for p in parts)


def _check_config(config: Any, where: str) -> dict[str, int]:
    if not isinstance(config, dict) or set(config) != set(CONFIG_FIELDS):
        raise ValueError(f"{where}: a config needs exactly the fields {list(CONFIG_FIELDS)}, got {config!r}")
    for name, value in config.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{where}: {name} must be a positive int, got {value!r}")
    for name in ("BLOCK_N", "BLOCK_CO", "BLOCK_K", "num_warps"):
        if config[name] & (config[name] - 1):
            raise ValueError(f"{where}: {name} must be a power of two, got {config[name]}")
    for name in ("BLOCK_N", "BLOCK_CO", "BLOCK_K"):
        if config[name] < 16:  # tl.dot needs every dimension >= 16
            raise ValueError(f"{where}: {name} must be at least 16, got {config[name]}")
    return dict(config)


def validate_table(table: Any, source: str) -> dict[str, dict[str, dict[str, int]]]:
    """Check a parsed table (``{device: {key: config}}``); ``ValueError`` names ``source`` and the entry."""
    if not isinstance(table, dict):
        raise ValueError(f"{source}: the table must be a JSON object of device names")
    out: dict[str, dict[str, dict[str, int]]] = {}
    for device, entries in table.items():
        if not isinstance(entries, dict):
            raise ValueError(f"{source}: device {device!r} must map keys to configs")
        out[device] = {}
        for key, config in entries.items():
            where = f"{source}: device {device!r}, key {key!r}"
            if not _KEY_PATTERN.fullmatch(key):
                raise ValueError(f"{where}: a key is 'LOGN,Ci,Co,FP32_IEEE' and 5 torch dtypes")
            out[device][key] = _check_config(config, where)
    return out


@functools.cache
def load_tuned_table(path: Path = TUNED_CONFIGS_PATH) -> dict[str, dict[str, dict[str, int]]]:
    """The validated table in ``path`` (read once per process); an absent file is an empty table."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        log.warning("no tuned sparse conv configs at %s: every new shape is autotuned", path)
        return {}
    try:
        table = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    return validate_table(table, str(path))


def tuned_config(device_name: str, key: str, table: dict | None = None) -> dict[str, int] | None:
    """The shipped config for ``key`` on ``device_name``, or None (then the caller autotunes)."""
    table = load_tuned_table() if table is None else table
    return table.get(device_name, {}).get(key)
