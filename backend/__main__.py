"""``python -m backend <command>``: the backend's command line.

Each command lives in its own module, imported only when it is used, so
``python -m backend --help`` works before torch is installed.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# command -> (module providing ``add_arguments(parser)`` and ``run(args) -> int``, help)
COMMANDS: dict[str, tuple[str, str]] = {
    "ovoxel": ("backend.ovoxel.cli", "convert meshes to and from O-Voxel files"),
    "generate": ("backend.pipeline.cli_generate", "image(s) -> textured 3D asset"),
    "retexture": ("backend.pipeline.cli_retexture", "mesh + image -> the same mesh with new PBR textures"),
    "serve": ("backend.server.main", "run the line-delimited JSON service that Blender drives"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    argv = sys.argv[1:] if argv is None else argv
    if sys.platform == "darwin":
        # PyTorch reads this once, when it loads: operators Apple's GPU (MPS) lacks then run on
        # the CPU instead of failing the job. Set here, before any command imports torch.
        os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text,
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        # Only the chosen command's module is imported (and only it can fail to import).
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(cmd)
            cmd.set_defaults(run=module.run)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
