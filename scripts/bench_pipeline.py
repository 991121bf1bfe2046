"""Benchmark the whole generation pipeline at full model size (random weights) on a GPU.

Usage:
    python scripts/bench_pipeline.py [--modes 512 1024_cascade 1536_cascade] [--steps 12] [--repeat 2]
        [--texture-size 2048] [--faces 500000] [--vram normal low] [--export-faces 1000000] [--json OUT]
        [--cfg batched sequential ...] [--vram-budget GIB]
    python scripts/bench_pipeline.py --tiny --device cpu     # plumbing check with tiny networks

``--cfg`` runs every pipeline type once per entry, in the order given (repeats allowed, so
``--cfg sequential batched sequential batched`` compares the two after a warm-up run):
``batched`` runs each guided sampler step's conditional and unconditional passes as one forward,
``sequential`` as one forward each (``Runtime.batched_cfg``, off in the product until this
comparison has been made on a GPU). Each row (and JSON run) names its setting.

``--vram-budget GIB`` gives the normal-mode runs a VRAM budget (``Runtime.vram_budget_gib``):
the networks start in host memory and the budget decides which of them stay on the GPU. The
budgeted runs of one ``--cfg`` setting share one model store, so a repeat starts with what the run
before it left on the GPU, as the server's jobs do, and shows the steady state. Each row records
the budget and the GiB of networks it moved each way.

What it measures, per pipeline type: seconds per stage (preprocess/conditioning, sparse
structure, shape, texture, decode, export) and end to end, with and without low-VRAM mode, and
the peak VRAM of each run; then the export alone (clean, unwrap, bake, GLB write) of a
one-million-face mesh with 2048^2 textures.

Random weights and realistic coordinates: with random weights, stage 1's occupancy (and the
cascade's upsampled voxels) are noise, which would make token counts and every later stage's
cost meaningless. So the script voxelises a real triangle mesh (a sphere and a torus, about
one million faces) at every latent grid the pipeline asks for (32, 64, 72..96) and feeds those
coordinates into the stages through the generator's structure sampler
(``tests.fixtures.structure.GivenStructure``), which applies the cascade's own token-cap rule.
Stage 1 still runs in full (its cost is fixed: 16^3 tokens).
The decoders' subdivision predictions are random too (about half the children survive per
level, close to a real surface's x4 growth per level), so decoded voxel counts and the mesh
that gets exported are of realistic size but not of realistic shape.

Networks are built directly on the device in their release precision (bf16 DiT blocks, fp16
VAE blocks) with the shapes in the release's checkpoint JSON files; DINOv3 is a random ViT-L/16 of
the release configuration. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.geometry import TriangleMesh  # noqa: E402
from backend.models import model_class  # noqa: E402
from backend.models.pipeline_config import parse_pipeline_config  # noqa: E402
from backend.models.tiny_checkpoint import TINY_MODELS, pipeline_json, texturing_pipeline_json  # noqa: E402
from backend.pipeline.api import ExportOptions, GenerateRequest, SamplerOverrides  # noqa: E402
from backend.pipeline.cli_common import vram_budget  # noqa: E402
from backend.pipeline.conditioning import DinoV3Conditioner  # noqa: E402
from backend.pipeline.export import export_generated  # noqa: E402
from backend.pipeline.generator import Trellis2Generator  # noqa: E402
from backend.pipeline.runtime import ModelStore, Release, Runtime  # noqa: E402
from backend.pipeline.stages import DecodedAsset  # noqa: E402
from tests.fixtures.meshes import uv_sphere  # noqa: E402
from tests.fixtures.structure import GivenStructure  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KEYS = {  # pipeline.json key -> checkpoint stem (the tiny table holds every stem)
    "sparse_structure_flow_model": "ss_flow_img_dit_1_3B_64_bf16",
    "sparse_structure_decoder": "ss_dec_conv3d_16l8_fp16",
    "shape_slat_flow_model_512": "slat_flow_img2shape_dit_1_3B_512_bf16",
    "shape_slat_flow_model_1024": "slat_flow_img2shape_dit_1_3B_1024_bf16",
    "shape_slat_decoder": "shape_dec_next_dc_f16c32_fp16",
    "tex_slat_flow_model_512": "slat_flow_imgshape2tex_dit_1_3B_512_bf16",
    "tex_slat_flow_model_1024": "slat_flow_imgshape2tex_dit_1_3B_1024_bf16",
    "tex_slat_decoder": "tex_dec_next_dc_f16c32_fp16",
}
_DIT = dict(model_channels=1536, cond_channels=1024, num_blocks=30, num_heads=12, mlp_ratio=5.3334,
            pe_mode="rope", share_mod=True, qk_rms_norm=True, qk_rms_norm_cross=True, dtype="bfloat16")
_CNX, _C2S = "SparseConvNeXtBlock3d", "SparseResBlockC2S3d"
_DEC = dict(model_channels=[1024, 512, 256, 128, 64], latent_channels=32, num_blocks=[4, 16, 8, 4, 0],
            block_type=[_CNX] * 5, up_block_type=[_C2S] * 4, use_fp16=True)
FULL = {
    "sparse_structure_flow_model": ("SparseStructureFlowModel", dict(resolution=16, in_channels=8,
                                                                     out_channels=8, **_DIT)),
    "sparse_structure_decoder": ("SparseStructureDecoder", dict(
        out_channels=1, latent_channels=8, num_res_blocks=2, num_res_blocks_middle=2,
        channels=[512, 128, 32], use_fp16=True)),
    "shape_slat_flow_model_512": ("SLatFlowModel", dict(resolution=32, in_channels=32, out_channels=32,
                                                        **_DIT)),
    "shape_slat_flow_model_1024": ("SLatFlowModel", dict(resolution=64, in_channels=32, out_channels=32,
                                                         **_DIT)),
    "tex_slat_flow_model_512": ("SLatFlowModel", dict(resolution=32, in_channels=64, out_channels=32,
                                                      **_DIT)),
    "tex_slat_flow_model_1024": ("SLatFlowModel", dict(resolution=64, in_channels=64, out_channels=32,
                                                       **_DIT)),
    "shape_slat_decoder": ("FlexiDualGridVaeDecoder", dict(resolution=1024, **_DEC)),
    "tex_slat_decoder": ("SparseUnetVaeDecoder", dict(out_channels=6, pred_subdiv=False, **_DEC)),
}


def build_models(tiny: bool, device: str) -> tuple[dict[str, torch.nn.Module], DinoV3Conditioner]:
    """Random networks in release precision on ``device`` (tiny: the test checkpoint's shapes).

    Weights are seeded: with unseeded random decoders the predicted subdivision (and so the
    decoded voxel count and the size of the mesh to export) changed from run to run, and two
    of three H200 runs did not finish their first job within ~400 s while one took 47 s.
    """
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    torch.manual_seed(0)
    models = {}
    for key, stem in KEYS.items():
        name, args = TINY_MODELS[stem] if tiny else FULL[key]
        with torch.device(device):
            models[key] = model_class(name)(**args).eval().requires_grad_(False)
    if tiny:
        cfg = DINOv3ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, patch_size=16, num_register_tokens=4)
    else:  # ViT-L/16 as released: 1024 wide, 24 layers, 16 heads, 4 registers, RoPE theta 100
        cfg = DINOv3ViTConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                              num_attention_heads=16, patch_size=16, num_register_tokens=4, rope_theta=100.0,
                              layerscale_value=1e-5, key_bias=False)
    with torch.device(device):
        dino = DINOv3ViTModel(cfg).eval().requires_grad_(False)
    return models, DinoV3Conditioner(dino)


def surface_mesh(target_faces: int) -> TriangleMesh:
    """A sphere above a torus (closed, smooth), about ``target_faces`` triangles, inside the unit cube."""
    def grid_surface(nu, nv, fn):
        u, v = np.meshgrid(np.linspace(0, 2 * np.pi, nu, endpoint=False),
                           np.linspace(0, 2 * np.pi, nv, endpoint=False), indexing="ij")
        verts = fn(u, v).reshape(-1, 3)
        i, j = np.meshgrid(np.arange(nu), np.arange(nv), indexing="ij")
        a, b = i * nv + j, ((i + 1) % nu) * nv + j
        c, d = ((i + 1) % nu) * nv + (j + 1) % nv, i * nv + (j + 1) % nv
        faces = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3),
                                np.stack([a, c, d], -1).reshape(-1, 3)])
        return verts, faces

    n = int(math.sqrt(target_faces / 6))
    torus = lambda u, v: np.stack([(0.275 + 0.075 * np.cos(v)) * np.cos(u),  # noqa: E731
                                   (0.275 + 0.075 * np.cos(v)) * np.sin(u), 0.075 * np.sin(v) - 0.2], -1)
    v1, f1 = grid_surface(n, n, torus)  # 2 n^2 faces
    sphere = uv_sphere(radius=0.25, rings=n, segments=2 * n, center=(0.0, 0.0, 0.12))  # ~4 n^2 faces
    v2, f2 = sphere.vertices, sphere.faces
    return TriangleMesh(np.concatenate([v1, v2]), np.concatenate([f1, f2 + len(v1)]))


def voxelize(mesh: TriangleMesh, grid: int, samples_per_cell: float = 6.0, seed: int = 0) -> torch.Tensor:
    """Surface voxels ``[N, 3]`` (sorted) of ``mesh`` on a ``grid``^3 lattice over [-0.5, 0.5]^3."""
    rng = np.random.default_rng(seed)
    tri = mesh.vertices[mesh.faces]  # [F, 3, 3]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    n = int(area.sum() * grid * grid * samples_per_cell) + 1
    f = rng.choice(len(tri), size=n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    p = tri[f, 0] * (1 - s)[:, None] + tri[f, 1] * (s * (1 - r2))[:, None] + tri[f, 2] * (s * r2)[:, None]
    q = np.clip(np.floor((p + 0.5) * grid), 0, grid - 1).astype(np.int64)
    return torch.from_numpy(np.unique(q, axis=0))


def mesh_structure(mesh: TriangleMesh) -> GivenStructure:
    """The generator's structure: ``mesh``'s voxels at whatever latent grid is asked for (cached)."""
    cache: dict[int, torch.Tensor] = {}

    def coords_at(grid: int) -> torch.Tensor:
        if grid not in cache:
            c = voxelize(mesh, grid).int()
            cache[grid] = torch.cat([torch.zeros(len(c), 1, dtype=torch.int32), c], 1)
        return cache[grid]

    return GivenStructure(coords_at)


def run_mode(models, dino, mode: str, low_vram: bool, batched_cfg: bool, args, structure: GivenStructure,
             out: Path, budget_stores: dict[bool, ModelStore]) -> dict:
    """One image -> GLB job; returns seconds per stage, total, peak VRAM and sizes.

    ``budget_stores`` holds the model store of each ``batched_cfg`` setting's budgeted runs
    (``args.vram_budget``, normal mode only), made by the first of them."""
    device = args.device
    budget = None if low_vram else args.vram_budget
    runtime = Runtime(model="preloaded", device=device, low_vram=low_vram, vram_budget_gib=budget,
                      batched_cfg=batched_cfg, fp8=args.fp8, compile_blocks=args.compile)
    store = budget_stores.get(batched_cfg) if budget is not None else None
    if store is None:
        home = "cpu" if low_vram or budget is not None else device
        for m in [*models.values(), dino.model]:
            m.to(home)
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        config = parse_pipeline_config(pipeline_json("unused"))
        tex_config = parse_pipeline_config(texturing_pipeline_json("unused"))
        store = ModelStore(runtime, Release(config, tex_config), models=models, conditioner=dino)
        if budget is not None:
            budget_stores[batched_cfg] = store
    gen = Trellis2Generator(runtime, structure=structure, store=store)
    steps = SamplerOverrides(steps=args.steps)
    request = GenerateRequest(images=(args.image,), output_dir=out, pipeline_type=mode, seed=0,
                              sparse_structure=steps, shape=steps, texture=steps,
                              export=ExportOptions(texture_size=args.texture_size, faces=args.faces),
                              name=f"{mode}{'_lowvram' if low_vram else ''}")
    t0 = time.perf_counter()
    result = gen.generate(request)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    total = time.perf_counter() - t0
    asset = result.assets[0]
    return {"mode": mode, "low_vram": low_vram, "cfg": "batched" if batched_cfg else "sequential",
            "fp8": args.fp8, "compile": args.compile,
            "seconds": result.seconds_per_stage, "total_s": total,
            "peak_vram_gib": result.peak_memory_bytes / 2**30, "faces": asset.faces,
            "resolution": asset.extra.get("resolution"),
            "export_breakdown_s": asset.extra.get("export_seconds"), "vram_budget_gib": budget,
            "moved_to_device_gib": result.moved_to_device_bytes / 2**30,
            "moved_to_host_gib": result.moved_to_host_bytes / 2**30}


def bench_export(args, out: Path) -> dict:
    """Export alone: a ~1M-face mesh, attributes from its own 1024-res voxels, 2048 textures."""
    mesh = surface_mesh(args.export_faces)
    dev = args.device
    coords = voxelize(mesh, 1024, samples_per_cell=3.0).to(dev)  # [K, 3]
    g = torch.Generator(device="cpu").manual_seed(0)
    attrs = torch.rand(len(coords), 6, generator=g).to(dev)
    asset = DecodedAsset(mesh.vertices, mesh.faces, coords, attrs, 1024)
    opts = ExportOptions(texture_size=args.texture_size, faces=args.export_faces)
    t0 = time.perf_counter()
    res = export_generated(mesh.vertices, mesh.faces, asset.attribute_fn(), out, "export_1m", opts, dev)
    total = time.perf_counter() - t0
    return {"input_faces": mesh.num_faces, "faces": res.faces, "texture_size": args.texture_size,
            "total_s": total, "breakdown_s": res.extra["export_seconds"], "glb_bytes": res.glb.stat().st_size}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--modes", nargs="*", default=["512", "1024_cascade", "1536_cascade"],
                   help="pipeline types to run (none: only the export benchmark)")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--texture-size", type=int, default=2048)
    p.add_argument("--faces", type=int, default=500_000)
    p.add_argument("--export-faces", type=int, default=1_000_000)
    p.add_argument("--vram", nargs="+", choices=["normal", "low"], default=["normal", "low"],
                   help="memory modes to run per pipeline type (low: models leave the GPU between stages)")
    p.add_argument("--cfg", nargs="+", choices=["batched", "sequential"], default=["sequential"],
                   help="classifier-free guidance passes per step: one batched forward or one forward "
                        "each; every pipeline type runs once per entry, in order (repeats allowed)")
    p.add_argument("--fp8", action="store_true",
                   help="FP8 block linears in the flow models (Runtime.fp8; converts the shared networks "
                        "in place, so every run of this invocation uses it)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the flow models' blocks (Runtime.compile_blocks; the first run of "
                        "each pipeline type includes compiling: repeat --cfg entries for the steady state)")
    p.add_argument("--vram-budget", type=vram_budget, default=None, metavar="GIB",
                   help="VRAM budget of the normal-mode runs (Runtime.vram_budget_gib): networks stay on the "
                        "GPU while they fit GIB, the least recently used leave when a stage needs room")
    p.add_argument("--repeat", type=int, default=2,
                   help="jobs per setting in this process: the first is cold (in a fresh process, the "
                        "first job of all is what a user's first Generate costs), later ones steady state")
    p.add_argument("--skip-export-bench", action="store_true")
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny networks (plumbing check on CPU)")
    p.add_argument("--image", type=Path, default=ROOT / "scripts" / "assets" / "demo.png")
    p.add_argument("--out", type=Path, default=Path("bench_pipeline_out"))
    p.add_argument("--json", type=Path, default=None, help="written after every run (partial results kept)")
    p.add_argument("--watchdog", type=float, default=0.0, metavar="S",
                   help="dump every thread's stack to stderr every S seconds (diagnoses a stuck run)")
    p.add_argument("--log-level", default="WARNING", help="logging level of the pipeline (INFO shows stages)")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    if args.watchdog > 0:
        faulthandler.dump_traceback_later(args.watchdog, repeat=True)
    if args.tiny:
        args.steps, args.texture_size, args.faces = min(args.steps, 2), min(args.texture_size, 128), 2000
        args.export_faces = min(args.export_faces, 20_000)
    args.out.mkdir(parents=True, exist_ok=True)
    models, dino, rows = {}, None, []
    budget_stores: dict[bool, ModelStore] = {}
    if args.modes:
        structure = mesh_structure(surface_mesh(1_000_000 if not args.tiny else 20_000))
        t = time.perf_counter()
        models, dino = build_models(args.tiny, args.device)
        print(f"built networks in {time.perf_counter() - t:.1f} s", flush=True)
    report = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
              "runs": rows}
    lows = [v == "low" for v in args.vram]
    repeats = range(1, args.repeat + 1)
    runs = [(c, m, lo, r) for c in args.cfg for m in args.modes for lo in lows for r in repeats]
    for cfg, mode, low, repeat in runs:
        row = run_mode(models, dino, mode, low, cfg == "batched", args, structure, args.out, budget_stores)
        # The process's first job pays every first use (kernel compiles, tuning, allocator growth);
        # a later job of the same settings is the steady state.
        row.update(repeat=repeat, first_job_in_process=not rows)
        rows.append(row)
        stages = " ".join(f"{k}={v:.2f}" for k, v in row["seconds"].items())
        budget = "" if row["vram_budget_gib"] is None else (
            f"budget {row['vram_budget_gib']:g} GiB (moved in {row['moved_to_device_gib']:.2f}, "
            f"out {row['moved_to_host_gib']:.2f} GiB)  ")
        print(f"{mode:>13} #{repeat} low_vram={low!s:<5} cfg={cfg:<10} fp8={args.fp8!s:<5} "
              f"compile={args.compile!s:<5} total {row['total_s']:7.2f} s  "
              f"peak {row['peak_vram_gib']:6.2f} GiB  res {row['resolution']}  faces {row['faces']}  "
              f"{budget}| {stages}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
    if not args.skip_export_bench:
        del models, dino
        budget_stores.clear()  # their networks too
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
        report["export"] = bench_export(args, args.out)
        e = report["export"]
        print(f"export {e['input_faces']} faces @ {e['texture_size']}: {e['total_s']:.2f} s "
              f"{json.dumps({k: round(v, 2) for k, v in e['breakdown_s'].items()})}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
