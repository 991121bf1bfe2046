"""Benchmark the TRELLIS.2 networks at full size (random weights, stored precision) on a GPU.

Usage:
    python scripts/bench_models.py [--grids 32 64 96] [--backend sdpa_cudnn] [--compile] [--json OUT]

Measures, in one process:
* the bf16 matmul ceiling (8192^3) and the cuDNN-SDPA attention ceiling at each shape used;
* ms per forward, achieved TFLOP/s and peak memory of the SS flow DiT (4096 tokens, 1029 cond),
  the SS decoder, and the shape/texture SLat DiTs on voxelised surfaces (sphere + torus shells)
  at latent grids 32/64/96 (about 2.4K / 9.6K / 21K tokens; 1029 cond tokens at 32, 4101 above);
* our attention wrapper against the raw torch SDPA kernels;
* the acceptance ratio: SLat forward at the 64 grid (about 9.6K tokens, 4101 cond, bf16, B=1)
  divided by (matmul FLOPs / matmul ceiling + attention FLOPs / attention ceiling); target <= 1.5.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.models import (  # noqa: E402
    AttentionBackend,
    SLatFlowModel,
    SparseStructureDecoder,
    SparseStructureFlowModel,
)
from backend.models.attention import dense_attention  # noqa: E402
from backend.models.fp8 import convert_blocks_to_fp8  # noqa: E402
from backend.sparse import SparseTensor  # noqa: E402

DIT = dict(model_channels=1536, cond_channels=1024, num_blocks=30, num_heads=12, mlp_ratio=5.3334,
           pe_mode="rope", share_mod=True, qk_rms_norm=True, qk_rms_norm_cross=True, dtype="bfloat16")
C, HEADS, HEAD_DIM, MLP, BLOCKS, COND_C = 1536, 12, 128, 8192, 30, 1024


def timed(fn: Callable[[], object], warmup: int, iters: int) -> float:
    """Mean milliseconds per call (CUDA events)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def surface_coords(grid: int, seed: int = 0) -> torch.Tensor:
    """Voxels ``[N, 3]`` hit by a sphere shell and a torus shell, on a ``grid^3`` lattice."""
    g = torch.Generator().manual_seed(seed)
    n = 1_500_000
    theta, z = 2 * math.pi * torch.rand(n, generator=g), 2 * torch.rand(n, generator=g) - 1
    r = 0.25
    rho = torch.sqrt(1 - z**2)
    sphere = torch.stack([rho * torch.cos(theta), rho * torch.sin(theta), z], 1) * r
    sphere = sphere + torch.tensor([0.5, 0.5, 0.62])
    a, b = 2 * math.pi * torch.rand(n, generator=g), 2 * math.pi * torch.rand(n, generator=g)
    big, small = 0.275, 0.075
    ring = big + small * torch.cos(b)
    torus = torch.stack([ring * torch.cos(a), ring * torch.sin(a), small * torch.sin(b)], 1) + torch.tensor(
        [0.5, 0.5, 0.3])
    q = (torch.cat([sphere, torus]) * grid).floor().clamp(0, grid - 1).long()
    return torch.unique(q, dim=0)  # lexicographically sorted


def dit_flops(n: int, m: int) -> tuple[float, float]:
    """(matmul FLOPs, attention FLOPs) of one DiT forward with n tokens and m condition tokens."""
    per_token = 2 * C * (3 * C + C + C + C) + 2 * 2 * C * MLP
    linear = BLOCKS * (n * per_token + 2 * m * COND_C * 2 * C)
    attn = BLOCKS * (4 * n * n * C + 4 * n * m * C)
    return float(linear), float(attn)


def matmul_ceiling(warmup: int, iters: int) -> float:
    """bf16 8192^3 matmul TFLOP/s."""
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    ms = timed(lambda: a @ b, warmup, iters)
    return 2 * 8192**3 / ms / 1e9


def raw_sdpa_ms(n: int, m: int, kernel: SDPBackend, warmup: int, iters: int) -> float:
    """Raw torch SDPA on contiguous ``[1, 12, n, 128]`` x ``[1, 12, m, 128]``."""
    q = torch.randn(1, HEADS, n, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, HEADS, m, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)

    def run():
        with sdpa_kernel(kernel):
            return F.scaled_dot_product_attention(q, k, v)

    return timed(run, warmup, iters)


def wrapper_ms(n: int, m: int, backend: AttentionBackend, warmup: int, iters: int) -> float:
    """Our wrapper on the model's layout: q/k/v strided views ``[1, n, 12, 128]`` of a fused tensor."""
    qkv = torch.randn(1, n, 3, HEADS, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
    kv = torch.randn(1, m, 2, HEADS, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
    q = qkv[:, :, 0]
    k, v = (qkv[:, :, 1], qkv[:, :, 2]) if m == n else (kv[:, :, 0], kv[:, :, 1])
    return timed(lambda: dense_attention(q, k, v, backend), warmup, iters)


def build(cls, **kwargs) -> torch.nn.Module:
    with torch.device("cuda"):
        model = cls(**kwargs)
    return model.eval().requires_grad_(False)


def prepare_blocks(model: torch.nn.Module, compile_blocks: bool, fp8: bool) -> None:
    """Opt-in: FP8 block linears (as ``--fp8`` in the product), then compile each block (static
    shapes; one compile per token count)."""
    if fp8:
        convert_blocks_to_fp8(model)
    if compile_blocks and hasattr(model, "blocks"):
        for block in model.blocks:
            block.compile(dynamic=False)


def measure(fn: Callable[[], object], warmup: int, iters: int) -> tuple[float, float]:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    ms = timed(fn, warmup, iters)
    return ms, (torch.cuda.max_memory_allocated() - base) / 2**30


def bench_ss(backend, compile_blocks: bool, fp8: bool, w: int, it: int) -> tuple[float, float]:
    model = build(SparseStructureFlowModel, resolution=16, in_channels=8, out_channels=8, **DIT)
    model.set_attention_backend(backend)
    prepare_blocks(model, compile_blocks, fp8)
    x, t = torch.randn(1, 8, 16, 16, 16, device="cuda"), torch.tensor([500.0], device="cuda")
    cond = torch.randn(1, 1029, COND_C, device="cuda")
    return measure(lambda: model(x, t, cond), w, it)


def bench_ss_decoder(w: int, it: int) -> tuple[float, float]:
    dec = build(SparseStructureDecoder, out_channels=1, latent_channels=8, num_res_blocks=2,
                num_res_blocks_middle=2, channels=[512, 128, 32], use_fp16=True)
    z = torch.randn(1, 8, 16, 16, 16, device="cuda")
    return measure(lambda: dec(z), w, it)


def bench_slat(model: SLatFlowModel, grid: int, w: int, it: int) -> tuple[int, int, float, float]:
    """(tokens, cond tokens, ms, peak GiB) of one forward on the voxelised surfaces at ``grid``."""
    xyz = surface_coords(grid).cuda()
    n, m = len(xyz), (1029 if grid <= 32 else 4101)
    coords = torch.cat([torch.zeros(n, 1, dtype=torch.long, device="cuda"), xyz], 1).int()
    x = SparseTensor(coords, torch.randn(n, 32, device="cuda"))
    concat = x.replace(torch.randn(n, 32, device="cuda")) if model.in_channels == 64 else None
    cond = torch.randn(1, m, COND_C, device="cuda")
    t = torch.tensor([500.0], device="cuda")
    ms, gib = measure(lambda: model(x, t, cond, concat_cond=concat), w, it)
    return n, m, ms, gib


def bench_attention(grids: list[int], backend: AttentionBackend, w: int, it: int) -> list[dict]:
    kernels = (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION)
    print(f"\n{'attention [1,12,N,128]':<26}{'N':>7}{'Lk':>7}"
          + "".join(f"{k:>14}" for k in ("ours", "cudnn", "flash", "efficient")) + "   (ms;TFLOP/s)")
    rows = []
    for grid in grids:
        n = len(surface_coords(grid))
        for m in (n, 1029 if grid <= 32 else 4101):
            flops = 4 * n * m * C
            cols = [wrapper_ms(n, m, backend, w, it)]
            for kernel in kernels:
                try:
                    cols.append(raw_sdpa_ms(n, m, kernel, w, it))
                except RuntimeError:
                    cols.append(float("nan"))
            rows.append(dict(n=n, m=m, ours=cols[0], cudnn=cols[1], flash=cols[2], efficient=cols[3]))
            cells = "".join(f"{c:>8.2f};{flops / c / 1e9:>5.0f}" for c in cols)
            print(f"{'self' if m == n else 'cross':<26}{n:>7}{m:>7}{cells}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", type=int, nargs="+", default=[32, 64, 96])
    parser.add_argument("--backend", default="sdpa_cudnn", help="attention backend of the models")
    parser.add_argument("--compile", action="store_true", help="torch.compile each DiT block (opt-in)")
    parser.add_argument("--fp8", action="store_true",
                        help="FP8 (e4m3) block linears, as the pipeline's --fp8 (compute capability 8.9+)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA GPU")
        return 2
    backend = AttentionBackend.parse(args.backend)
    w, it = args.warmup, args.iters
    mm = matmul_ceiling(w, it)
    results: dict[str, object] = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                  "backend": backend.value, "compile": args.compile, "fp8": args.fp8,
                                  "matmul_tflops": mm}
    print(f"device {results['device']}  torch {torch.__version__}  backend {backend.value}  "
          f"compile {args.compile}")
    print(f"matmul ceiling (bf16 8192^3): {mm:.0f} TFLOP/s\n")
    header = (f"{'network':<24}{'tokens':>8}{'cond':>6}{'ms':>10}{'TFLOP/s':>9}{'ideal ms':>10}"
              f"{'ratio':>7}{'peak GiB':>10}")
    print(header)
    print("-" * len(header))
    rows: list[dict] = []

    def report(name, n, m, ms, gib, dit=True):
        flops = sum(dit_flops(n, m)) if dit else float("nan")
        ideal = None
        if dit:  # matmul FLOPs at the matmul ceiling + attention at the measured cuDNN speed
            self_ms = raw_sdpa_ms(n, n, SDPBackend.CUDNN_ATTENTION, w, it)
            cross_ms = raw_sdpa_ms(n, m, SDPBackend.CUDNN_ATTENTION, w, it)
            ideal = dit_flops(n, m)[0] / mm / 1e9 + BLOCKS * (self_ms + cross_ms)
        ratio = ms / ideal if ideal else float("nan")
        rows.append(dict(network=name, tokens=n, cond=m, ms=ms, tflops=flops / ms / 1e9, ideal_ms=ideal,
                         ratio=ratio, peak_gib=gib))
        ideal_s = f"{ideal:10.2f}" if ideal else f"{'-':>10}"
        print(f"{name:<24}{n:>8}{m:>6}{ms:>10.2f}{flops / ms / 1e9:>9.0f}{ideal_s}{ratio:>7.2f}{gib:>10.2f}")
        return ratio, ideal

    with torch.inference_mode():
        report("ss_flow", 4096, 1029, *bench_ss(backend, args.compile, args.fp8, w, it))
        report("ss_decoder", 4096, 0, *bench_ss_decoder(w, it), dit=False)
        for in_ch, label in ((32, "shape"), (64, "texture")):
            model = build(SLatFlowModel, resolution=64, in_channels=in_ch, out_channels=32, **DIT)
            model.set_attention_backend(backend)
            prepare_blocks(model, args.compile, args.fp8)
            for grid in args.grids if label == "shape" else [g for g in args.grids if g == 64]:
                n, m, ms, gib = bench_slat(model, grid, w, it)
                ratio, ideal = report(f"slat_{label} grid {grid}", n, m, ms, gib)
                if label == "shape" and grid == 64:
                    results["acceptance"] = dict(tokens=n, cond=m, ms=ms, ideal_ms=ideal, ratio=ratio,
                                                 target=1.5, passed=ratio <= 1.5)
            del model
            torch.cuda.empty_cache()
        results["attention"] = bench_attention(args.grids, backend, w, it)
    results["networks"] = rows
    acc = results.get("acceptance")
    if acc:
        print(f"\nacceptance: SLat forward, {acc['tokens']} tokens, {acc['cond']} cond, B=1, bf16: "
              f"{acc['ms']:.2f} ms vs ideal {acc['ideal_ms']:.2f} ms (matmul FLOPs at {mm:.0f} TF/s + "
              f"attention at cuDNN speed) -> ratio {acc['ratio']:.3f}, target <= 1.5: "
              f"{'PASS' if acc['passed'] else 'FAIL'}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
