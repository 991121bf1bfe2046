"""Strict loading of TRELLIS.2 networks from ``NAME.json`` + ``NAME.safetensors``.

The official loader (``trellis2/models/__init__.py::from_pretrained``) builds the class named
in the JSON with its ``args`` and loads with ``strict=False``. Here the module is built on the
meta device (no weight is allocated twice), every file tensor is cast to the dtype the module
wants, and ``load_state_dict(strict=True, assign=True)`` runs only after every missing,
unexpected or mis-shaped key has been reported. Only buffers the model can compute itself
(``rope_phases``) may be absent. Only safetensors are read: nothing is ever unpickled.

Sources are local only:
* a stem ``DIR/ckpts/NAME`` (with or without the ``.json`` / ``.safetensors`` suffix);
* a release folder plus ``name`` (``"ckpts/NAME"`` or just ``"NAME"``), which is how
  ``pipeline.json``'s ``models`` map is read.
Weights in Hugging Face repositories are found or downloaded by ``backend.pipeline.weights``
(the one resolver, with the gated-model checks) and reach this module as folders.
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .registry import model_class

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "C64": torch.complex64,
}


class CheckpointError(RuntimeError):
    """A checkpoint cannot be found, read, or does not match its network."""


@dataclass(frozen=True)
class ModelConfig:
    """Contents of a checkpoint's ``NAME.json``: the official class name and constructor args."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckpointFiles:
    """The two files of one network."""

    config: Path
    weights: Path


# ------------------------------------------------------------------------------- resolving


def _strip_suffix(stem: str) -> str:
    low = stem.lower()
    if low.endswith(PICKLE_SUFFIXES):
        raise CheckpointError(
            f"{stem}: pickle-based checkpoints (.bin/.pt/.pth/.ckpt) are refused because loading them "
            "can run arbitrary code; convert the weights to .safetensors first"
        )
    for suffix in (".safetensors", ".json"):
        if low.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def _local_files(stem: Path) -> CheckpointFiles | None:
    config, weights = stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".safetensors")
    if not config.exists() and not weights.exists():
        return None
    if not weights.exists():
        pickles = [stem.with_name(stem.name + s) for s in PICKLE_SUFFIXES]
        found = [p.name for p in pickles if p.exists()]
        hint = f" (found {', '.join(found)}: pickles are refused, convert to safetensors)" if found else ""
        raise CheckpointError(f"{weights}: weights file not found{hint}")
    if not config.exists():
        raise CheckpointError(f"{config}: config file not found next to {weights.name}")
    return CheckpointFiles(config, weights)


def resolve_checkpoint(source: str | Path, name: str | None = None) -> CheckpointFiles:
    """Find a network's ``.json`` and ``.safetensors`` on disk.

    Only local files are read here: hub repositories are resolved (and downloaded, after the
    access checks) by ``backend.pipeline.weights``, whose folders are then passed in as ``source``.

    Args:
        source: a local stem ``DIR/ckpts/NAME`` (with or without a suffix), or a release folder.
        name: checkpoint path inside the folder ``source`` (``"ckpts/NAME"`` or just ``"NAME"``);
            None when ``source`` is the full stem.

    Raises:
        CheckpointError: not found (a hub stem or repo id included: it names the repository to
            resolve first), or a pickle format.
    """
    source = str(source)
    if name is None:
        stem = _strip_suffix(source)
        found = _local_files(Path(stem))
        if found:
            return found
        raise CheckpointError(f"{stem}.json / .safetensors: checkpoint not found{_hub_hint(stem)}")
    name = _strip_suffix(name)
    rel = name if "/" in name else f"ckpts/{name}"
    found = _local_files(Path(source) / rel) if Path(source).is_dir() else None
    if found:
        return found
    hint = _hub_hint(rel) or ("" if Path(source).is_dir() else _hub_hint(f"{source}/{rel}"))
    raise CheckpointError(f"{Path(source) / rel}.json / .safetensors: checkpoint not found{hint}")


def _hub_hint(stem: str) -> str:
    """Why a stem that names a Hugging Face repository is not found here ("" for any other)."""
    parts = stem.split("/")
    if Path(stem).is_absolute() or stem.startswith(".") or len(parts) < 3 or parts[0] == "ckpts":
        return ""
    repo = "/".join(parts[:2])
    return f" (it names the Hugging Face repository {repo}: download it first and pass its folder)"


# ------------------------------------------------------------------------------- reading


def read_model_config(path: str | Path) -> ModelConfig:
    """Parse ``NAME.json`` = ``{"name": <class>, "args": {...}}``.

    Raises:
        CheckpointError: unreadable JSON or the wrong shape (naming the file).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint config: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise CheckpointError(f"{path}: expected an object with a string 'name' and an 'args' object")
    args = data.get("args", {})
    extra = set(data) - {"name", "args"}
    if not isinstance(args, dict) or extra:
        raise CheckpointError(f"{path}: expected keys 'name' and 'args' (object), got {sorted(data)}")
    return ModelConfig(data["name"], args)


def read_safetensors_header(path: str | Path) -> dict[str, dict[str, Any]]:
    """Validate a safetensors header against the file size; return ``{key: {dtype, shape, data_offsets}}``.

    Raises:
        CheckpointError: missing, truncated or corrupt (naming the file and what is wrong).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({size} bytes)")
            (header_len,) = struct.unpack("<Q", head)
            if header_len > size - 8:
                raise CheckpointError(
                    f"{path}: truncated or corrupt safetensors file "
                    f"(header of {header_len} bytes, file has {size})"
                )
            header = json.loads(f.read(header_len))
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read weights: {exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt safetensors header: {exc}") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not an object)")
    header.pop("__metadata__", None)
    data_size = size - 8 - header_len
    for key, info in header.items():
        try:
            start, end = info["data_offsets"]
            dtype, shape = info["dtype"], info["shape"]
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: corrupt safetensors header entry {key!r}") from exc
        if end > data_size:
            raise CheckpointError(
                f"{path}: truncated safetensors file: tensor {key!r} ends at byte {end} of the data "
                f"but only {data_size} bytes are present"
            )
        if dtype not in _ST_DTYPES:
            raise CheckpointError(f"{path}: tensor {key!r} has unsupported dtype {dtype}")
        numel = 1
        for d in shape:
            numel *= d
        if numel * _ST_DTYPES[dtype].itemsize != end - start:
            raise CheckpointError(f"{path}: corrupt safetensors header: {key!r} size does not match shape")
    return header


def read_state_dict(path: str | Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Read every tensor of a safetensors file onto ``device`` (after validating the header)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    read_safetensors_header(path)
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: cannot read weights: {exc}") from exc


# ------------------------------------------------------------------------------- building


def build_model(config: ModelConfig, dtype: torch.dtype | None = None, source: str = "") -> nn.Module:
    """Instantiate the network on the meta device (no memory is allocated).

    Args:
        config: class name and constructor args.
        dtype: None keeps the stored mixed precision; a dtype casts every floating parameter.
        source: file name for error messages.
    """
    try:
        cls = model_class(config.name)
    except (KeyError, ImportError) as exc:
        raise CheckpointError(f"{source}: cannot build {config.name!r}: {exc}") from exc
    try:
        with torch.device("meta"):
            model = cls(**config.args)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: bad arguments for {config.name}: {exc}") from exc
    if dtype is not None:
        cast_floating(model, dtype)
    return model


def cast_floating(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast every real floating parameter and buffer to ``dtype``; others keep their dtype.

    ``Module.to(dtype)`` also casts complex tensors, which turns a complex64 buffer such as
    the RoPE phases into its real part.
    """
    return model._apply(lambda t: t.to(dtype) if t.is_floating_point() else t)


def _mismatch_report(
    expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], optional: set[str]
) -> list[str]:
    problems = []
    for key in sorted(set(expected) - set(found) - optional):
        problems.append(f"missing key {key} (expected shape {list(expected[key].shape)})")
    for key in sorted(set(found) - set(expected)):
        problems.append(f"unexpected key {key} (shape {list(found[key].shape)})")
    for key in sorted(set(found) & set(expected)):
        if found[key].shape != expected[key].shape:
            problems.append(
                f"wrong shape for {key}: file {list(found[key].shape)}, model {list(expected[key].shape)}"
            )
    return problems


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], weights_path: str | Path,
                 device: torch.device | str) -> nn.Module:
    """Check ``state`` against the (meta) model, cast, and load strictly with ``assign=True``."""
    expected = model.state_dict()
    computed = model.computed_buffers(device) if hasattr(model, "computed_buffers") else {}
    problems = _mismatch_report(expected, state, set(computed))
    if problems:
        raise CheckpointError(
            f"{weights_path}: checkpoint does not match {type(model).__name__} "
            f"({len(problems)} problem(s)):\n  " + "\n  ".join(problems)
        )
    full = {k: v.to(device=device, dtype=expected[k].dtype) for k, v in state.items()}
    for key, value in computed.items():
        full.setdefault(key, value.to(device=device))
    model.load_state_dict(full, strict=True, assign=True)
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise CheckpointError(f"{weights_path}: tensors left uninitialised after loading: {leftover}")
    return model


def load_model(
    source: str | Path,
    name: str | None = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Load one TRELLIS.2 network, strictly, in eval mode with gradients off.

    Args:
        source: see :func:`resolve_checkpoint`.
        name: see :func:`resolve_checkpoint`.
        device: where the weights go (read straight there from the file).
        dtype: None keeps the stored precision policy (e.g. bf16 block linears, fp32 norms);
            a floating dtype makes every floating tensor that dtype (e.g. float32 on CPU).

    Raises:
        CheckpointError: with the file name and every mismatching key.
    """
    files = resolve_checkpoint(source, name)
    config = read_model_config(files.config)
    model = build_model(config, dtype, str(files.config))
    state = read_state_dict(files.weights, device)
    load_weights(model, state, files.weights, device)
    model.eval().requires_grad_(False)
    log.info("loaded %s from %s (%d tensors)", config.name, files.weights, len(state))
    return model


@torch.no_grad()
def copy_checkpoint_into(model: nn.Module, source: str | Path) -> int:
    """Overwrite a built model's weights with a checkpoint's, strictly (the start of a fine-tune).

    ``source`` is a checkpoint stem as :func:`resolve_checkpoint` takes it; its JSON must name the
    model's class and its tensors must match the model's keys and shapes (buffers the model computes
    itself may be absent and keep their values). Each tensor is cast to the dtype of the model's own
    (e.g. bf16 file weights into fp32 training weights). Returns the number of tensors copied.

    Raises:
        CheckpointError: not found, a pickle, another class, or mismatching keys (all listed).
    """
    files = resolve_checkpoint(source)
    config = read_model_config(files.config)
    if config.name != type(model).__name__:
        raise CheckpointError(
            f"{files.config}: a {config.name} checkpoint, but the model is {type(model).__name__}")
    expected = model.state_dict()
    computed = set(model.computed_buffers("cpu")) if hasattr(model, "computed_buffers") else set()
    state = read_state_dict(files.weights)
    problems = _mismatch_report(expected, state, computed)
    if problems:
        raise CheckpointError(
            f"{files.weights}: checkpoint does not match {type(model).__name__} "
            f"({len(problems)} problem(s)):\n  " + "\n  ".join(problems)
        )
    for key, value in state.items():
        expected[key].copy_(value)  # state_dict tensors share storage with the model's
    log.info("initialised %s from %s (%d tensors)", config.name, files.weights, len(state))
    return len(state)
