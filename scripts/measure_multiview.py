"""Single view vs several views of one object: held-out Chamfer / F-score, or the time each mode costs.

Quality (needs a trained release and a prepared data folder with several condition views per object):

    python scripts/measure_multiview.py --release DIR --data DATA_DIR --meshes MESH_DIR --out OUT \
        [--views 4 2 6] [--limit 20] [--device cuda]

For every held-out object (split "test") it generates one asset from ``--views[0]`` alone and one
from all ``--views`` with each multi-view mode, scores each against the ground-truth mesh with the
held-out metrics of ``backend/train/metrics.py`` (the decoded mesh, canonical normalisation,
Chamfer, F-score at 1% and 5%), and writes OUT/results.jsonl and OUT/table.md (means per method).

Cost (any release, e.g. the tiny test checkpoint; no data folder):

    python scripts/measure_multiview.py --release DIR --timing --pictures a.png b.png c.png

times one job per method (single view, then each mode over all pictures) and prints the seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.pipeline.api import MULTIVIEW_MODES, ExportOptions, GenerateRequest, SamplerOverrides  # noqa: E402

SINGLE = "single"
METHODS = (SINGLE, *MULTIVIEW_MODES)


def _request(pictures: list[Path], method: str, out: Path, name: str, args) -> GenerateRequest:
    steps = SamplerOverrides(steps=args.steps)
    return GenerateRequest(images=tuple(pictures[:1] if method == SINGLE else pictures), output_dir=out,
                           pipeline_type=args.pipeline, seed=args.seed, name=name,
                           multiview=None if method == SINGLE else method,  # type: ignore[arg-type]
                           sparse_structure=steps, shape=steps, texture=steps,
                           export=ExportOptions(texture_size=args.texture_size, faces=args.faces,
                                                write_direct=False))


def _generator(args):
    from backend.pipeline.generator import Trellis2Generator
    from backend.pipeline.runtime import Runtime

    return Trellis2Generator(Runtime(model=str(args.release), device=args.device, offline=True))


def timing(args) -> int:
    generator = _generator(args)
    pictures = list(args.pictures)
    generator.generate(_request(pictures, SINGLE, args.out / "warmup", "warmup", args))  # loads the models
    seconds = {}
    for method in METHODS:
        start = time.perf_counter()
        generator.generate(_request(pictures, method, args.out / method, method, args))
        seconds[method] = time.perf_counter() - start
    for method, value in seconds.items():
        print(f"{method:>15}: {value:7.2f} s  ({value / seconds[SINGLE]:.2f}x single view, "
              f"{len(pictures) if method != SINGLE else 1} picture(s))")
    return 0


def quality(args) -> int:
    import numpy as np

    from backend.train.conditioning import condition_image_path
    from backend.train.datasets import read_records
    from backend.train.evaluation import decoded_mesh, read_mesh_z_up
    from backend.train.metrics import compare_meshes

    records = read_records(args.data, "test")[: args.limit]
    if not records:
        sys.stderr.write(f"error: {args.data}: no held-out objects (split 'test')\n")
        return 1
    generator = _generator(args)
    rows = []
    for record in records:
        object_id = record["id"]
        pictures = [condition_image_path(args.data, object_id, v) for v in args.views]
        gt = read_mesh_z_up(args.meshes / f"{object_id}.glb")
        for method in METHODS:
            row = {"id": object_id, "method": method}
            try:
                request = _request(pictures, method, args.out / method, object_id, args)
                pred = decoded_mesh(generator.decode(request)[0])
                metrics = compare_meshes(pred, gt, args.points, args.seed)
                row.update(chamfer=metrics.chamfer, f_score_1pct=metrics.f_score_1pct,
                           f_score_5pct=metrics.f_score_5pct)
            except Exception as exc:  # noqa: BLE001 - one object's failure is recorded, the run goes on
                row["error"] = f"{type(exc).__name__}: {exc}"
            rows.append(row)
            logging.info("%s", row)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = [f"Held-out objects: {len(records)}; views {args.views} (single = view {args.views[0]})", "",
             "| method | ok | Chamfer (lower is better) | F-score 1% | F-score 5% |", "|---|---|---|---|---|"]
    for method in METHODS:
        ok = [r for r in rows if r["method"] == method and "error" not in r]
        mean = {k: float(np.mean([r[k] for r in ok])) if ok else float("nan")
                for k in ("chamfer", "f_score_1pct", "f_score_5pct")}
        lines.append(f"| {method} | {len(ok)} | {mean['chamfer']:.4f} | {mean['f_score_1pct']:.3f} | "
                     f"{mean['f_score_5pct']:.3f} |")
    table = "\n".join(lines) + "\n"
    (args.out / "table.md").write_text(table)
    print(table)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--release", type=Path, required=True, help="release folder (pipeline.json + ckpts/)")
    parser.add_argument("--out", type=Path, default=Path("out/multiview"), help="output folder")
    parser.add_argument("--timing", action="store_true", help="time the methods instead of scoring them")
    parser.add_argument("--pictures", type=Path, nargs="+", help="--timing: pictures of one object")
    parser.add_argument("--data", type=Path, help="data folder (metadata.jsonl, renders_cond/)")
    parser.add_argument("--meshes", type=Path, help="folder of ground-truth {id}.glb")
    parser.add_argument("--views", type=int, nargs="+", default=[4, 2, 6],
                        help="condition view indices (of 8 sampled views, 4 looks from 20-30 degrees above "
                             "the horizon, 2 from 0-10, 6 from 42-56; 0 and 1 look from below)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N held-out objects")
    parser.add_argument("--device", default="cuda", help="torch device")
    parser.add_argument("--seed", type=int, default=0, help="generation and surface-sampling seed")
    parser.add_argument("--pipeline", default="512", help="pipeline type")
    parser.add_argument("--steps", type=int, default=None,
                        help="sampler steps per stage (default: the model's)")
    parser.add_argument("--points", type=int, default=50_000, help="surface samples per mesh")
    parser.add_argument("--texture-size", type=int, default=256, help="exported texture size")
    parser.add_argument("--faces", type=int, default=50_000, help="exported face budget")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.timing:
        if not args.pictures:
            parser.error("--timing needs --pictures")
        return timing(args)
    if args.data is None or args.meshes is None:
        parser.error("scoring needs --data and --meshes (or use --timing)")
    return quality(args)


if __name__ == "__main__":
    raise SystemExit(main())
