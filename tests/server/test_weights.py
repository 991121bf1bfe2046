"""Weights resolution: local folders, offline mode, gated models checked before any download."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub.errors import GatedRepoError

from backend.pipeline.api import CancelToken
from backend.server import weights
from backend.server.weights import DINOV3_REPO, RMBG_REPO, WeightsConfig, WeightsError


def _model(root: Path, **args: str) -> Path:
    """A model folder whose pipeline.json names ``args`` (like the release's image_cond_model)."""
    root.mkdir(parents=True)
    (root / "ckpts").mkdir()
    (root / "ckpts" / "shape.json").write_text("{}")
    config = {"name": "Trellis2ImageTo3DPipeline",
              "args": {"models": {"shape": "ckpts/shape"},
                       "image_cond_model": {"name": "DinoV3FeatureExtractor",
                                            "args": {"model_name": DINOV3_REPO}},
                       "rembg_model": {"name": "BiRefNet", "args": {"model_name": RMBG_REPO}}, **args}}
    (root / "pipeline.json").write_text(json.dumps(config))
    return root


def _gated(message: str) -> GatedRepoError:
    """The hub's exception without an HTTP response behind it."""
    exc = GatedRepoError.__new__(GatedRepoError)
    Exception.__init__(exc, message)
    return exc


@pytest.fixture
def offline(tmp_path: Path) -> WeightsConfig:
    return WeightsConfig(cache_dir=tmp_path / "hf-cache", offline=True)


def test_repo_ids_and_dependencies(tmp_path: Path) -> None:
    assert weights.is_repo_id("microsoft/TRELLIS.2-4B")
    assert not any(weights.is_repo_id(s) for s in ("/abs/path", "a/b/c", "a", "./x"))
    model = _model(tmp_path / "m", extra="microsoft/TRELLIS-image-large/ckpts/ss_dec_conv3d_16l8_fp16")
    assert weights.dependencies_of(model) == [DINOV3_REPO, RMBG_REPO, "microsoft/TRELLIS-image-large"]
    assert weights.dependencies_of(tmp_path) == []  # no pipeline.json


def test_local_folders_resolve_without_network(tmp_path: Path, offline: WeightsConfig) -> None:
    dino = tmp_path / "dinov3-copy"
    dino.mkdir()
    model = _model(tmp_path / "m")
    paths = weights.resolve(str(model), offline, overrides={DINOV3_REPO: str(dino)})
    assert paths.model_dir == model.resolve()
    assert paths.dependencies == {DINOV3_REPO: dino}  # RMBG is optional and was not asked for


def test_offline_without_a_local_copy_says_what_to_do(tmp_path: Path, offline: WeightsConfig) -> None:
    model = _model(tmp_path / "m")
    with pytest.raises(WeightsError) as info:
        weights.resolve(str(model), offline)
    assert info.value.code == "model_unavailable" and DINOV3_REPO in str(info.value)
    assert "local folder" in info.value.hint and "token" in info.value.hint
    with pytest.raises(WeightsError, match="offline"):
        weights.resolve("microsoft/TRELLIS.2-4B", offline)
    with pytest.raises(WeightsError, match="not found"):
        weights.resolve(str(model), offline, overrides={DINOV3_REPO: str(tmp_path / "missing")})


def test_gated_models_are_reported_before_any_download(tmp_path: Path, monkeypatch) -> None:
    checked: list[tuple[str, str | None]] = []

    def fake_auth_check(repo: str, token: str | None = None) -> None:
        checked.append((repo, token))
        if repo in weights.GATED:
            raise _gated(f"{repo} is gated")

    def no_download(*args, **kwargs):
        raise AssertionError("nothing may be downloaded before access is confirmed")

    monkeypatch.setattr(huggingface_hub, "auth_check", fake_auth_check)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", no_download)
    model = _model(tmp_path / "m")
    config = WeightsConfig(cache_dir=tmp_path / "hf-cache", token="hf_test")
    with pytest.raises(WeightsError) as info:
        weights.resolve(str(model), config, overrides={RMBG_REPO: RMBG_REPO})
    assert info.value.code == "gated_model"
    assert checked == [(DINOV3_REPO, "hf_test"), (RMBG_REPO, "hf_test")]  # the token passed explicitly
    for repo in (DINOV3_REPO, RMBG_REPO):
        assert f"https://huggingface.co/{repo}" in info.value.hint
    assert "license" in info.value.hint and "token" in info.value.hint


def test_download_reports_each_file_and_honours_cancel(tmp_path: Path, monkeypatch) -> None:
    class Sibling:
        def __init__(self, name: str, size: int) -> None:
            self.rfilename, self.size = name, size

    class Info:
        sha = "0" * 40
        siblings = [Sibling("pipeline.json", 10), Sibling("ckpts/a.safetensors", 1000)]

    fetched: list[str] = []
    monkeypatch.setattr(huggingface_hub, "auth_check", lambda repo, token=None: None)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, *a, **k: Info())
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, name, **k: fetched.append(name))
    monkeypatch.setattr(weights, "cached_snapshot", lambda repo, config, revision=None:
                        tmp_path if revision == Info.sha else None)
    reports: list[tuple] = []
    paths = weights.resolve("someone/model", WeightsConfig(cache_dir=tmp_path),
                            on_download=lambda *r: reports.append(r))
    assert paths.model_dir == tmp_path and fetched == ["pipeline.json", "ckpts/a.safetensors"]
    assert reports == [("someone/model", "pipeline.json", 0, 10), ("someone/model", "pipeline.json", 10, 10),
                       ("someone/model", "ckpts/a.safetensors", 0, 1000),
                       ("someone/model", "ckpts/a.safetensors", 1000, 1000)]
    token = CancelToken()
    token.cancel()
    fetched.clear()
    with pytest.raises(Exception, match="cancelled"):
        weights.resolve("someone/model", WeightsConfig(cache_dir=tmp_path), cancel=token)
    assert fetched == []


def test_gated_notice_names_both_models_and_the_ways_out() -> None:
    text = weights.gated_notice()
    assert DINOV3_REPO in text and RMBG_REPO in text
    assert "settings/tokens" in text and "local folder" in text
