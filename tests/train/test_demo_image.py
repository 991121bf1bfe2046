"""The README's demo picture is the data toolkit's render of a held-out object of the mini release's set."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tests.fixtures.scripts import load_script


def test_the_committed_demo_picture_is_the_held_out_render(tmp_path):
    from backend.train.procedural.dataset import held_out_indices

    script = load_script("make_demo_image")
    assert script.DEMO_INDEX in held_out_indices(script.SET_COUNT, script.SET_SEED, script.SET_TEST_COUNT)
    assert script.main(["--out", str(tmp_path / "demo.png")]) == 0
    rendered = np.asarray(Image.open(tmp_path / "demo.png"))
    committed = np.asarray(Image.open(script.OUT))
    assert rendered.shape == committed.shape == (512, 512, 4)
    # Rendered on the CPU here; a GPU render of the same view may differ by one level in a few pixels.
    assert np.abs(rendered.astype(int) - committed.astype(int)).max() <= 1
    assert 0.05 < (committed[..., 3] > 0).mean() < 0.6  # an object on a transparent background
