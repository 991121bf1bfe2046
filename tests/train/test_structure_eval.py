"""Stage-1 scores: IoU, precision/recall and the one-cell-tolerant IoU on hand-made grids."""

from __future__ import annotations

import numpy as np
import pytest

from backend.train.structure_eval import pooled_occupancy, score_structure


def _grid(*cells, size=8):
    g = np.zeros((size,) * 3, dtype=bool)
    for c in cells:
        g[c] = True
    return g


def test_pooled_occupancy_marks_a_cell_when_any_child_is_occupied():
    occ = pooled_occupancy(np.array([[0, 0, 0], [63, 1, 2], [62, 0, 3]]), 32)
    assert occ.shape == (32, 32, 32)
    assert np.argwhere(occ).tolist() == [[0, 0, 0], [31, 0, 1]]
    with pytest.raises(ValueError, match="does not divide"):
        pooled_occupancy(np.zeros((0, 3)), 48)


def test_scores_of_exact_partial_and_shifted_predictions():
    truth = _grid((1, 1, 1), (1, 1, 2), (1, 1, 3), (1, 1, 4))
    exact = score_structure("a", truth.copy(), truth)
    assert (exact.iou, exact.precision, exact.recall, exact.dilated_iou) == (1.0, 1.0, 1.0, 1.0)

    half = score_structure("a", _grid((1, 1, 1), (1, 1, 2)), truth)
    assert half.iou == pytest.approx(0.5) and half.precision == 1.0 and half.recall == pytest.approx(0.5)
    # Within one cell of the truth, the two missing truth cells are one cell from predicted (1,1,2)
    # only for (1,1,3): (1,1,4) is two cells away, so it alone counts as missed.
    assert half.dilated_iou == pytest.approx(5 / 7)

    shifted = score_structure("a", np.roll(truth, 1, axis=0), truth)  # every cell one step off
    assert shifted.iou == 0.0 and shifted.dilated_iou == 1.0

    far = score_structure("a", _grid((6, 6, 6)), truth)
    assert far.iou == 0.0 and far.dilated_iou == 0.0 and far.predicted == 1 and far.occupied == 4


def test_mismatched_grids_are_an_error():
    with pytest.raises(ValueError, match="grids differ"):
        score_structure("a", np.zeros((8, 8, 8), bool), np.zeros((4, 4, 4), bool))


def test_sampler_labels_name_the_settings_given():
    from backend.pipeline.api import SamplerOverrides
    from backend.train.structure_eval import sampler_label

    assert sampler_label(SamplerOverrides()) == "default"
    assert sampler_label(SamplerOverrides(guidance_strength=5.0, steps=25)) == "g5,s25"
    assert sampler_label(SamplerOverrides(rescale_t=3.0, guidance_rescale=0.0)) == "t3,r0"


def test_the_sweep_flags_reach_the_evaluation_as_every_combination(tmp_path, monkeypatch):
    from backend.pipeline.api import SamplerOverrides
    from tests.fixtures.scripts import load_script

    script = load_script("eval_structure")
    seen = {}

    def fake_evaluate(releases, *args, **kwargs):
        seen.update(kwargs, releases=releases)
        return {}

    monkeypatch.setattr(script, "evaluate_structure", fake_evaluate)
    common = ["--release", str(tmp_path), "--data", str(tmp_path), "--out", str(tmp_path / "out")]
    assert script.main(common + ["--guidance", "3", "5", "--steps", "25", "--rescale-t", "1", "3"]) == 0
    assert seen["samplers"] == [SamplerOverrides(guidance_strength=g, steps=25, rescale_t=t)
                                for g in (3.0, 5.0) for t in (1.0, 3.0)]
    assert list(seen["releases"]) == ["trained"]  # a sweep has no random baseline
