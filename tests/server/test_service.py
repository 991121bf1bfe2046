"""The real ``python -m backend serve`` child, driven through the client, with the fake generator."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.server.conftest import FAKE, make_client
from trellis2_blender import protocol as p  # the client decodes events with its own copy
from trellis2_blender.core.client import BackendClient, BackendError


def _by_type(events: list[p.Message], cls: type) -> list:
    return [e for e in events if isinstance(e, cls)]


def _poll_until(client: BackendClient, job: str, event_type: type, timeout: float = 15) -> list[p.Message]:
    """Poll (as Blender's timer does) until ``job`` has sent an ``event_type`` event; returns all seen."""
    seen: list[p.Message] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen += client.poll()
        if any(isinstance(e, event_type) and e.job == job for e in seen):
            return seen
        time.sleep(0.01)
    raise AssertionError(f"no {event_type.__name__} from {job} in {timeout} s: {seen}")


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_handshake_reports_capabilities(backend: BackendClient) -> None:
    hello = backend.hello
    assert hello is not None and hello.version == p.PROTOCOL_VERSION and hello.pid == backend.pid
    caps = hello.capabilities
    assert caps["device"] == "cpu" and caps["gpu_memory_total"] == 0
    assert set(caps["models"]) == {"microsoft/TRELLIS.2-4B", "facebook/dinov3-vitl16-pretrain-lvd1689m",
                                   "briaai/RMBG-2.0"}
    assert not any(caps["models"].values())  # the test cache is empty
    assert "briaai/RMBG-2.0" in caps["gated"] and "token" in caps["gated_notice"]


def test_generate_and_retexture_deliver_files(backend: BackendClient, image: Path, tmp_path: Path) -> None:
    out = tmp_path / "jobs" / "g1"
    events = backend.wait(backend.generate([str(image)], str(out), seed=3, shape=p.Sampler(steps=5)), 15)
    progress = _by_type(events, p.ProgressEvent)
    assert progress, events
    assert progress[0].stage == "shape" and progress[-1].fraction == 1.0
    assert [e.fraction for e in progress] == sorted(e.fraction for e in progress)
    (result,) = _by_type(events, p.Result)
    assert isinstance(events[-1], p.Done) and events[-1].status == "ok"
    asset = result.assets[0]
    assert Path(asset.glb).read_bytes().startswith(b"glTF") and Path(asset.glb).parent == out
    assert json.loads(Path(asset.direct).read_text())["name"] == "input"

    mesh = Path(asset.glb)
    out2 = tmp_path / "jobs" / "t1"
    events = backend.wait(backend.retexture(str(mesh), str(image), str(out2), resolution=512), 15)
    (result,) = _by_type(events, p.Result)
    assert events[-1].status == "ok" and result.output_dir == str(out2)
    assert Path(result.assets[0].glb).is_file() and result.assets[0].name == "input_retextured"


def test_jobs_run_in_order_and_failures_do_not_kill_the_server(backend: BackendClient, image: Path,
                                                                tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    ids = [backend.generate([str(image)], out, name=name) for name in ("a", "boom", "oom", "noisy", "b")]
    events = backend.wait(ids[-1], 30) and backend.poll()
    events = [e for e in events if getattr(e, "job", None) in ids]
    dones = _by_type(events, p.Done)
    assert [d.job for d in dones] == ids[:-1]  # the last one's events were returned by wait()
    errors = {e.job: e for e in _by_type(events, p.Error)}
    assert errors[ids[1]].code == "internal" and "boom" in errors[ids[1]].message
    assert errors[ids[2]].code == "out_of_memory" and "low-VRAM" in errors[ids[2]].hint
    assert [d.status for d in dones] == ["ok", "error", "error", "ok"]
    # The noisy job printed to stdout and wrote to fd 1: the channel stayed clean, the log got it.
    log_text = Path(backend.config.log_path).read_text()
    assert "stray print from a library" in log_text and "stray bytes on fd 1" in log_text
    assert backend.alive


def test_kernels_are_warmed_up_after_loading_and_a_failed_warm_up_only_warns(tmp_path: Path,
                                                                               image: Path) -> None:
    client = make_client(tmp_path)
    client.start()
    try:
        model = tmp_path / "model"
        model.mkdir()
        events = client.wait(client.load(str(model)), 30)
        logs = [e.message for e in _by_type(events, p.Log)]
        assert events[-1].status == "ok" and any(m.startswith("GPU kernels ready in ") for m in logs)
        (model / "warm_up_fails").write_text("no triton for this GPU")
        events = client.wait(client.load(str(model)), 30)
        warnings = [e.message for e in _by_type(events, p.Log) if e.level == "warning"]
        assert events[-1].status == "ok"  # the models are loaded; the warm-up is only a head start
        assert any("warm-up failed (RuntimeError: no triton for this GPU)" in m for m in warnings)
        events = client.wait(client.generate([str(image)], str(tmp_path / "o")), 30)
        assert events[-1].status == "ok"
    finally:
        assert client.stop() == 0


def test_request_errors(tmp_path: Path, image: Path) -> None:
    # No bundled release: an unavailable official model is an error here, not a fallback.
    client = make_client(tmp_path, FAKE, "--bundled-release", str(tmp_path / "no_mini"))
    client.start()
    try:
        events = client.wait(client.generate([str(image)], str(tmp_path / "o")), 10)
        assert _by_type(events, p.Error)[0].code == "not_loaded" and events[-1].status == "error"
        events = client.wait(client.generate([str(tmp_path / "missing.png")], str(tmp_path / "o")), 10)
        assert _by_type(events, p.Error)[0].code == "invalid_request"
        events = client.wait(client.generate([str(image)], "relative/dir"), 10)
        assert "absolute" in _by_type(events, p.Error)[0].message
        events = client.wait(client.load(str(tmp_path / "no-such-folder")), 10)
        assert _by_type(events, p.Error)[0].code == "model_unavailable"
        events = client.wait(client.load("microsoft/TRELLIS.2-4B"), 10)  # offline, nothing to fall back on
        error = _by_type(events, p.Error)[0]
        assert error.code == "model_unavailable" and "offline" in error.message
        bad = tmp_path / "bad-model"
        bad.mkdir()
        (bad / "fail_to_load").write_text("corrupt checkpoint")
        events = client.wait(client.load(str(bad)), 10)
        assert "corrupt checkpoint" in _by_type(events, p.Error)[0].message
        events = client.wait(client.cancel("nope"), 10)
        assert _by_type(events, p.Error)[0].code == "unknown_job"
        events = client.wait(client._send(p.Hello(id="old", version=999)), 10)
        assert _by_type(events, p.Error)[0].code == "version_mismatch"
        events = client.wait(client.status(), 10)
        status = _by_type(events, p.StatusReply)[0]
        assert status.state == "idle" and status.loaded is None and status.rss_bytes > 0
        assert client.alive and not client.pending
    finally:
        assert client.stop() == 0


def test_cancel_mid_job_then_the_next_job_runs(backend: BackendClient, image: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    slow = backend.generate([str(image)], out, name="slow", shape=p.Sampler(steps=400))  # 20 s uncancelled
    queued = backend.generate([str(image)], out, name="slow", shape=p.Sampler(steps=400))
    _poll_until(backend, slow, p.ProgressEvent)
    # A queued job is dropped at once, while the first one keeps running.
    events = backend.wait(backend.cancel(queued), 5)
    assert events[-1].status == "ok"
    assert backend.wait(queued, 5)[-1] == p.Done(job=queued, status="cancelled")
    started = time.monotonic()
    backend.cancel(slow)
    events = backend.wait(slow, 5)
    elapsed = time.monotonic() - started
    assert events[-1].job == slow and events[-1].status == "cancelled"
    assert not _by_type(events, p.Result) and not _by_type(events, p.Error)
    assert elapsed < 2.0, f"cancel took {elapsed:.2f} s (one step is 50 ms)"
    events = backend.wait(backend.generate([str(image)], out, name="after"), 10)
    assert events[-1].status == "ok" and _by_type(events, p.Result)[0].assets[0].name == "after"
    status = _by_type(backend.wait(backend.status(), 5), p.StatusReply)[0]
    assert status.state == "idle" and status.queued == [] and status.jobs_done >= 3


@pytest.mark.slow
def test_sigkill_mid_job_is_reported_and_restart_works(backend: BackendClient, image: Path,
                                                       tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    job = backend.generate([str(image)], out, name="slow", shape=p.Sampler(steps=400))
    later = backend.generate([str(image)], out)
    _poll_until(backend, job, p.ProgressEvent)
    old_pid = backend.pid
    os.kill(old_pid, signal.SIGKILL)
    events = _poll_until(backend, later, p.Done)
    for j in (job, later):
        (error,) = [e for e in _by_type(events, p.Error) if e.job == j]
        assert error.code == "backend_died" and "-9" in error.message and "log" in error.hint
        assert [d.status for d in _by_type(events, p.Done) if d.job == j] == ["error"]
    assert not backend.alive and backend.returncode == -signal.SIGKILL and not backend.pending
    with pytest.raises(BackendError):
        backend.status()

    hello = backend.restart()
    assert backend.alive and hello.pid == backend.pid != old_pid
    (tmp_path / "model").mkdir(exist_ok=True)
    assert backend.wait(backend.load(str(tmp_path / "model")), 10)[-1].status == "ok"
    assert backend.wait(backend.generate([str(image)], out), 10)[-1].status == "ok"


def test_a_crashing_job_reports_the_exit_code(backend: BackendClient, image: Path, tmp_path: Path) -> None:
    job = backend.generate([str(image)], str(tmp_path / "out"), name="exit")
    events = _poll_until(backend, job, p.Done)
    assert "exit code 3" in _by_type(events, p.Error)[0].message and backend.returncode == 3
    backend.restart()
    assert backend.alive


def test_malformed_messages_each_get_an_error(backend: BackendClient, image: Path, tmp_path: Path,
                                              rng) -> None:
    lines: list[bytes] = []
    good = p.encode(p.Generate(id="x", images=[str(image)], output_dir=str(tmp_path / "o")))[:-1]
    for _ in range(60):  # truncated
        lines.append(good[: int(rng.integers(1, len(good) - 1))])
    for _ in range(60):  # random bytes
        junk = rng.integers(0, 256, size=int(rng.integers(1, 300)), dtype="uint8").tobytes()
        lines.append(junk.replace(b"\n", b" "))
    for i in range(40):  # unknown types, with a readable id
        lines.append(json.dumps({"type": f"frobnicate{i}", "id": f"u{i}"}).encode())
    for i in range(60):  # wrong or missing fields
        bad = [{"type": "generate", "id": f"w{i}", "images": "a.png", "output_dir": "/o"},
               {"type": "hello", "id": f"w{i}", "version": "1"},
               {"type": "cancel", "id": f"w{i}"},
               {"type": "status", "id": f"w{i}", "extra": True},
               {"type": "load", "id": f"w{i}", "source": ["a"]},
               {"type": "retexture", "id": f"w{i}", "mesh": 1, "image": "i", "output_dir": "/o"}][i % 6]
        lines.append(json.dumps(bad).encode())
    lines += [b"", b"null", b"42", b'"hello"', b"[]", b"{}", b'{"type":"hello","id":"n","version":NaN}',
              b"[" * 50_000, "{\"type\":\"status\",\"id\":\"\u00e9\u0000\"".encode()]
    lines += [b'{"type":"status","id":"' + b"y" * (2 * p.MAX_LINE_BYTES) + b'"}'] * 3  # oversized
    for line in lines:
        backend._write(line + b"\n")
    marker = backend.status()  # answered after every line above (one reader, in order)
    events = backend.wait(marker, 60) and backend.poll()
    errors = _by_type(events, p.Error)
    assert len(errors) == len(lines), (len(errors), len(lines))
    assert {e.code for e in errors} == {"bad_message"}
    others = [e for e in events if not isinstance(e, p.Error | p.Done)]
    assert others == [], others
    assert backend.alive
    assert backend.wait(backend.generate([str(image)], str(tmp_path / "o")), 10)[-1].status == "ok"


@pytest.mark.slow
def test_fifty_jobs_keep_resident_memory_bounded(backend: BackendClient, image: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    rss = []
    for i in range(50):
        events = backend.wait(backend.generate([str(image)], out, name=f"job{i % 5}"), 15)
        assert events[-1].status == "ok"
        rss.append(_rss_kb(backend.pid))
    growth_kb = rss[-1] - rss[9]
    print(f"server VmRSS after job 10: {rss[9]} kB, after job 50: {rss[-1]} kB, max {max(rss)} kB")
    # Each fake job allocates and frees 8 MiB; anything kept per job would add up to 320 MiB here.
    assert growth_kb < 2 * 1024, rss
    assert max(rss) < 100 * 1024, rss


def test_shutdown_cancels_the_running_job_and_input_eof_stops_the_server(tmp_path: Path, image: Path) -> None:
    client = make_client(tmp_path)
    client.start()
    (tmp_path / "m").mkdir()
    client.wait(client.load(str(tmp_path / "m")), 10)
    job = client.generate([str(image)], str(tmp_path / "o"), name="slow", shape=p.Sampler(steps=400))
    _poll_until(client, job, p.ProgressEvent)
    assert client.stop(timeout=10) == 0
    events = client.poll()
    assert [d.status for d in _by_type(events, p.Done) if d.job == job] == ["cancelled"]
    assert any(isinstance(e, p.Done) and e.job.startswith("shutdown") and e.status == "ok" for e in events)

    client.start()
    client._proc.stdin.close()  # Blender went away without a word
    assert client._proc.wait(10) == 0
