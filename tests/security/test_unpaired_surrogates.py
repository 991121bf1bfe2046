"""Lone surrogates (``"\\ud800"``) in a request must not end ``serve``: every line is answered."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from backend import protocol
from tests.server.conftest import FAKE, REPO_ROOT


class _Serve:
    """A raw ``python -m backend serve`` child: lines in, decoded JSON objects out."""

    def __init__(self, tmp_path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "backend", "serve", "--generator", FAKE, "--device", "cpu", "--offline",
             "--cache-dir", str(tmp_path / "hf")], cwd=REPO_ROOT, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=open(tmp_path / "serve.log", "wb"))
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def send(self, raw: str) -> None:
        self.proc.stdin.write(raw.encode() + b"\n")
        self.proc.stdin.flush()

    def until_done(self, job: str, timeout: float = 30) -> list[dict]:
        seen = []
        while True:
            event = self.lines.get(timeout=timeout)
            assert event is not None, f"serve ended; events so far: {seen}"
            seen.append(event)
            if event["type"] == "done" and event["job"] == job:
                return seen

    def next_event(self, timeout: float = 30) -> dict:
        event = self.lines.get(timeout=timeout)
        assert event is not None, "serve ended"
        return event

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(20)


@pytest.fixture
def serve(tmp_path: Path):
    child = _Serve(tmp_path)
    yield child
    if child.proc.poll() is None:
        child.proc.kill()
        child.proc.wait(10)


def test_status_with_a_lone_surrogate_id_is_answered(serve: _Serve) -> None:
    serve.send('{"type":"status","id":"\\ud800"}')
    error = serve.next_event()
    assert error["type"] == "error" and error["code"] == "bad_message", error
    serve.send('{"type":"status","id":"after"}')
    assert serve.until_done("after")[-1]["status"] == "ok"


def test_a_lone_surrogate_in_other_strings_is_refused(serve: _Serve, tmp_path: Path) -> None:
    serve.send('{"type":"load","id":"l1","source":"\\udcff"}')
    events = serve.until_done("l1")
    assert events[-1]["status"] == "error" and "source" in events[0]["message"], events
    serve.send('{"type":"status","id":"after"}')
    assert serve.until_done("after")[-1]["status"] == "ok"


def test_generate_with_a_lone_surrogate_id_leaves_the_worker_running(serve: _Serve, tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    image = tmp_path / "input.png"
    image.write_bytes(b"png")
    serve.send(json.dumps({"type": "load", "id": "load", "source": str(model)}))
    assert serve.until_done("load")[-1]["status"] == "ok"
    bad = {"type": "generate", "id": "\ud800", "images": [str(image)], "output_dir": str(tmp_path / "o1")}
    serve.send(json.dumps(bad))
    serve.send(json.dumps({"type": "generate", "id": "good", "images": [str(image)],
                           "output_dir": str(tmp_path / "o2")}))
    events = serve.until_done("good")
    assert any(e["type"] == "error" and e["code"] == "bad_message" for e in events), events
    assert events[-1]["status"] == "ok", events
    serve.send('{"type":"shutdown","id":"bye"}')
    assert serve.until_done("bye")[-1]["status"] == "ok"


def test_encode_never_fails_on_lone_surrogates() -> None:
    line = protocol.encode(protocol.Log(job="j", level="error", message="bad path /tmp/\udcff.png"))
    assert json.loads(line)["message"].startswith("bad path /tmp/")
