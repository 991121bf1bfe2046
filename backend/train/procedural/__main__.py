"""``python -m backend.train.procedural``: write a procedural GLB data set with a fixed train/test split."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from .dataset import write_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend.train.procedural",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="folder for {id}.glb, split.json and objects.jsonl")
    parser.add_argument("--count", type=int, required=True, help="number of objects (ids proc_000000 ...)")
    parser.add_argument("--seed", type=int, required=True, help="non-negative integer; fixes every object")
    parser.add_argument("--test-count", type=int, default=0, help="held-out objects (default 0)")
    parser.add_argument("--workers", type=int, default=1, help="processes generating in parallel (default 1)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    try:
        summary = write_dataset(args.output, args.count, args.seed, args.test_count, workers=args.workers)
    except ValueError as exc:
        parser.error(str(exc))
    seconds = time.perf_counter() - start
    sys.stdout.write(f"{args.output}: {summary.written} written, {summary.skipped} skipped, "
                     f"{len(summary.train)} train / {len(summary.test)} test, {seconds:.1f} s\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
