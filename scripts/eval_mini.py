"""Evaluate a trained mini TRELLIS.2 release on the held-out objects of a data folder, with baselines.

Usage: python scripts/eval_mini.py --release DIR --data DATA_DIR --meshes MESH_DIR --out OUT
       [--device cuda] [--limit N] [--view N] [--seed 0] [--steps N] [--baselines random retrieval]
       [--structure flow|true]

Scores each generated object's decoded mesh (no export). Writes OUT/results.jsonl, OUT/summary.json,
OUT/table.md and OUT/grid.png (see backend/train/metrics.py for the metrics and their conventions)
and prints the table's path.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.pipeline.api import PIPELINE_TYPES  # noqa: E402
from backend.train.evaluation import (  # noqa: E402
    BASELINES,
    STRUCTURE_FLOW,
    STRUCTURES,
    EvaluationError,
    evaluate_release,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", type=Path, required=True, help="release folder (pipeline.json + ckpts/)")
    parser.add_argument("--data", type=Path, required=True, help="data folder (metadata.jsonl, renders_cond)")
    parser.add_argument("--meshes", type=Path, required=True, help="folder of ground-truth {id}.glb")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--device", default="cuda", help="torch device for generation, metrics and renders")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N held-out objects")
    parser.add_argument("--view", type=int, default=None,
                        help="condition view index used as the input picture (default: each object's view "
                             "nearest 25 degrees above the horizon, like a product photo)")
    parser.add_argument("--seed", type=int, default=0, help="generation and surface-sampling seed")
    parser.add_argument("--pipeline", choices=PIPELINE_TYPES, default="512", help="pipeline type")
    parser.add_argument("--steps", type=int, default=None,
                        help="sampler steps per stage (default: pipeline.json's)")
    parser.add_argument("--points", type=int, default=50_000, help="surface samples per mesh")
    parser.add_argument("--baselines", nargs="*", choices=BASELINES, default=list(BASELINES),
                        help="baselines to run besides the release (default: all)")
    parser.add_argument("--structure", choices=STRUCTURES, default=STRUCTURE_FLOW,
                        help="stage 1: the release's flow, or each object's true occupancy from "
                             "DATA/ss_occupancy (an ablation that shows what stage 1 costs)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        report = evaluate_release(args.release, args.data, args.meshes, args.out, device=args.device,
                                  view=args.view, seed=args.seed, pipeline_type=args.pipeline,
                                  limit=args.limit, baselines=args.baselines, num_points=args.points,
                                  steps=args.steps, structure=args.structure)
    except (EvaluationError, ValueError, OSError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    print(report.table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
