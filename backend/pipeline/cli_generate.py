"""``python -m backend generate IMAGE... -o OUT/``: image(s) -> GLB + Blender result folder per asset."""

from __future__ import annotations

import argparse
from pathlib import Path

from backend import protocol

from . import cli_common as C
from .api import DEFAULT_MULTIVIEW_MODE, MAX_VIEWS, MULTIVIEW_MODES, PIPELINE_TYPES, GenerateRequest
from .model_source import BUNDLED_MINI_RELEASE


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", type=Path, help="input images (PNG/JPEG/WebP/TIFF; alpha preferred)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    p.add_argument("--pipeline", choices=PIPELINE_TYPES, default=None,
                   help="resolution mode (default: the model's default_pipeline_type: 1024_cascade for "
                        "TRELLIS.2-4B, 512 for the bundled mini model)")
    p.add_argument("--seed", type=int, default=protocol.DEFAULT_SEED)
    p.add_argument("--samples", type=int, default=1,
                   help=f"variations per object, 1-{protocol.MAX_SAMPLES} (different noise, same seed)")
    p.add_argument("--multiview", choices=MULTIVIEW_MODES, default=None,
                   help=f"the images are 1-{MAX_VIEWS} pictures of ONE object (front, side, back...): "
                        "'stochastic' conditions each sampler step on one view in turn (costs what one "
                        "view costs), 'multidiffusion' averages all views' predictions every step (about "
                        f"(views + 1) / 2 times slower; '{DEFAULT_MULTIVIEW_MODE}' is the panel's default). "
                        "Without it every image is its own object")
    p.add_argument("--steps", type=int, default=None, help="sampler steps for every stage")
    p.add_argument("--max-tokens", type=int, default=protocol.DEFAULT_MAX_NUM_TOKENS,
                   help="1536 cascade token cap")
    p.add_argument("--name", default=None, help="output base name (default: the image's stem)")
    C.add_sampler_arguments(p, "sparse structure", "ss")
    C.add_sampler_arguments(p, "shape", "shape")
    C.add_sampler_arguments(p, "texture", "tex")
    C.add_export_arguments(p)
    C.add_runtime_arguments(p)


def request_from_args(args: argparse.Namespace) -> GenerateRequest:
    return GenerateRequest(
        images=tuple(args.images), output_dir=args.output, pipeline_type=args.pipeline, seed=args.seed,
        num_samples=args.samples, sparse_structure=C.overrides(args, "ss", args.steps),
        shape=C.overrides(args, "shape", args.steps), texture=C.overrides(args, "tex", args.steps),
        max_num_tokens=args.max_tokens, export=C.export_options(args), name=args.name,
        multiview=args.multiview)


def run(args: argparse.Namespace, bundled_release: Path | None = BUNDLED_MINI_RELEASE) -> int:
    """Run the command; ``bundled_release`` is the bundled mini release folder (see ``--model``)."""
    return C.run_generator(args, request_from_args, "generate", bundled_release)
