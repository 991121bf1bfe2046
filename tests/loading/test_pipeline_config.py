"""pipeline.json / texturing_pipeline.json parsing rejects unknown shapes clearly."""

from __future__ import annotations

import copy
import json

import pytest

from backend.models.pipeline_config import PipelineConfigError, parse_pipeline_config, read_pipeline_config
from backend.models.tiny_checkpoint import pipeline_json, texturing_pipeline_json


def test_round_trip_types():
    cfg = parse_pipeline_config(pipeline_json("/x/dinov3"))
    assert cfg.image_cond_model.name == "DinoV3FeatureExtractor"
    assert cfg.image_cond_model.args["model_name"] == "/x/dinov3"
    assert cfg.rembg_model.args["model_name"] == "briaai/RMBG-2.0"
    assert isinstance(cfg.tex_slat_sampler.guidance_interval, tuple)
    with pytest.raises(TypeError):
        cfg.models["x"] = "y"  # read-only mapping
    tex = parse_pipeline_config(texturing_pipeline_json("/x"))
    assert tex.sparse_structure_sampler is None and tex.default_pipeline_type is None


@pytest.mark.parametrize(
    "edit, where",
    [
        (lambda a: a.__setitem__("surprise", 1), "unknown keys ['surprise']"),
        (lambda a: a.pop("shape_slat_sampler"), "missing keys ['shape_slat_sampler']"),
        (lambda a: a["models"].pop("tex_slat_decoder"), "args.models"),
        (lambda a: a["tex_slat_sampler"]["params"].__setitem__("steps", 0), "params.steps"),
        (lambda a: a["tex_slat_sampler"]["params"].__setitem__("eta", 1.0), "unknown keys ['eta']"),
        (lambda a: a["shape_slat_normalization"]["std"].pop(), "shape_slat_normalization"),
        (lambda a: a.__setitem__("low_vram", "yes"), "low_vram"),
        (lambda a: a["rembg_model"].__setitem__("args", []), "rembg_model.args"),
    ],
)
def test_rejects_bad_shapes(edit, where):
    data = copy.deepcopy(pipeline_json("/x"))
    edit(data["args"])
    with pytest.raises(PipelineConfigError) as err:
        parse_pipeline_config(data, "pipeline.json")
    assert where in str(err.value) and "pipeline.json" in str(err.value)


def test_unknown_pipeline_name_and_unreadable_file(tmp_path):
    with pytest.raises(PipelineConfigError, match="unknown pipeline"):
        parse_pipeline_config({"name": "Other", "args": {}})
    bad = tmp_path / "pipeline.json"
    bad.write_text("[1, 2")
    with pytest.raises(PipelineConfigError, match=str(bad)):
        read_pipeline_config(tmp_path)
    bad.write_text(json.dumps(pipeline_json("/x")))
    assert read_pipeline_config(tmp_path).path == bad
