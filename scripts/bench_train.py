"""Release-size SLat flow training step: time, samples/s and model FLOP utilisation (MFU).

One step = ``--samples`` micro-batches of one ``--tokens``-token sample each (random voxel
coordinates on a 64^3 grid, 1,029 condition tokens of width 1,024), forward + backward of the
flow-matching loss in bf16 autocast over fp32 master weights, adaptive clipping and an AdamW update
-- the training loop's own ``Trainer.train_step`` path minus data loading.

Model FLOPs per sample count the matmuls only, forward plus backward (x3): ``2 * L * P`` for the
block linears applied to the L tokens, ``2 * M * P_kv`` for the cross-attention K/V projection of the
M condition tokens, and attention ``4 * L * C * (L + M)`` per block (QK^T and PV). MFU is given
against the H200's dense bf16 peak (989 TFLOP/s) and
against the measured matmul ceiling of ``scripts/bench_models.py`` (~784 TFLOP/s here).

Under ``torchrun --nproc_per_node N`` every rank runs the same step under DDP and the reported
samples/s is the sum over ranks.

``--config`` times the denoiser of a training config instead (e.g. the mini sparse-structure flow:
dense ``[batch, C, R, R, R]`` latents, or a sparse flow: ``--tokens`` random voxels per sample), with
``--batch`` samples per micro-batch and condition tokens of the config's width; ``--compile`` runs
the network under ``torch.compile`` as ``trainer.args.compile`` does.

    python scripts/bench_train.py [--tokens 8192] [--samples 4] [--steps 10] [--checkpointing]
    python scripts/bench_train.py --config backend/train/configs/mini/ss_flow.json --batch 32 \
        --samples 1 [--compile]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.models.slat_flow import SLatFlowModel  # noqa: E402
from backend.models.sparse_structure_flow import SparseStructureFlowModel  # noqa: E402
from backend.train.config import read_config  # noqa: E402
from backend.train.objectives import FlowArgs, FlowMatchingObjective  # noqa: E402
from backend.train.trainer import build_networks  # noqa: E402

PEAK_BF16 = 989e12
RELEASE_ARGS = {
    "resolution": 64,
    "in_channels": 32,
    "model_channels": 1536,
    "cond_channels": 1024,
    "out_channels": 32,
    "num_blocks": 30,
    "num_heads": 12,
    "mlp_ratio": 5.3334,
    "pe_mode": "rope",
    "share_mod": True,
    "qk_rms_norm": True,
    "qk_rms_norm_cross": True,
    "dtype": "float32",
}


COND_TOKENS = 1029  # 1 class + 4 register + 32^2 patch tokens of a 512 px picture


def model_flops_per_sample(model: torch.nn.Module, tokens: int, cond_tokens: int) -> float:
    """Matmul FLOPs of forward + backward (x3) for one sample; cross-attention K/V see the condition only."""
    on_tokens = on_cond = 0
    for block in model.blocks:
        for name, m in block.named_modules():
            if isinstance(m, torch.nn.Linear):
                if name == "cross_attn.to_kv":
                    on_cond += m.weight.numel()
                else:
                    on_tokens += m.weight.numel()
    attn = 4 * tokens * model.model_channels * (tokens + cond_tokens) * len(model.blocks)
    return 3 * (2 * tokens * on_tokens + 2 * cond_tokens * on_cond + attn)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=8192)
    p.add_argument("--samples", type=int, default=4, help="samples (micro-batches) per step and rank")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--checkpointing", action="store_true", help="gradient checkpointing of every block")
    p.add_argument("--attention", default="sdpa_cudnn", help="attention backend (see AttentionBackend)")
    p.add_argument("--json", type=Path, default=None, help="also write the result here")
    p.add_argument(
        "--width", type=int, default=1536, help="width (1536 = release)"
    )
    p.add_argument("--depth", type=int, default=30, help="blocks (30 = release)")
    p.add_argument("--device", default="cuda", help="cuda (cuda:LOCAL_RANK under torchrun) or cpu")
    p.add_argument("--config", type=Path, default=None,
                   help="time this training config's denoiser instead of the release-size SLat flow")
    p.add_argument("--batch", type=int, default=1, help="samples per micro-batch")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (in place)")
    args = p.parse_args()

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local) if args.device == "cuda" else torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group("nccl")
    torch.manual_seed(rank)
    if args.config is not None:
        config = read_config(args.config)
        model = build_networks(config)["denoiser"].to(device)
        cond_width = config.models["denoiser"].args["cond_channels"]
    else:
        model = SLatFlowModel(**{**RELEASE_ARGS, "model_channels": args.width, "num_blocks": args.depth})
        model, cond_width = model.to(device), RELEASE_ARGS["cond_channels"]
    model.set_attention_backend(args.attention)
    if args.checkpointing:
        model.set_gradient_checkpointing(True)
    if args.compile:
        model.compile()
    flow_args = FlowArgs(t_schedule={"name": "uniform"})
    objective = FlowMatchingObjective({"denoiser": model}, flow_args).to(device)
    wrapped = objective
    if world > 1:
        wrapped = torch.nn.parallel.DistributedDataParallel(objective, device_ids=[local], bucket_cap_mb=128)
    params = [q for q in objective.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.01)

    cond = torch.randn(args.batch, COND_TOKENS, cond_width, device=device)
    if isinstance(model, SparseStructureFlowModel):
        tokens = (model.resolution // getattr(model, "patch_size", 1)) ** 3
        side = model.resolution
        x0 = torch.randn(args.batch, model.in_channels, side, side, side, device=device)
        batch = {"x0": x0, "cond": cond}
    else:
        tokens = args.tokens
        axis = torch.arange(model.resolution)
        grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
        if tokens > len(grid):
            raise SystemExit(f"--tokens {tokens}: more than the {len(grid)} cells of the "
                             f"{model.resolution}^3 grid")
        coords = []
        for b in range(args.batch):  # any fixed voxel set per sample
            cells = grid[torch.randperm(len(grid))[:tokens]].sort(dim=0).values
            coords.append(torch.cat([torch.full((tokens, 1), b, dtype=torch.long), cells], 1))
        batch = {"coords": torch.cat(coords).int().to(device),
                 "x0": torch.randn(args.batch * tokens, model.in_channels, device=device), "cond": cond}

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        for i in range(args.samples):
            sync = world == 1 or i == args.samples - 1
            ctx = contextlib.nullcontext() if sync else wrapped.no_sync()
            with ctx, torch.autocast(device.type, dtype=torch.bfloat16):
                loss, _ = wrapped(batch)
                (loss / args.samples).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    for _ in range(args.warmup):
        step()
    sync_device = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync_device()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync_device()
    dt = (time.perf_counter() - t0) / args.steps
    per_step = args.samples * args.batch  # samples per step and rank
    flops = model_flops_per_sample(model, tokens, COND_TOKENS) * per_step
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "model": str(args.config) if args.config else "release-size SLat flow",
        "world_size": world,
        "tokens_per_sample": tokens,
        "samples_per_step_per_rank": per_step,
        "checkpointing": args.checkpointing,
        "compile": args.compile,
        "attention": args.attention,
        "step_s": dt,
        "samples_per_s": per_step * world / dt,
        "model_tflop_per_sample": flops / per_step / 1e12,
        "tflops_per_gpu": flops / dt / 1e12,
        "mfu_vs_989": flops / dt / PEAK_BF16,
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "params_m": sum(q.numel() for q in model.parameters()) / 1e6,
        "torch": torch.__version__,
    }
    if rank == 0:
        print(json.dumps(result, indent=2))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
    if world > 1:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
