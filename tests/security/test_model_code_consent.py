"""Running the Python code a background-removal model ships needs its own explicit consent."""

from __future__ import annotations

import pytest

from backend import protocol
from backend.pipeline.errors import ModelUnavailableError
from backend.pipeline.weights import RMBG_REPO, ModelPaths
from backend.server.generators import LoadSpec, background_remover
from tests.fuzz.harness import ServiceHarness


def _model_with_code(folder):
    """A model folder whose code would leave a marker file if it ever ran."""
    folder.mkdir()
    (folder / "config.json").write_text('{"auto_map": {"AutoModelForImageSegmentation": "net.Net"}}')
    marker = folder.parent / "code_ran"
    (folder / "net.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    return marker


def test_choosing_rmbg_alone_runs_no_model_code(tmp_path):
    marker = _model_with_code(tmp_path / "rmbg")
    spec = LoadSpec(paths=ModelPaths(tmp_path, {RMBG_REPO: tmp_path / "rmbg"}), background_removal="rmbg")
    with pytest.raises(ModelUnavailableError, match="runs Python code"):
        background_remover(spec, "cpu")
    assert not marker.exists()


def test_serve_refuses_rmbg_without_consent_before_resolving_it(tmp_path):
    marker = _model_with_code(tmp_path / "rmbg")
    harness = ServiceHarness(tmp_path / "server")
    try:
        events = harness.send(protocol.encode(protocol.Load(
            id="l1", source=str(tmp_path / "server" / "model"), background_removal="rmbg",
            background_remover=str(tmp_path / "rmbg"), offline=True)))
    finally:
        harness.close()
    (error,) = [e for e in events if isinstance(e, protocol.Error)]
    assert error.code == "invalid_request" and "allow_model_code" in error.message
    assert not marker.exists()
