"""Write a tiny random-weight TRELLIS.2 release folder in the official Hugging Face layout.

Usage: python scripts/make_tiny_checkpoint.py OUT [--seed N]

See backend/models/tiny_checkpoint.py for the layout and the tiny configuration.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.models.tiny_checkpoint import make_tiny_checkpoint  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output folder (created if needed)")
    parser.add_argument("--seed", type=int, default=0, help="weight seed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    make_tiny_checkpoint(args.out, seed=args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
