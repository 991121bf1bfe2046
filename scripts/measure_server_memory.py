"""Resident memory of ``python -m backend serve`` over many real jobs in a row.

Starts the server through the add-on's client (as Blender does), loads a model
folder (e.g. the tiny checkpoint from ``scripts/make_tiny_checkpoint.py``), runs
``--jobs`` generate jobs with different seeds, and prints the server's VmRSS after
each one (Linux ``/proc``). A leak shows as growth after the first few jobs.

    .venv/bin/python scripts/measure_server_memory.py --model /tmp/tiny --jobs 50 --device cpu
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from scripts.build_extension import place_contract

place_contract()  # the add-on's copy of the job contract, placed into this checkout
from tests.fixtures.images import rgba_transparent  # noqa: E402
from trellis2_blender import protocol  # noqa: E402
from trellis2_blender.core.client import BackendClient, BackendConfig  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS line")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--pipeline", default="512")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        image = rgba_transparent(tmp / "in.png")
        config = BackendConfig(python=sys.executable, backend_root=str(ROOT),
                               log_path=str(tmp / "server.log"),
                               server_args=("--device", args.device, "--offline"))
        client = BackendClient(config)
        client.start()
        try:
            events = client.wait(client.load(args.model), 300)
            if events[-1].status != "ok":
                raise SystemExit(f"load failed: {events}")
            readings = []
            for i in range(args.jobs):
                job = client.generate([str(image)], str(tmp / f"job{i}"), pipeline_type=args.pipeline, seed=i,
                                      export=protocol.Export(texture_size=256, faces=20_000))
                done = client.wait(job, 600)[-1]
                if done.status != "ok":
                    raise SystemExit(f"job {i} ended {done.status}; see {tmp / 'server.log'}")
                readings.append(rss_kib(client.pid))
                print(f"job {i + 1:3d}: VmRSS {readings[-1] / 1024:8.1f} MiB", flush=True)
            settled = readings[min(4, len(readings) - 1)]
            print(f"after job 5: {settled / 1024:.1f} MiB; last: {readings[-1] / 1024:.1f} MiB; "
                  f"max: {max(readings) / 1024:.1f} MiB; growth after job 5: "
                  f"{(readings[-1] - settled) / 1024:+.1f} MiB")
        finally:
            client.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
