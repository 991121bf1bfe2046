"""``python -m backend retexture MESH IMAGE -o OUT/``: the same mesh with new PBR textures."""

from __future__ import annotations

import argparse
from pathlib import Path

from backend import protocol

from . import cli_common as C
from .api import RetextureRequest
from .model_source import BUNDLED_MINI_RELEASE


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("mesh", type=Path, help="GLB/glTF/OBJ/PLY mesh (its UVs are kept when it has them)")
    p.add_argument("image", type=Path, help="reference image (alpha preferred)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    resolutions = ", ".join(map(str, protocol.RETEXTURE_RESOLUTIONS))
    # Any multiple of 16 in [64, 1536] runs here (small ones make quick checks); the panel and
    # the server offer the released model's resolutions only.
    p.add_argument("--resolution", type=int, default=protocol.DEFAULT_RETEXTURE_RESOLUTION,
                   help=f"voxel resolution of the texture field: {resolutions}")
    p.add_argument("--seed", type=int, default=protocol.DEFAULT_SEED)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--up-axis", choices=["y", "z"], default="y", help="the mesh file's up axis")
    p.add_argument("--name", default=None)
    C.add_sampler_arguments(p, "texture", "tex")
    C.add_export_arguments(p)
    C.add_runtime_arguments(p)


def request_from_args(args: argparse.Namespace) -> RetextureRequest:
    return RetextureRequest(mesh=args.mesh, image=args.image, output_dir=args.output, seed=args.seed,
                            resolution=args.resolution, texture=C.overrides(args, "tex", args.steps),
                            export=C.export_options(args), name=args.name, up_axis=args.up_axis)


def run(args: argparse.Namespace, bundled_release: Path | None = BUNDLED_MINI_RELEASE) -> int:
    """Run the command; ``bundled_release`` is the bundled mini release folder (see ``--model``)."""
    return C.run_generator(args, request_from_args, "retexture", bundled_release)
