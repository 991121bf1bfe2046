"""Benchmark O-Voxel conversion on a ~1M-triangle mesh.

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python scripts/bench_ovoxel.py --device cpu
    python scripts/bench_ovoxel.py --device cuda --load out/bench_1024.npz   (no numba needed)

Encode (mesh -> O-Voxel) runs on one CPU core (numba, torch/numpy threads set to 1);
decode (flexible dual contouring) runs on --device; CUDA timings synchronise.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.ovoxel import CoordIndex, flexible_dual_contour  # noqa: E402
from tests.fixtures.meshes import uv_sphere  # noqa: E402


def bumpy_sphere(rings: int) -> object:
    """A displaced UV sphere with ~4 * rings^2 triangles (rings=500 -> 1.0M)."""
    m = uv_sphere(0.42, rings, 2 * rings)
    v = m.vertices
    r = np.linalg.norm(v, axis=1, keepdims=True)
    bump = 1 + 0.04 * np.sin(9 * v[:, :1] / 0.42) * np.cos(7 * v[:, 1:2] / 0.42) * np.sin(5 * v[:, 2:] / 0.42)
    m.vertices = v / np.maximum(r, 1e-12) * 0.42 * bump
    return m


def timed(fn, device: str, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up (numba/CUDA)
    best = float("inf")
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--resolution", type=int, default=1024)
    ap.add_argument("--rings", type=int, default=500, help="sphere rings; triangles ~ 4 * rings^2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-encode", action="store_true",
                    help="skip the shape+PBR encode timing (the shape encode always runs)")
    ap.add_argument("--save", help="write the encoded O-Voxel here (.npz)")
    ap.add_argument("--load", help="decode-only: read this O-Voxel (.npz) instead of encoding")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    if args.load:
        from backend.ovoxel import load_ovoxel

        ov = load_ovoxel(args.load)
        rows.append(("input", f"{args.load}", ""))
        return _decode_rows(ov, args, rows)
    mesh = bumpy_sphere(args.rings)
    rows.append(("input", f"{mesh.num_faces:,} triangles", ""))
    from backend.ovoxel.encode import mesh_to_ovoxel as warm

    warm(bumpy_sphere(16), 64)  # compile / load numba kernels
    t = time.perf_counter()
    from backend.ovoxel import mesh_to_ovoxel

    ov = mesh_to_ovoxel(mesh, args.resolution, attributes=False)
    t_enc = time.perf_counter() - t
    rows.append((f"encode shape @{args.resolution} (1 CPU core)", f"{ov.num_voxels:,} voxels",
                 f"{t_enc:.3f} s"))
    if not args.skip_encode:
        t = time.perf_counter()
        mesh_to_ovoxel(mesh, args.resolution, attributes=True)
        rows.append(("encode shape+PBR (1 CPU core)", "", f"{time.perf_counter() - t:.3f} s"))
    if args.save:
        from backend.ovoxel import save_ovoxel

        save_ovoxel(args.save, ov)
    return _decode_rows(ov, args, rows)


def _decode_rows(ov, args, rows) -> int:
    dev = args.device
    coords = torch.from_numpy(ov.coords).to(dev)
    dual = torch.from_numpy(ov.dual_vertices).to(dev)
    flags = torch.from_numpy(ov.intersected).to(dev)
    res = ov.resolution
    t_full, (v, f) = timed(lambda: flexible_dual_contour(coords, dual, flags, res), dev,
                           args.repeats)
    index = CoordIndex(coords, res)
    t_idx, _ = timed(lambda: flexible_dual_contour(coords, dual, flags, res, index=index), dev,
                     args.repeats)
    rows.append((f"decode @{res} on {dev}", f"{f.shape[0]:,} triangles",
                 f"{t_full * 1e3:.1f} ms"))
    rows.append(("decode, coord index prebuilt", f"{v.shape[0]:,} vertices", f"{t_idx * 1e3:.1f} ms"))
    width = max(len(r[0]) for r in rows)
    for name, what, val in rows:
        print(f"{name:<{width}}  {what:>22}  {val:>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
