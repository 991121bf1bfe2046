"""The server acts on the model-manager fields of ``load`` and ``check_access``: the token reaches
the resolver (and no event or log line), local folders become overrides, Commercial-Safe reaches
the generator and refuses RMBG; ``check_access`` answers with one ``access`` report."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest

from backend import protocol
from backend.pipeline import weights
from backend.server import channel
from backend.server.service import ServerConfig, Service
from tests.server.test_bundled_model import _Output

TOKEN = "hf_never_print_me"


def _serve(tmp_path: Path, *messages: protocol.Message) -> tuple[list[protocol.Message], list]:
    """Send ``messages`` to a real Service (in this process) and wait for each one's ``done``."""
    specs = []

    def factory(spec):
        specs.append(spec)
        return object()

    out = _Output()
    config = ServerConfig(generator="test", device="cpu", cache_dir=tmp_path / "hf", offline=False)
    service = Service(config, channel.Writer(out), factory)  # type: ignore[arg-type]
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as stdin, os.fdopen(write_fd, "wb", buffering=0) as requests:
        server = threading.Thread(target=service.serve, args=(stdin,), daemon=True)
        server.start()
        for message in messages:
            requests.write(protocol.encode(message))
            deadline = time.monotonic() + 30
            while not any(isinstance(e, protocol.Done) and e.job == message.id for e in out.events()):
                assert time.monotonic() < deadline, out.events()
                time.sleep(0.01)
        requests.write(protocol.encode(protocol.Shutdown(id="bye")))
        server.join(30)
    return out.events(), specs


@pytest.fixture
def recorded(monkeypatch, tmp_path):
    """``weights.resolve`` replaced by a recorder that resolves to an empty local folder."""
    calls = []
    model = tmp_path / "model"
    model.mkdir()

    def resolve(source, config, **kwargs):
        calls.append((source, config, kwargs.get("overrides")))
        return weights.ModelPaths(model_dir=model, dependencies={})

    monkeypatch.setattr(weights, "resolve", resolve)
    return calls


def test_load_fields_reach_the_resolver_and_the_generator(tmp_path, recorded, caplog):
    dino, ssdec = tmp_path / "dino", tmp_path / "ssdec"
    load = protocol.Load(id="load-1", source="microsoft/TRELLIS.2-4B", token=TOKEN, image_encoder=str(dino),
                         sparse_structure_decoder=str(ssdec), commercial_safe=True)
    with caplog.at_level(logging.DEBUG):
        events, specs = _serve(tmp_path, load)
    assert [e.status for e in events if isinstance(e, protocol.Done) and e.job == "load-1"] == ["ok"]
    ((source, config, overrides),) = recorded
    assert source == "microsoft/TRELLIS.2-4B" and config.token == TOKEN
    assert overrides == {weights.DINOV3_REPO: str(dino), weights.SS_DECODER_REPO: str(ssdec)}
    (spec,) = specs
    assert spec.commercial_safe is True
    assert TOKEN not in "".join(map(repr, events)) and TOKEN not in caplog.text


def test_commercial_safe_refuses_rmbg(tmp_path, recorded):
    load = protocol.Load(id="load-1", source="microsoft/TRELLIS.2-4B", background_removal="rmbg",
                         commercial_safe=True)
    events, specs = _serve(tmp_path, load)
    (error,) = [e for e in events if isinstance(e, protocol.Error)]
    assert error.code == "invalid_request" and "non-commercial" in error.message
    assert "Commercial-Safe" in error.hint and "--rembg solid" in error.hint
    assert specs == [] and recorded == []


def test_check_access_answers_with_one_report(tmp_path, monkeypatch):
    asked = []

    def check_access(source, config, overrides):
        asked.append((source, config.token, overrides))
        return [weights.RepoAccess(weights.DINOV3_REPO, "image features (DINOv3)", "Meta's DINOv3 License",
                                   "gated", f"https://huggingface.co/{weights.DINOV3_REPO}"),
                weights.RepoAccess(weights.SS_DECODER_REPO, "decoder", "MIT", "ok",
                                   f"https://huggingface.co/{weights.SS_DECODER_REPO}", bytes=1234)]

    monkeypatch.setattr(weights, "check_access", check_access)
    request = protocol.CheckAccess(id="acc-1", source="microsoft/TRELLIS.2-4B", token=TOKEN,
                                   background_removal="rmbg")
    events, _ = _serve(tmp_path, request)
    assert asked == [("microsoft/TRELLIS.2-4B", TOKEN, {weights.RMBG_REPO: weights.RMBG_REPO})]
    (report,) = [e for e in events if isinstance(e, protocol.AccessReport)]
    assert [(r.repo, r.status, r.bytes) for r in report.repos] == [
        (weights.DINOV3_REPO, "gated", 0), (weights.SS_DECODER_REPO, "ok", 1234)]
    assert [e.status for e in events if isinstance(e, protocol.Done) and e.job == "acc-1"] == ["ok"]


def test_the_addon_sums_download_progress_over_repositories():
    """The backend reports each repository's running total (file ""); two repos must not overwrite
    each other in the add-on's progress."""
    from trellis2_blender import protocol as addon_protocol  # the add-on decodes into its own copy
    from trellis2_blender.core.session import BackendSession, BackendSettings

    session = BackendSession(BackendSettings(python="p", backend_root="r", log_path="l", model_source="m"))
    download = addon_protocol.Download
    session._route_load(download(job="load-1", repo="a/b", file="", bytes=50, total=100))
    session._route_load(download(job="load-1", repo="c/d", file="", bytes=0, total=300))
    assert session.percent == pytest.approx(12.5)
    session._route_load(download(job="load-1", repo="a/b", file="", bytes=100, total=100))
    assert session.percent == pytest.approx(25.0) and session.message.startswith("Downloading a/b")
