"""The long fuzz run: the fuzz suite's strategies for many cases, every outcome counted.

    .venv/bin/python scripts/fuzz_long.py --cases 10000 --report fuzz_report.json

The cases are split evenly over four targets: mesh files (OBJ/PLY/glTF/GLB), O-Voxel
``.npz`` files, image files and lines to an in-process ``serve`` (the real service with a
generator that reads its inputs with the product's readers). Each case runs under a time
bound (``--case-seconds``); the whole process runs under an address-space limit
(``--memory-gib``), so a case that tries to allocate without bound fails instead of
swapping. Outcomes are those of ``tests/fuzz/checks.py``; bad ones are kept with their
input (``--report``). Exit code 1 when any case ended badly, else 0.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

log = logging.getLogger("fuzz_long")
TARGETS = ("mesh", "ovoxel", "image", "serve")


def _run_target(target: str, cases: int, seed: int, root: Path, case_seconds: float,
                counts: collections.Counter, bad: list[dict]) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    from tests.fuzz import checks, strategies
    from tests.fuzz.harness import ServiceHarness

    sandbox = checks.make_sandbox(root / target)
    harness = ServiceHarness(sandbox["server"]) if target == "serve" else None
    files = {k: str(sandbox[k]) for k in ("image", "mesh", "bad_image", "bad_mesh")}
    files["outside"] = str(root / target / strategies.SECRET_NAME)
    readers = {"mesh": (strategies.mesh_files, checks.check_mesh_file),
               "ovoxel": (strategies.ovoxel_files(), checks.check_ovoxel_file),
               "image": (strategies.image_files(), checks.check_image_file)}

    def record(outcome: str, detail: str, case: object) -> None:
        counts[outcome.split(":", 1)[0] if not checks.is_good(outcome) else outcome] += 1
        if not checks.is_good(outcome):
            bad.append({"target": target, "outcome": outcome, "detail": detail[:4000],
                        "case": repr(case)[:4000]})
            log.error("%s: %s %s", target, outcome, detail[:300])

    if target == "serve":
        strategy = st.data()

        def one(data):
            line = data.draw(strategies.protocol_lines(files, str(sandbox["out"])))
            record(*checks.check_line(harness, line, root / target, sandbox["out"], sandbox["keep"],
                                      seconds=case_seconds), line)
    else:
        strategy, check = readers[target]

        def one(data):
            name, payload = data
            record(*check(sandbox["inputs"], name, payload, seconds=case_seconds), (name, payload))

    run = settings(max_examples=cases, deadline=None, database=None, derandomize=False,
                   suppress_health_check=list(HealthCheck))(given(strategy)(one))
    try:
        hypothesis_seed(seed)(run)()
    finally:
        if harness is not None:
            harness.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=10_000, help="cases in all, split over the four targets")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--case-seconds", type=float, default=30.0, help="time bound of one case")
    p.add_argument("--memory-gib", type=float, default=4.0, help="address-space limit of the run")
    p.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    p.add_argument("--report", type=Path, default=None, help="write counts and bad cases here (JSON)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("backend").setLevel(logging.ERROR)  # the readers' warnings about hostile files
    limit = int(args.memory_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    report: dict = {"cases": args.cases, "seed": args.seed, "targets": {}, "bad": []}
    per_target = max(1, args.cases // len(args.targets))
    with tempfile.TemporaryDirectory(prefix="fuzz_long_") as tmp:
        for target in args.targets:
            counts: collections.Counter = collections.Counter()
            started = time.monotonic()
            _run_target(target, per_target, args.seed, Path(tmp), args.case_seconds, counts, report["bad"])
            report["targets"][target] = {"counts": dict(sorted(counts.items())), "ran": sum(counts.values()),
                                         "seconds": round(time.monotonic() - started, 1)}
            log.info("%s: %d cases, %s", target, sum(counts.values()), dict(sorted(counts.items())))
            if args.report:
                args.report.write_text(json.dumps(report, indent=2))
    total = collections.Counter()
    for t in report["targets"].values():
        total.update(t["counts"])
    report["total"] = dict(sorted(total.items()))
    if args.report:
        args.report.write_text(json.dumps(report, indent=2))
    print(json.dumps({"total": report["total"], "bad": len(report["bad"])}, indent=2))
    return 1 if report["bad"] else 0


if __name__ == "__main__":
    sys.exit(main())
