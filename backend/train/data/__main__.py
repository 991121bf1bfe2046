"""``python -m backend.train.data {prepare,encode,merge}``: build a training set from meshes."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger("backend.train.data")


def _resolve_device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m backend.train.data", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    prep = sub.add_parser("prepare", help="meshes -> O-Voxels, condition renders, records")
    prep.add_argument("--input", required=True, type=Path,
                      help="folder of .glb/.gltf/.obj/.ply files (+ optional split.json)")
    prep.add_argument("--output", required=True, type=Path, help="data folder to write")
    prep.add_argument("--resolution", type=int, default=512, help="O-Voxel grid size (default 512)")
    prep.add_argument("--extra-resolutions", default="",
                      help="more O-Voxel grids, comma-separated (e.g. 256: VAEs can train there first)")
    prep.add_argument("--views", type=int, default=8, help="condition renders per asset (default 8)")
    prep.add_argument("--render-size", type=int, default=512, help="square render size (default 512)")
    prep.add_argument("--supersample", type=int, default=2,
                      help="render this many times larger and box-filter down (antialiasing; default 2)")
    prep.add_argument("--seed", type=int, default=0, help="seed of the camera/light sampling (default 0)")
    prep.add_argument("--up-axis", choices=("auto", "y", "z"), default="auto",
                      help="up axis of the files (auto: Y for glTF/OBJ, Z for PLY)")
    prep.add_argument("--workers", type=int, default=None, help="O-Voxel processes (default: all cores)")
    prep.add_argument("--device", default="auto", help="render device: cpu, cuda or auto (default)")
    prep.add_argument("--limit", type=int, default=None, help="only the first K assets (sorted by name)")
    _add_sharding(prep)

    enc = sub.add_parser("encode", help="O-Voxels -> latents with trained encoders, then latent statistics")
    enc.add_argument("--data", required=True, type=Path, help="data folder written by prepare")
    enc.add_argument("--shape-encoder", help="checkpoint stem .../ckpts/NAME of the shape encoder")
    enc.add_argument("--pbr-encoder", help="checkpoint stem of the PBR (texture) encoder")
    enc.add_argument("--ss-encoder", help="checkpoint stem of the sparse-structure encoder")
    enc.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    enc.add_argument("--batch", type=int, default=4, help="assets per forward pass (default 4)")
    enc.add_argument("--conv-backend", choices=("torch", "im2col", "triton", "auto"), default="torch",
                     help="sparse convolution path of the encoders (torch: no per-size kernel tuning)")
    _add_sharding(enc)

    merge = sub.add_parser("merge", help="rebuild metadata.jsonl, statistics.json and latent_stats.json")
    merge.add_argument("--data", required=True, type=Path, help="data folder")
    merge.add_argument("--shape-encoder-name", help="shape latent folder name for latent_stats.json")
    merge.add_argument("--pbr-encoder-name", help="PBR latent folder name for latent_stats.json")
    return parser


def _add_sharding(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rank", type=int, default=0, help="this process's shard (default 0)")
    parser.add_argument("--world-size", type=int, default=1,
                        help="number of shards; run merge after all ranks finish when > 1 (default 1)")


def _resolutions(text: str) -> tuple[int, ...]:
    from .layout import DataToolkitError

    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise DataToolkitError(f"--extra-resolutions: expected integers like 256,512, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from backend.geometry import MeshError
    from backend.models.loading import CheckpointError
    from backend.ovoxel.types import OVoxelError

    from .encode import encode_dataset, load_encoder
    from .layout import DataToolkitError
    from .merge import merge_records
    from .prepare import PrepareOptions, prepare_dataset

    try:
        if args.command == "prepare":
            summary = prepare_dataset(PrepareOptions(
                input_dir=args.input, output_dir=args.output, resolution=args.resolution, views=args.views,
                render_size=args.render_size, supersample=args.supersample, seed=args.seed, rank=args.rank,
                world_size=args.world_size, workers=args.workers, device=_resolve_device(args.device),
                limit=args.limit, up_axis=args.up_axis,
                extra_resolutions=_resolutions(args.extra_resolutions)))
            return 1 if summary.failed else 0
        if args.command == "encode":
            device = _resolve_device(args.device)
            stems = {"shape": args.shape_encoder, "pbr": args.pbr_encoder, "ss": args.ss_encoder}
            loaded = {k: load_encoder(s, device, args.conv_backend) if s else None for k, s in stems.items()}
            encode_dataset(args.data, loaded["shape"], loaded["pbr"], loaded["ss"], device=device,
                           rank=args.rank, world_size=args.world_size, batch=args.batch)
            return 0
        merge_records(args.data, {"shape": args.shape_encoder_name, "pbr": args.pbr_encoder_name})
        return 0
    except (DataToolkitError, CheckpointError, OVoxelError, MeshError, KeyError) as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
