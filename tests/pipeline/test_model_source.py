"""Model sources: the bundled mini model (explicit and as the fallback), provenance in result.json,
and a relative image-encoder path resolved against the release folder.

The bundled release is a copy of the tiny checkpoint laid out like the mini release (a relative
``image_encoder`` folder, ``default_pipeline_type`` 512); it is passed to the code explicitly.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import pytest

from backend.pipeline import cli_generate, weights
from backend.pipeline.errors import ModelUnavailableError
from backend.pipeline.model_source import BUNDLED_MINI, BUNDLED_MINI_MODEL, LOCAL, OFFICIAL
from backend.pipeline.runtime import DEFAULT_MODEL, ModelStore, Runtime, image_encoder_location, resolve_model
from tests.fixtures import images

FALLBACK_WORDS = ("official TRELLIS.2 weights unavailable", "bundled mini model", "procedural objects")
SMALL_JOB = ["--steps", "2", "--texture-size", "64", "--faces", "2000", "--rasterizer", "ours",
             "--no-glb", "--device", "cpu"]


@pytest.fixture(scope="session")
def mini_release(tiny_checkpoint: Path, tmp_path_factory) -> Path:
    """The tiny checkpoint in the mini release's layout: ``image_encoder/`` named relatively."""
    root = tmp_path_factory.mktemp("bundled") / "mini_release"
    shutil.copytree(tiny_checkpoint, root, ignore=shutil.ignore_patterns("dinov3_tiny", ".complete"))
    shutil.copytree(tiny_checkpoint / "dinov3_tiny", root / "image_encoder")
    for name in ("pipeline.json", "texturing_pipeline.json"):
        doc = json.loads((root / name).read_text())
        doc["args"]["image_cond_model"]["args"]["model_name"] = "image_encoder"
        if name == "pipeline.json":
            doc["args"]["default_pipeline_type"] = "512"
        (root / name).write_text(json.dumps(doc))
    return root.resolve()


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli_generate.add_arguments(parser)
    return parser.parse_args(argv)


def _fallback_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "weights unavailable" in r.getMessage()]


def test_relative_image_encoder_resolves_against_the_release(mini_release: Path, tmp_path,
                                                             monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # a relative name must not depend on the working folder
    assert image_encoder_location("image_encoder", mini_release, {}) == str(mini_release / "image_encoder")
    assert image_encoder_location("image_encoder", mini_release, {"image_encoder": "/x"}) == "/x"
    assert image_encoder_location("owner/repo", mini_release, {}) == "owner/repo"
    assert image_encoder_location("/abs/enc", mini_release, {}) == "/abs/enc"
    store = ModelStore(Runtime(model=str(mini_release), device="cpu", offline=True))
    assert store.conditioner().model.config.hidden_size == 32


def test_offline_official_falls_back_to_the_bundled_mini_model(mini_release: Path, tmp_path, caplog,
                                                               capsys, monkeypatch) -> None:
    monkeypatch.setattr(weights, "cached_snapshot", lambda *a, **k: None)  # an empty Hugging Face cache
    image = images.rgba_transparent(tmp_path / "a.png", size=64)
    args = _parse([str(image), "-o", str(tmp_path / "out"), "--offline", *SMALL_JOB])
    assert args.model == DEFAULT_MODEL
    with caplog.at_level(logging.INFO):
        rc = cli_generate.run(args, bundled_release=mini_release)
    err = capsys.readouterr().err
    assert rc == 0, err
    (line,) = _fallback_lines(caplog)
    assert all(w in line for w in FALLBACK_WORDS) and "offline" in line
    doc = json.loads((tmp_path / "out" / "a" / "result.json").read_text())
    assert doc["model"] == {"source": BUNDLED_MINI, "path": str(mini_release)}
    assert f"model: {BUNDLED_MINI} ({mini_release})" in err and "not the official weights" in err


@pytest.mark.parametrize("failure", ["unreachable", "gated"])
def test_unreachable_or_refused_hub_falls_back_at_once(mini_release: Path, failure: str, caplog,
                                                       monkeypatch) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError

    def model_info(self, repo, **kwargs):
        if failure == "gated":
            refused = GatedRepoError.__new__(GatedRepoError)  # its constructor wants a live HTTP response
            Exception.__init__(refused, "403 access to this repo is restricted")
            raise refused
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(weights, "cached_snapshot", lambda *a, **k: None)
    monkeypatch.setattr(HfApi, "model_info", model_info)
    with caplog.at_level(logging.WARNING):
        resolved = resolve_model(Runtime(model=DEFAULT_MODEL, device="cpu", bundled_release=mini_release))
    assert resolved.root == mini_release
    assert resolved.provenance.source == BUNDLED_MINI
    (line,) = _fallback_lines(caplog)
    assert ("no access yet" if failure == "gated" else "unreachable") in line


def test_without_a_bundled_release_the_error_stays(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(weights, "cached_snapshot", lambda *a, **k: None)
    for bundled in (None, tmp_path / "missing"):
        with pytest.raises(ModelUnavailableError, match="drop --offline"):
            resolve_model(Runtime(model=DEFAULT_MODEL, device="cpu", offline=True, bundled_release=bundled))
    # Only the official repo falls back: another repo id or a folder the user named fails as asked.
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        resolve_model(Runtime(model=str(tmp_path / "nope"), device="cpu", offline=True,
                              bundled_release=tmp_path))


def test_explicit_mini_selects_the_bundled_release(mini_release: Path, tmp_path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        resolved = resolve_model(Runtime(model=BUNDLED_MINI_MODEL, device="cpu",
                                         bundled_release=mini_release))
    assert resolved.root == mini_release
    assert resolved.provenance.as_json() == {"source": BUNDLED_MINI, "path": str(mini_release)}
    assert _fallback_lines(caplog) == []
    by_folder = resolve_model(Runtime(model=str(mini_release), device="cpu", bundled_release=mini_release))
    assert by_folder.provenance.source == BUNDLED_MINI
    with pytest.raises(ModelUnavailableError, match="bundled mini model is not part") as info:
        resolve_model(Runtime(model=BUNDLED_MINI_MODEL, device="cpu", bundled_release=tmp_path / "missing"))
    assert "--model" in str(info.value)


def test_help_documents_the_mini_model() -> None:
    parser = argparse.ArgumentParser()
    cli_generate.add_arguments(parser)
    text = " ".join(parser.format_help().split())
    assert f"'{BUNDLED_MINI_MODEL}' for the bundled mini model" in text and "512 for the bundled mini" in text


def test_provenance_of_local_and_official_sources(tiny_checkpoint: Path, monkeypatch) -> None:
    local = resolve_model(Runtime(model=str(tiny_checkpoint), device="cpu", offline=True)).provenance
    assert local.as_json() == {"source": LOCAL, "path": str(tiny_checkpoint.resolve())}
    # A complete cached snapshot of the official repo: no hub access needed, recorded as official.
    monkeypatch.setattr(weights, "cached_snapshot",
                        lambda repo, *a, **k: tiny_checkpoint if repo == DEFAULT_MODEL else None)
    resolved = resolve_model(Runtime(model=DEFAULT_MODEL, device="cpu", offline=True))
    assert resolved.root == tiny_checkpoint
    assert resolved.provenance.as_json() == {"source": OFFICIAL, "path": DEFAULT_MODEL}
