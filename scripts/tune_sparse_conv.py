"""Tune the Triton sparse conv on this GPU and store the winners in the shipped table.

Usage (on the GPU to tune; 27 keys by default, each compiling and timing up to 13 candidates;
not yet timed on a GPU, the script prints each key's seconds and the total):
    python scripts/tune_sparse_conv.py [--modes 512 1024_cascade 1536_cascade] [--dtypes fp16]
        [--spread 0] [--out kernels/sparse_conv/tuned_configs.json] [--timings out/tune_timings.json]
    python scripts/tune_sparse_conv.py --dry-run --device cpu     # list the keys, tune nothing

What it tunes: every ``SparseConv3d`` of the release shape and texture decoders (the networks of
``scripts/bench_pipeline.py``, built on the meta device), at the decoder level where it runs, in
the decoders' precision (fp16; ``--dtypes bf16`` adds bf16). Voxel counts: a sphere surface
voxelised at the mode's resolution with the mode's typical latent token count (about 2.4K at
512, 9.6K at 1024, 21K at 1536, as in ``scripts/bench_models.py``), taken down level by level with
S2C maps, as ``scripts/bench_sparse_conv.py``'s decoder run does. ``--spread K`` also tunes the
K log2-buckets on either side of each count (objects differ in size).

Each case runs the production autotuner (``kernels.sparse_conv.ops.autotuner``, the shipped
table bypassed); the winners are read from its ``cache`` and merged into the table under
``torch.cuda.get_device_name()``, written atomically (temporary file, then rename) after every key,
so a run cut short keeps the keys it finished. Existing
entries of other devices and other keys are kept; a key tuned again is replaced.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernels.sparse_conv import configs  # noqa: E402

# mode -> (decoded resolution, typical latent tokens at its latent grid)
MODES = {"512": (512, 2400), "1024_cascade": (1024, 9600), "1536_cascade": (1536, 21000)}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
DECODERS = ("shape_slat_decoder", "tex_slat_decoder")
LEVELS = 4  # x2 subdivisions from the latent grid to the decoded resolution


@dataclass(frozen=True)
class ConvShape:
    level: int  # 0 = latent grid ... LEVELS = decoded resolution
    ci: int
    co: int


def planned_key(n: int, ci: int, co: int, dtype: torch.dtype, bias_dtype: torch.dtype | None = None) -> str:
    """The table key a ``subm_conv3d`` launch with these sizes gets (fp16/bf16 inputs, with a bias).

    Mirrors ``ops.autotune_key``: ``LOGN, Ci, Co, FP32_IEEE``, then the dtypes of feats, weight,
    bias, neighbours and output (a test checks the two against Triton's autotuner).
    """
    fp32_ieee = dtype == torch.float32  # the launcher's default (allow_tf32=False)
    parts = [configs.bucket_log2(n), ci, co, fp32_ieee,
             dtype, dtype, bias_dtype or dtype, torch.int32, dtype]
    return configs.table_key(parts)


def decoder_conv_shapes() -> list[ConvShape]:
    """(level, Ci, Co) of every sparse conv in the release decoders, built on the meta device."""
    from backend.models import model_class
    from backend.models.sc_vae.blocks import SparseResBlockC2S3d
    from backend.sparse.conv import SparseConv3d
    from scripts.bench_pipeline import FULL

    shapes: set[ConvShape] = set()
    for name in DECODERS:
        cls, args = FULL[name]
        with torch.device("meta"):
            decoder = model_class(cls)(**args)
        for level, stage in enumerate(decoder.blocks):
            for block in stage:
                if isinstance(block, SparseResBlockC2S3d):  # conv1 before the subdivision, conv2 after
                    convs = [(level, block.conv1), (level + 1, block.conv2)]
                else:
                    convs = [(level, m) for m in block.modules() if isinstance(m, SparseConv3d)]
                shapes.update(ConvShape(lv, m.in_channels, m.out_channels) for lv, m in convs)
    return sorted(shapes, key=lambda s: (s.level, s.ci, s.co))


def level_coords(resolution: int, tokens: int, device: str) -> list[torch.Tensor]:
    """``[N_l, 4]`` voxels of a sphere surface at each decoder level, latent grid first."""
    from backend.sparse.spatial import build_s2c_map
    from scripts.bench_sparse_conv import sphere_surface

    radius = 16 * math.sqrt(tokens / (4 * math.pi * 1.5))  # ~1.5 latent voxels per unit area
    coords = [sphere_surface(resolution, radius, device)]
    for _ in range(LEVELS):
        coords.append(build_s2c_map(coords[-1]).parent_coords)
    return coords[::-1]


def plan(modes: list[str], dtypes: list[torch.dtype], spread: int, device: str,
         ) -> Iterator[tuple[str, torch.Tensor, ConvShape, torch.dtype]]:
    """(key, voxels, shape, dtype) per distinct key, the first voxel set that reaches it."""
    shapes = decoder_conv_shapes()
    seen: set[str] = set()
    for mode in modes:
        levels = level_coords(*MODES[mode], device)
        for shape in shapes:
            base = configs.bucket_log2(len(levels[shape.level]))
            for bucket in range(base - spread, base + spread + 1):
                if bucket == base:
                    coords = levels[shape.level]
                else:  # a slab of the smallest level set that is large enough (sorted rows)
                    n = 3 << (bucket - 1)  # 1.5 * 2^bucket: inside the bucket
                    larger = [c for c in levels if len(c) >= n]
                    if not larger:
                        continue
                    coords = min(larger, key=len)[:n]
                for dtype in dtypes:
                    key = planned_key(len(coords), shape.ci, shape.co, dtype)
                    if key not in seen:
                        seen.add(key)
                        yield key, coords, shape, dtype


def config_entry(config) -> dict[str, int]:
    """A ``triton.Config`` as a table entry."""
    return {**{k: int(config.kwargs[k]) for k in ("BLOCK_N", "BLOCK_CO", "BLOCK_K")},
            "num_warps": int(config.num_warps), "num_stages": int(config.num_stages)}


def merge_into_table(path: Path, device_name: str, entries: dict[str, dict[str, int]]) -> dict:
    """Merge ``entries`` under ``device_name`` into the table at ``path``, atomically; the new table."""
    table = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    table = configs.validate_table(table, str(path))
    table.setdefault(device_name, {}).update(entries)
    configs.validate_table(table, str(path))
    text = json.dumps(table, indent=1, sort_keys=True) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # a shipped data file, readable by all (mkstemp makes it 0600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return table


def tune(cases, log, on_key=None) -> tuple[dict[str, dict[str, int]], dict[str, list]]:
    """Autotune each case; the winners and the candidates' timings, by table key. ``on_key(entries)``
    runs after each key (the caller stores what is done, so a cut-short run keeps it)."""
    from backend.sparse.neighbors import build_neighbor_map
    from kernels.sparse_conv.ops import autotuner, subm_conv3d

    tuner = autotuner()
    entries: dict[str, dict[str, int]] = {}
    timings: dict[str, list] = {}
    cached: tuple[torch.Tensor, torch.Tensor] | None = None  # (voxels, their map): one set at a time
    for key, coords, shape, dtype in cases:
        start = time.perf_counter()
        if cached is None or cached[0] is not coords:
            cached = None  # free the previous map first: those of 5 M voxels are large
            cached = (coords, build_neighbor_map(coords))
        nbr = cached[1]
        n = len(coords)
        feats = torch.randn(n, shape.ci, device=coords.device, dtype=dtype)
        weight = torch.randn(shape.co, 27, shape.ci, device=coords.device, dtype=dtype)
        weight /= math.sqrt(27 * shape.ci)
        bias = torch.randn(shape.co, device=coords.device, dtype=dtype)
        tuner.configs_timings = None
        subm_conv3d(feats, nbr, weight, bias, use_tuned_table=False)
        torch.cuda.synchronize()
        found = {configs.table_key(k): c for k, c in tuner.cache.items()}
        if key not in found:
            raise SystemExit(f"tune_sparse_conv: the autotuner did not record key {key!r} "
                             f"(it has {sorted(found)}): planned_key is out of step with the kernel")
        entries[key] = config_entry(found[key])
        measured = getattr(tuner, "configs_timings", None) or {}
        timings[key] = sorted(([config_entry(c), t] for c, t in measured.items()),
                              key=lambda ct: ct[1] if isinstance(ct[1], float) else ct[1][0])
        log(f"{key}  N={n:,} level {shape.level}  -> {entries[key]}  ({time.perf_counter() - start:.1f} s)")
        del feats, weight, bias
        if on_key is not None:
            on_key(entries)
    return entries, timings


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--dtypes", nargs="+", default=["fp16"], choices=list(DTYPES),
                   help="fp16 is the decoders' release precision")
    p.add_argument("--spread", type=int, default=0, help="also tune this many log2 buckets either side")
    p.add_argument("--out", type=Path, default=configs.TUNED_CONFIGS_PATH)
    p.add_argument("--timings", type=Path, default=None, help="write every candidate's time per key (JSON)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dry-run", action="store_true", help="list the keys and voxel counts, tune nothing")
    args = p.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, flush=True)

    start = time.perf_counter()
    cases = plan(args.modes, [DTYPES[d] for d in args.dtypes], args.spread, args.device)
    if args.dry_run:
        for key, coords, shape, _ in cases:
            log(f"{key}  N={len(coords):,} level {shape.level}")
        return 0
    if not torch.cuda.is_available():
        raise SystemExit("tune_sparse_conv: needs a CUDA GPU (or --dry-run)")
    device_name = torch.cuda.get_device_name()
    log(f"tuning on {device_name!r}")
    entries, timings = tune(cases, log, lambda done: merge_into_table(args.out, device_name, done))
    log(f"wrote {len(entries)} configs for {device_name!r} to {args.out}:")
    log(json.dumps(entries, indent=1, sort_keys=True))
    if args.timings:
        args.timings.parent.mkdir(parents=True, exist_ok=True)
        args.timings.write_text(json.dumps({"device": device_name, "timings_ms": timings}, indent=1))
        log(f"timings of every candidate: {args.timings}")
    log(f"total {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
