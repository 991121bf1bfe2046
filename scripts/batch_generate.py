"""Headless batch generation and retexturing from a checkout (the extension's ``blender -c trellis2``).

The batch itself lives in the add-on (``trellis2_blender/batch.py``, its docstring lists the
options and the manifest format); an installed extension runs it as ``blender -c trellis2 ...``.
This script runs the same code inside Blender or with the ``bpy`` module::

    blender --background --python scripts/batch_generate.py -- --input DIR --output OUT [options]
    .venv/bin/python scripts/batch_generate.py --input a.png b.png --output OUT [options]
    .venv/bin/python scripts/batch_generate.py --input jobs.json --output OUT

The exit code is 1 when any item failed, 2 for bad arguments, else 0.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _addon():
    """The add-on package: the installed extension when Blender has it enabled, else this checkout's."""
    for name, module in list(sys.modules.items()):
        if name.startswith("bl_ext.") and name.endswith(".trellis2_blender"):
            return module
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from scripts.build_extension import place_contract

    place_contract()  # the checkout's add-on folder has no committed copy of the contract
    return importlib.import_module("trellis2_blender")


def main(argv: list[str]) -> int:
    return importlib.import_module(_addon().__name__ + ".batch").main(argv)


def _argv() -> list[str]:
    argv = sys.argv
    return argv[argv.index("--") + 1:] if "--" in argv else argv[1:]


if __name__ == "__main__":
    sys.exit(main(_argv()))
