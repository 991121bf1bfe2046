"""Write the demo input image ``scripts/assets/demo.png``: a held-out object's condition picture.

The picture is what the data toolkit renders for object 26 of the procedural set that trained the
bundled mini release (``--count 600 --test-count 48 --seed 0``; object 26, a bar stool, is in its
held-out split), from the view nearest 25 degrees above the horizon, as the evaluation shows it.
So the README's first command gives the mini model a picture of the kind it learned from, of an
object it never saw. RGBA on a transparent background, so generation skips background removal.
Re-run to regenerate: ``.venv/bin/python scripts/make_demo_image.py`` (rendered on the CPU; a GPU render
of the same view differs by at most one level of 255 in a few pixels).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "scripts" / "assets" / "demo.png"
# The bundled release's procedural set, and the held-out object shown.
SET_COUNT, SET_SEED, SET_TEST_COUNT = 600, 0, 48
DEMO_INDEX = 26


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to write it (default {OUT})")
    out = parser.parse_args(argv).out
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from backend.fileio import write_atomic
    from backend.train.data import DataLayout, PrepareOptions, prepare_dataset
    from backend.train.procedural.dataset import held_out_indices, make_object_id, write_object

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if DEMO_INDEX not in held_out_indices(SET_COUNT, SET_SEED, SET_TEST_COUNT):
        raise SystemExit(f"object {DEMO_INDEX} is not held out in the set ({SET_COUNT}, seed {SET_SEED})")
    asset_id = make_object_id(DEMO_INDEX)
    with tempfile.TemporaryDirectory() as tmp:
        meshes, data = Path(tmp) / "meshes", Path(tmp) / "data"
        meshes.mkdir()
        write_object(meshes, DEMO_INDEX, SET_SEED)
        # The settings the mini release's data used (views and their seed decide the picture).
        prepare_dataset(PrepareOptions(input_dir=meshes, output_dir=data, resolution=64, views=8,
                                       render_size=512, seed=SET_SEED, workers=1))
        layout = DataLayout(data)
        picture = layout.render_view(asset_id, layout.photo_view(asset_id))
        write_atomic(out, picture.read_bytes())
    logging.info("wrote %s (%s, view %s)", out, asset_id, picture.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
