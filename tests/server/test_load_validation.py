"""A release that cannot work fails at ``load``, naming the file, not at the first job."""

from __future__ import annotations

import json
import shutil

import pytest

from backend.pipeline.errors import ModelUnavailableError
from backend.pipeline.weights import ModelPaths
from backend.server.generators import LoadSpec, trellis2
from tests.fixtures.tiny_checkpoint import tiny_checkpoint  # noqa: F401  (session fixture)


@pytest.fixture
def release(tmp_path, tiny_checkpoint):  # noqa: F811
    root = tmp_path / "release"
    shutil.copytree(tiny_checkpoint, root)
    return root


def _load(root):
    return trellis2(LoadSpec(paths=ModelPaths(root), device="cpu"))


def _any_checkpoint(root, suffix):
    return sorted((root / "ckpts").glob(f"*{suffix}"))[0]


def test_the_intact_release_loads(release):
    assert _load(release) is not None


def test_an_empty_folder_fails_at_load(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelUnavailableError, match="pipeline.json"):
        _load(tmp_path / "empty")


def test_a_truncated_safetensors_fails_at_load(release):
    weights = _any_checkpoint(release, ".safetensors")
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ModelUnavailableError, match="truncated") as info:
        _load(release)
    assert weights.name in str(info.value)


def test_a_config_that_does_not_match_its_weights_fails_at_load(release):
    config = _any_checkpoint(release, ".json")
    doc = json.loads(config.read_text())
    key = next(k for k, v in doc["args"].items() if isinstance(v, int) and not isinstance(v, bool) and v > 2)
    doc["args"][key] *= 2
    config.write_text(json.dumps(doc))
    with pytest.raises(ModelUnavailableError, match="does not match|bad arguments") as info:
        _load(release)
    assert config.stem in str(info.value)


def test_an_invalid_config_json_fails_at_load(release):
    config = _any_checkpoint(release, ".json")
    config.write_text("{not json")
    with pytest.raises(ModelUnavailableError, match="cannot read checkpoint config") as info:
        _load(release)
    assert config.name in str(info.value)
