"""The weight resolver: local folders, offline mode, gated models checked before any download,
only the needed files downloaded with byte progress and cancel, and the access check.

No network: the ``huggingface_hub`` functions are replaced by fakes that behave as the hub's do."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub.errors import GatedRepoError

from backend.pipeline import weights
from backend.pipeline.api import Cancelled, CancelToken
from backend.pipeline.model_source import SS_DECODER_REPO, TRELLIS2_REPO, WEIGHT_REPOS
from backend.pipeline.weights import DINOV3_REPO, RMBG_REPO, WeightsConfig, WeightsError


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
    assert "--image-encoder DIR" in info.value.hint and "DINOv3 Folder" in info.value.hint
    assert "drop --offline" in info.value.hint and "Hugging Face Token" in info.value.hint
    with pytest.raises(WeightsError, match="offline"):
        weights.resolve("microsoft/TRELLIS.2-4B", offline)
    with pytest.raises(WeightsError, match="not found"):
        weights.resolve(str(model), offline, overrides={DINOV3_REPO: str(tmp_path / "missing")})


class _Sibling:
    def __init__(self, name: str, size: int) -> None:
        self.rfilename, self.size = name, size


class _Info:
    sha = "0" * 40
    siblings = [_Sibling("pipeline.json", 10), _Sibling("ckpts/a.json", 5),
                _Sibling("ckpts/a.safetensors", 1000), _Sibling("onnx/model.onnx", 900),
                _Sibling("README.md", 3)]


def _gated_hub(monkeypatch, checked: list) -> None:
    """A hub where the gated repos refuse this token and everything else is readable."""

    def model_info(self, repo, **kwargs):
        checked.append((repo, kwargs.get("token")))
        if WEIGHT_REPOS.get(repo) is not None and WEIGHT_REPOS[repo].gated:
            raise _gated(f"{repo} is gated")
        return _Info()

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    monkeypatch.setattr(huggingface_hub, "auth_check", lambda repo, token=None: None)


def test_gated_models_are_reported_before_any_download(tmp_path: Path, monkeypatch) -> None:
    checked: list[tuple[str, str | None]] = []
    _gated_hub(monkeypatch, checked)

    def no_download(*args, **kwargs):
        raise AssertionError("nothing may be downloaded before access is confirmed")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_download)
    model = _model(tmp_path / "m")
    config = WeightsConfig(cache_dir=tmp_path / "hf-cache", token="hf_test")
    with pytest.raises(WeightsError) as info:
        weights.resolve(str(model), config, overrides={RMBG_REPO: RMBG_REPO})
    assert info.value.code == "gated_model"
    assert checked == [(DINOV3_REPO, "hf_test"), (RMBG_REPO, "hf_test")]  # the token passed explicitly
    for repo in (DINOV3_REPO, RMBG_REPO):
        assert f"https://huggingface.co/{repo}" in info.value.hint
    assert "License" in info.value.hint and "Hugging Face Token" in info.value.hint
    assert "--rembg-model DIR" in info.value.hint


def test_the_token_is_never_printed() -> None:
    assert "hf_secret" not in repr(WeightsConfig(token="hf_secret"))


def _fake_snapshot(calls: list, chunk: int = 250):
    """``snapshot_download`` as the hub runs it: one byte bar (unit "B") fed chunk by chunk per file."""

    def snapshot_download(repo, *, allow_patterns=None, tqdm_class=None, local_files_only=False, **kwargs):
        if local_files_only:
            raise FileNotFoundError("not cached")
        calls.append((repo, list(allow_patterns or []), kwargs.get("revision")))
        sizes = {s.rfilename: s.size for s in _Info.siblings}
        bar = tqdm_class(total=sum(sizes[n] for n in allow_patterns), unit="B")
        for name in allow_patterns:
            left = sizes[name]
            while left > 0:
                bar.update(min(chunk, left))
                left -= chunk
        return str(Path("/snapshots") / repo)

    return snapshot_download


def test_download_fetches_only_the_needed_files_with_byte_progress(tmp_path: Path, monkeypatch) -> None:
    calls: list = []
    _gated_hub(monkeypatch, [])
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _fake_snapshot(calls))
    reports: list[tuple] = []
    paths = weights.resolve(TRELLIS2_REPO, WeightsConfig(cache_dir=tmp_path),
                            on_download=lambda *r: reports.append(r))
    assert paths.model_dir == Path("/snapshots") / TRELLIS2_REPO
    # The release's files only: no ONNX exports, no README.
    assert calls == [(TRELLIS2_REPO, ["pipeline.json", "ckpts/a.json", "ckpts/a.safetensors"], _Info.sha)]
    assert reports[0] == (TRELLIS2_REPO, "", 0, 1015) and reports[-1] == (TRELLIS2_REPO, "", 1015, 1015)
    done = [r[2] for r in reports]
    assert done == sorted(done) and len(set(done)) > 4  # byte by byte, not file by file


def test_allow_patterns_per_repository() -> None:
    assert weights.allow_patterns_for(SS_DECODER_REPO, ["ckpts/ss_dec_conv3d_16l8_fp16"]) == [
        "ckpts/ss_dec_conv3d_16l8_fp16.json", "ckpts/ss_dec_conv3d_16l8_fp16.safetensors"]
    rmbg = weights.allow_patterns_for(RMBG_REPO)
    assert "model.safetensors" in rmbg and not any("onnx" in p for p in rmbg)
    assert weights.allow_patterns_for("someone/else") is None  # unknown repo: every file


def test_cancel_stops_a_download_midway(tmp_path: Path, monkeypatch) -> None:
    calls: list = []
    _gated_hub(monkeypatch, [])
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _fake_snapshot(calls, chunk=100))
    token = CancelToken()
    seen: list[int] = []

    def on_download(repo, file, done, total):
        seen.append(done)
        if done >= 300:
            token.cancel()

    with pytest.raises(Cancelled):
        weights.resolve(TRELLIS2_REPO, WeightsConfig(cache_dir=tmp_path), on_download=on_download,
                        cancel=token)
    # The update after the one that asked to cancel never came: the rest never arrived.
    assert [d for d in seen if d >= 300] == [seen[-1]] and seen[-1] < 1015


def test_check_access_tells_per_repo_what_is_readable_and_how_big(tmp_path: Path, monkeypatch) -> None:
    checked: list = []
    _gated_hub(monkeypatch, checked)
    model = _model(tmp_path / "m", extra=f"{SS_DECODER_REPO}/ckpts/a")
    config = WeightsConfig(cache_dir=tmp_path / "hf-cache", token="hf_test")
    reports = {r.repo: r for r in weights.check_access(str(model), config)}
    assert set(reports) == {DINOV3_REPO, SS_DECODER_REPO}  # RMBG only when asked for
    assert reports[DINOV3_REPO].status == "gated"
    assert reports[DINOV3_REPO].licence_url == f"https://huggingface.co/{DINOV3_REPO}"
    assert reports[SS_DECODER_REPO].status == "ok" and reports[SS_DECODER_REPO].bytes == 1005
    dino = tmp_path / "dino"
    dino.mkdir()
    overrides = {DINOV3_REPO: str(dino), RMBG_REPO: RMBG_REPO}
    local = {r.repo: r for r in weights.check_access(str(model), config, overrides=overrides)}
    assert local[DINOV3_REPO].status == "local" and local[RMBG_REPO].status == "gated"
    offline = weights.check_access(TRELLIS2_REPO, WeightsConfig(cache_dir=tmp_path, offline=True))
    assert {r.status for r in offline} == {"offline"}


def test_gated_notice_names_the_gated_models_and_the_ways_out() -> None:
    text = weights.gated_notice()
    assert DINOV3_REPO in text and RMBG_REPO in text
    assert "settings/tokens" in text and "--image-encoder DIR" in text and "DINOv3 Folder" in text


def test_check_access_before_anything_is_downloaded_knows_the_official_dependencies(tmp_path, monkeypatch):
    _gated_hub(monkeypatch, [])
    reports = weights.check_access(TRELLIS2_REPO, WeightsConfig(cache_dir=tmp_path / "empty", token="t"))
    assert [(r.repo, r.status) for r in reports] == [
        (TRELLIS2_REPO, "ok"), (SS_DECODER_REPO, "ok"), (DINOV3_REPO, "gated")]
    assert reports[0].bytes == 1015  # pipeline files and ckpts/, not the ONNX export or the README
