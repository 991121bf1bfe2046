"""The fuzz suite against real processes: ``ovoxel encode`` and ``serve`` as the user starts them.

Each process runs under an address-space limit and a time limit. ``serve`` gets a whole batch
of hostile lines at once (as a client that writes faster than jobs run) and must answer every
one, stay up, and shut down cleanly.
"""

from __future__ import annotations

import collections
import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend import protocol
from tests.fuzz import checks, strategies

ROOT = Path(__file__).resolve().parents[2]
MEMORY_BYTES = 4 << 30
PROCESSES = settings(max_examples=4, deadline=None, derandomize=True, database=None,
                     suppress_health_check=list(HealthCheck))


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))


def _run(args: list[str], stdin: bytes = b"", timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "backend", *args], input=stdin, cwd=ROOT,
                          capture_output=True, timeout=timeout, preexec_fn=_limit_memory)


@pytest.mark.slow
@PROCESSES
@given(case=strategies.mesh_files)
def test_ovoxel_encode_cli(tmp_path_factory, case):
    root = tmp_path_factory.mktemp("cli")
    sandbox = checks.make_sandbox(root)
    name, data = case
    mesh = sandbox["inputs"] / name
    mesh.write_bytes(data)
    before = checks.tree_state(root)
    out = sandbox["out"] / "voxels.npz"
    proc = _run(["ovoxel", "encode", str(mesh), str(out), "--resolution", "64"])
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode in (0, 2) and "Traceback" not in stderr, stderr[-3000:]
    changed = [p for p, h in checks.tree_state(root).items() if before.get(p) != h]
    assert changed == ([str(out)] if proc.returncode == 0 else []), changed


@pytest.mark.slow
@PROCESSES
@given(data=st.data())
def test_serve_answers_a_batch_of_hostile_lines(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("serve")
    sandbox = checks.make_sandbox(root)
    files = {k: str(sandbox[k]) for k in ("image", "mesh", "bad_image", "bad_mesh")}
    files["outside"] = str(root / strategies.SECRET_NAME)
    line = strategies.protocol_lines(files, str(sandbox["out"]))
    lines = data.draw(st.lists(line, min_size=5, max_size=25))
    load = protocol.encode(protocol.Load(id="fuzz-load", source=str(sandbox["server"]), offline=True))
    tail = [b'{"type": "status", "id": "fuzz-status"}\n', b'{"type": "shutdown", "id": "fuzz-bye"}\n']
    stdin = load + b"".join(line + b"\n" for line in lines) + b"".join(tail)
    proc = _run(["serve", "--generator", "tests.fuzz.reading_generator:ReadingGenerator", "--device", "cpu",
                 "--offline", "--cache-dir", str(root / "hf")], stdin=stdin)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    events = [protocol.decode_event(line) for line in proc.stdout.splitlines()]
    dones = collections.Counter(e.job for e in events if isinstance(e, protocol.Done))
    assert dones["fuzz-load"] == dones["fuzz-status"] == dones["fuzz-bye"] == 1, events[-5:]
    assert not [e for e in events if isinstance(e, protocol.Error) and e.code == "internal"]
    ids = collections.Counter()  # every line whose id can be read gets exactly one done
    for line in lines:
        try:
            ids[protocol.decode_request(line).id] += 1
        except protocol.ProtocolError as exc:
            ids[exc.job] += exc.job is not None
    for job, sent in ids.items():
        if sent == 1 and job not in ("fuzz-load", "fuzz-status", "fuzz-bye"):
            answers = [str(e) for e in events if getattr(e, "job", None) == job]
            assert dones[job] == 1, (job, json.dumps(answers))
