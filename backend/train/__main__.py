"""``python -m backend.train --config CONFIG.json --output DIR --data DATA [--resume | --init-from RELEASE]``.

The same command trains on one device or, launched with ``torchrun --nproc_per_node N`` (and
``--nnodes/--node_rank/--master_addr`` for several hosts), on N GPUs with DDP: torchrun's RANK,
WORLD_SIZE and LOCAL_RANK are read here, once, and passed on explicitly.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .config import ConfigError, read_config
from .datasets import DataError

log = logging.getLogger("backend.train")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m backend.train",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--config", type=Path, required=True, help="training config JSON (models/dataset/trainer)")
    p.add_argument(
        "--output", type=Path, required=True, help="run folder: checkpoints, logs, exported weights"
    )
    p.add_argument(
        "--data", type=Path, required=True, help="data-toolkit folder (python -m backend.train.data)"
    )
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output")
    p.add_argument(
        "--init-from",
        type=Path,
        default=None,
        metavar="RELEASE",
        help="start a new run from a release folder's weights (each network named in "
        "trainer.args.release_names that RELEASE/ckpts has; ignored with --resume)",
    )
    p.add_argument(
        "--image-encoder",
        default=None,
        help="image encoder folder or repo id (overrides trainer.args.image_cond_model)",
    )
    p.add_argument(
        "--device", default="auto", help="cuda, cuda:N, cpu or auto (the local GPU under torchrun)"
    )
    p.add_argument("--max-steps", type=int, default=None, help="stop earlier than the config's max_steps")
    p.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="also stop (checkpoint and export) at the first step after this much training time",
    )
    p.add_argument(
        "--profile-steps",
        type=int,
        default=0,
        help="record this many steps (after 3 warm-up steps) with torch.profiler into OUTPUT/profile.txt",
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch
    import torch.distributed as dist

    from .trainer import DistInfo, Trainer

    info = DistInfo(
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )
    if args.device == "auto":
        device = torch.device(f"cuda:{info.local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", info.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if info.world_size > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        config = read_config(args.config)
        trainer = Trainer(
            config,
            args.output,
            args.data,
            device=device,
            dist_info=info,
            image_encoder=args.image_encoder,
            resume=args.resume,
            init_from=args.init_from,
        )
        trainer.run(args.max_steps, max_minutes=args.max_minutes, profile_steps=args.profile_steps)
    except (ConfigError, DataError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    finally:
        if info.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
