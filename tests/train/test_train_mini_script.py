"""``scripts/train_mini.py``'s training commands: resume a started run, else start from ``--init-from``."""

from __future__ import annotations

from types import SimpleNamespace

from tests.fixtures.scripts import load_script


def test_new_runs_start_from_the_release_and_started_ones_resume(tmp_path):
    script = load_script("train_mini")
    release = tmp_path / "release"
    args = SimpleNamespace(family="mini", device="cuda", init_from=release)
    started = tmp_path / "runs" / "shape_vae" / "ckpts"
    started.mkdir(parents=True)
    (started / "step_0000100.pt").write_bytes(b"")
    cmds = script._train_cmds(["ss_vae", "shape_vae", "image_encoder"], args, tmp_path, 2.0, "python",
                              tmp_path / "seed")
    assert cmds["ss_vae"][-2:] == ["--init-from", release]
    assert "--resume" in cmds["shape_vae"] and "--init-from" not in cmds["shape_vae"]
    # The encoder's pretraining has no released checkpoints; it starts from the encoder it is given.
    assert "--init-from" not in cmds["image_encoder"] and tmp_path / "seed" in cmds["image_encoder"]
    fresh = script._train_cmds(["ss_vae"], SimpleNamespace(family="mini", device="cuda", init_from=None),
                               tmp_path, 2.0, "python")
    assert "--init-from" not in fresh["ss_vae"] and "--resume" not in fresh["ss_vae"]
