"""Score stage 1 (sparse-structure flow + decoder) of a release on held-out objects, against random weights.

Usage: python scripts/eval_structure.py --release DIR --data DATA_DIR --out OUT
       [--device cuda] [--limit N] [--view N] [--seed 0] [--split test|train|all] [--no-random]
       [--guidance G [G ...]] [--steps N [N ...]] [--rescale-t T [T ...]] [--guidance-rescale R [R ...]]

Writes OUT/structure_results.jsonl and OUT/structure_summary.json (IoU, dilated IoU, precision and
recall of the 32^3 structure against each object's own occupancy; see
backend/train/structure_eval.py) and prints the summary. The random baseline is the same release
with freshly initialised networks (OUT/random_release). ``--guidance``, ``--steps``, ``--rescale-t`` and
``--guidance-rescale`` instead score the release once per combination of the values given (no random
baseline): choose stage 1's sampler settings on ``--split train`` objects, then set them in the
release's pipeline.json (``sparse_structure_sampler.params``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.pipeline.api import SamplerOverrides  # noqa: E402
from backend.train.evaluation import EvaluationError, write_random_release  # noqa: E402
from backend.train.structure_eval import evaluate_structure  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", type=Path, required=True, help="release folder (pipeline.json + ckpts/)")
    parser.add_argument("--data", type=Path, required=True,
                        help="data folder (records, renders_cond, ss_occupancy) from the data toolkit")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N objects (by id)")
    parser.add_argument("--view", type=int, default=None,
                        help="condition view used as the input picture (default: each object's view nearest "
                             "25 degrees above the horizon, like a product photo)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--split", default="test",
                        help="records of this split (default test); 'all' for every prepared object")
    parser.add_argument("--no-random", action="store_true", help="skip the random-weights baseline")
    parser.add_argument("--guidance", type=float, nargs="+", default=(),
                        help="stage-1 guidance strengths to score (each combination with the settings "
                             "below once; no random baseline)")
    parser.add_argument("--steps", type=int, nargs="+", default=(), help="stage-1 sampler steps to score")
    parser.add_argument("--rescale-t", type=float, nargs="+", default=(), help="stage-1 time-rescale values")
    parser.add_argument("--guidance-rescale", type=float, nargs="+", default=(),
                        help="stage-1 guidance-rescale values")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        releases = {"trained": args.release}
        lists = (args.guidance, args.steps, args.rescale_t, args.guidance_rescale)
        samplers = [] if not any(lists) else [
            SamplerOverrides(guidance_strength=g, steps=n, rescale_t=t, guidance_rescale=r)
            for g in args.guidance or [None] for n in args.steps or [None]
            for t in args.rescale_t or [None] for r in args.guidance_rescale or [None]]
        if not args.no_random and not samplers:
            random_release = args.out / "random_release"
            releases["random"] = write_random_release(args.release, random_release, seed=args.seed)
        summary = evaluate_structure(releases, args.data, args.out, device=args.device, seed=args.seed,
                                     limit=args.limit, view=args.view,
                                     split=None if args.split == "all" else args.split,
                                     samplers=samplers)
    except (EvaluationError, ValueError, OSError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
