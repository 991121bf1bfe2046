"""Benchmark the submanifold sparse conv (Triton vs torch gather-GEMM) and a full SC-VAE decoder.

Voxel sets are voxelized sphere surfaces (never random occupancy), at the resolutions and
widths the decoders see: 64^3 x 1024 ch (latent) ... 1024^3 x 64 ch (full resolution).

    python scripts/bench_sparse_conv.py --csv out/bench_sparse_conv.csv [--quick]

Needs a CUDA GPU. Prints a table and writes the same rows as CSV.
"""

from __future__ import annotations

import argparse
import csv
import functools
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.models.sc_vae import SparseUnetVaeDecoder  # noqa: E402
from backend.sparse.conv import ConvBackend  # noqa: E402
from backend.sparse.neighbors import build_neighbor_map  # noqa: E402
from backend.sparse.spatial import build_s2c_map  # noqa: E402
from backend.sparse.tensor import SparseTensor  # noqa: E402
from kernels.sparse_conv.ops import subm_conv3d  # noqa: E402
from kernels.sparse_conv.reference import subm_conv3d_reference  # noqa: E402

# (grid resolution, Ci, Co): ConvNeXt convs per decoder level, then the C2S conv1 (C -> 8 C_out).
CONV_CASES = [
    (64, 1024, 1024), (128, 512, 512), (256, 256, 256), (512, 128, 128), (1024, 64, 64),
    (64, 1024, 4096), (128, 512, 2048), (256, 256, 1024), (512, 128, 512),
]
QUICK_CASES = [(64, 1024, 1024), (256, 256, 256), (64, 1024, 4096)]
DECODER_ARGS = {
    "model_channels": [1024, 512, 256, 128, 64], "latent_channels": 32, "num_blocks": [4, 16, 8, 4, 0],
    "block_type": ["SparseConvNeXtBlock3d"] * 5, "up_block_type": ["SparseResBlockC2S3d"] * 4,
    "use_fp16": True,
}


def sphere_surface(res: int, radius: float, device: str) -> torch.Tensor:
    """``[N, 4]`` int32 voxels hit by a densely sampled sphere surface (1-voxel shell), sorted."""
    n_pts = int(16 * 4 * math.pi * radius**2) + 1000
    i = torch.arange(n_pts, device=device, dtype=torch.float64) + 0.5
    phi = torch.acos(1 - 2 * i / n_pts)
    theta = math.pi * (1 + 5**0.5) * i
    sin_phi = torch.sin(phi)
    pts = torch.stack([torch.cos(theta) * sin_phi, torch.sin(theta) * sin_phi, torch.cos(phi)], 1)
    vox = (pts * radius + res / 2).floor().long().clamp_(0, res - 1)
    vox = torch.unique(vox, dim=0)
    return torch.cat([torch.zeros(len(vox), 1, dtype=torch.long, device=device), vox], 1).int()


def bench_ms(fn) -> tuple[float, float, float]:
    from triton.testing import do_bench

    return tuple(do_bench(fn, quantiles=[0.5, 0.2, 0.8], warmup=25, rep=100))


def conv_rows(cases, dtype: torch.dtype, device: str) -> list[dict]:
    rows = []
    for res, ci, co in cases:
        coords = sphere_surface(res, 0.4 * res, device)
        nbr = build_neighbor_map(coords)
        pairs = int((nbr >= 0).sum())
        feats = torch.randn(len(coords), ci, device=device, dtype=dtype)
        weight = torch.randn(co, 3, 3, 3, ci, device=device, dtype=dtype) / math.sqrt(27 * ci)
        bias = torch.randn(co, device=device, dtype=dtype)
        flops = 2.0 * pairs * ci * co  # useful MACs x 2 (present neighbours only)
        for name, fn in (
            ("triton", functools.partial(subm_conv3d, feats, nbr, weight, bias)),
            ("torch", functools.partial(subm_conv3d_reference, feats, nbr, weight, bias, compute_dtype=None)),
        ):
            fn()  # autotune / warm up
            med, lo, hi = bench_ms(fn)
            rows.append({"case": "conv", "impl": name, "res": res, "voxels": len(coords), "ci": ci, "co": co,
                         "nbr_per_voxel": round(pairs / len(coords), 2), "ms": round(med, 3),
                         "ms_p20": round(lo, 3), "ms_p80": round(hi, 3),
                         "tflops": round(flops / (med * 1e-3) / 1e12, 2), "peak_gib": ""})
    return rows


def decoder_rows(target_tokens: int, backends, device: str) -> list[dict]:
    """Full-size decoder (random fp16 weights) following a 1024^3 sphere's S2C maps."""
    radius = 16 * math.sqrt(target_tokens / (4 * math.pi * 1.5))  # ~1.5 voxels per unit area at 64^3
    fine = sphere_surface(1024, radius, device)
    maps, coords = [], fine
    for _ in range(4):
        m = build_s2c_map(coords)
        maps.append(m)
        coords = m.parent_coords
    maps = maps[::-1]  # decoding order
    latent = SparseTensor(coords, torch.randn(len(coords), 32, device=device))
    with torch.device(device):
        dec = SparseUnetVaeDecoder(out_channels=7, pred_subdiv=False, **DECODER_ARGS).eval()
    rows = []
    for backend in backends:
        dec.set_conv_backend(backend)
        with torch.no_grad():
            dec(latent, s2c_maps=maps)  # autotune + warm up
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            times = []
            for _ in range(3):
                start.record()
                out = dec(latent, s2c_maps=maps)
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
        times.sort()
        rows.append({"case": "decoder", "impl": str(backend), "res": 1024,
                     "voxels": f"{len(latent)}->{len(out)}", "ci": 32, "co": 7, "nbr_per_voxel": "",
                     "ms": round(times[1], 1), "ms_p20": round(times[0], 1), "ms_p80": round(times[-1], 1),
                     "tflops": "", "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", required=True, type=Path, help="where to write the results")
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--quick", action="store_true", help="three conv cases, Triton-only decoder")
    parser.add_argument("--tokens", type=int, default=9600, help="latent tokens of the decoder run")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    dtype = getattr(torch, args.dtype)
    rows = conv_rows(QUICK_CASES if args.quick else CONV_CASES, dtype, "cuda")
    backends = [ConvBackend.TRITON] if args.quick else [ConvBackend.TRITON, ConvBackend.TORCH]
    rows += decoder_rows(args.tokens, backends, "cuda")

    cols = list(rows[0])
    print(f"# {torch.cuda.get_device_name()}  torch {torch.__version__}  dtype {args.dtype}")
    print(" | ".join(f"{c:>13}" for c in cols))
    for r in rows:
        print(" | ".join(f"{r[c]!s:>13}" for c in cols))
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with args.csv.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=cols)
        writer.writeheader()
        writer.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
