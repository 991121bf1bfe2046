"""``scripts/train_mini.py``: its training commands (resume a started run, else start from
``--init-from``) and ``--networks`` (which subsets it accepts, and a stage-1-only run on the tiny
family that continues a tiny release)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

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


def _error(script, capsys, *argv) -> str:
    """The usage error ``train_mini`` stops with for ``argv`` (before any stage runs)."""
    with pytest.raises(SystemExit) as exc:
        script.main(list(argv))
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_a_subset_of_networks_needs_a_release_and_the_networks_it_depends_on(tmp_path, capsys):
    script = load_script("train_mini")
    work = ["--work", str(tmp_path / "work"), "--family", "tiny"]
    err = _error(script, capsys, *work, "--networks", "ss_vae", "ss_flow")
    assert "--networks" in err and "--init-from" in err
    release = ["--init-from", str(tmp_path)]
    assert "ss_flow needs ss_vae" in _error(script, capsys, *work, *release, "--networks", "ss_flow")
    err = _error(script, capsys, *work, *release, "--networks", "tex_vae", "tex_flow", "shape_flow", "ss_vae")
    assert "ss_vae changes what ss_flow" in err
    err = _error(script, capsys, *work, *release, "--networks", "image_encoder", "ss_vae", "ss_flow")
    assert "shape_flow tex_flow" in err
    assert not (tmp_path / "work" / "meshes").exists()  # refused before the first stage

    script.check_networks(list(script.NETWORKS), None)  # all: today's run, no release needed
    script.check_networks(["ss_vae", "ss_flow"], tmp_path)
    script.check_networks(["shape_flow"], tmp_path)  # the release's shape encoder gives its latents
    with pytest.raises(ValueError, match="tex_flow needs tex_vae"):
        script.check_networks(["shape_flow", "tex_flow"], tmp_path)
    with pytest.raises(ValueError, match="shape_vae changes what shape_flow, tex_flow"):
        script.check_networks(["shape_vae"], tmp_path)
    # The sparse-structure flow alone, on the latents of the encoder paired with the release's decoder.
    script.check_networks(["ss_flow"], tmp_path, ss_encoder=tmp_path / "enc")
    with pytest.raises(ValueError, match="or --ss-encoder"):
        script.check_networks(["ss_flow"], tmp_path)
    with pytest.raises(ValueError, match="--ss-encoder encodes"):
        script.check_networks(["ss_vae", "ss_flow"], tmp_path, ss_encoder=tmp_path / "enc")


def test_the_ss_encoder_must_be_the_pair_of_the_release_decoder(tiny_release, tmp_path, capsys):
    from backend.train.release import release_checkpoint

    script = load_script("train_mini")
    stem = tiny_release / release_checkpoint(tiny_release, "sparse_structure_decoder")
    decoder = Path(f"{stem}.safetensors")
    export = tmp_path / "export"
    export.mkdir()
    encoder = export / "ss_enc"
    with pytest.raises(ValueError, match="ss_enc.json, .*ss_enc.safetensors not found"):
        script.check_ss_encoder(encoder, tiny_release)
    for suffix in (".json", ".safetensors"):
        Path(f"{encoder}{suffix}").write_bytes(b"{}")
    with pytest.raises(ValueError, match="is not the pair of"):  # no decoder beside it
        script.check_ss_encoder(encoder, tiny_release)
    (export / decoder.name).write_bytes(decoder.read_bytes()[:-1] + b"x")
    with pytest.raises(ValueError, match="is missing or differs"):
        script.check_ss_encoder(encoder, tiny_release)
    (export / decoder.name).write_bytes(decoder.read_bytes())
    script.check_ss_encoder(encoder, tiny_release)
    argv = ["--work", str(tmp_path / "work"), "--family", "tiny", "--networks", "ss_flow",
            "--init-from", str(tiny_release), "--ss-encoder", str(export / "other")]
    err = _error(script, capsys, *argv)
    assert "--ss-encoder" in err and "not found" in err


@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory) -> Path:
    """A release of the tiny family (two-step runs of the six networks) to continue from."""
    from backend.train.release import assemble_release
    from tests.train.training_data import FLOWS, VAES, build_training_data, make_trainer

    root = tmp_path_factory.mktemp("tiny_release")
    tdata = build_training_data(root / "training")
    for name in FLOWS:
        make_trainer(name, root / "flows" / name, tdata).run(max_steps=2)
    runs = [tdata.runs / n for n in VAES] + [root / "flows" / n for n in FLOWS]
    return assemble_release(root / "release", runs, tdata.data, tdata.image_encoder, steps=2)


@pytest.mark.slow
def test_stage_one_alone_continues_a_release_and_keeps_its_other_networks(tiny_release, tmp_path):
    from backend.pipeline.runtime import ModelStore, Runtime

    script = load_script("train_mini")
    work = tmp_path / "work"
    assert script.main(["--work", str(work), "--family", "tiny", "--count", "6", "--test-count", "2",
                        "--resolution", "64", "--views", "2", "--render-size", "64", "--workers", "2",
                        "--prepare-shards", "1", "--device", "cpu", "--skip-eval",
                        "--networks", "ss_vae", "ss_flow", "--init-from", str(tiny_release)]) == 0
    assert sorted(p.name for p in (work / "runs").iterdir()) == ["ss_flow", "ss_vae"]
    release = work / "release"
    doc = json.loads((release / "pipeline.json").read_text())["args"]
    models = {**doc["models"],
              **json.loads((release / "texturing_pipeline.json").read_text())["args"]["models"]}
    for key, ref in models.items():
        new = (release / f"{ref}.safetensors").read_bytes()
        old = (tiny_release / f"{ref}.safetensors").read_bytes()
        assert (new != old) if key.startswith("sparse_structure") else (new == old), key
    # The release's image encoder was not trained further (the tiny SS flow config would train it).
    assert not (work / "runs" / "ss_flow" / "export" / "image_encoder").exists()
    for path in (tiny_release / "image_encoder").iterdir():
        assert (release / "image_encoder" / path.name).read_bytes() == path.read_bytes(), path.name
    base_doc = json.loads((tiny_release / "pipeline.json").read_text())["args"]
    assert doc["shape_slat_normalization"] == base_doc["shape_slat_normalization"]
    store = ModelStore(Runtime(model=str(release), device="cpu", offline=True))
    store.check_checkpoints()
    assert store.get("sparse_structure_flow_model") is not None and store.conditioner() is not None

    # Next session: the flow alone trains further, on the latents of the encoder exported with the
    # release's decoder; every other network, the decoder included, stays as it is.
    encoder = next((work / "runs" / "ss_vae" / "export").glob("ss_enc*.json")).with_suffix("")
    again = tmp_path / "again"
    assert script.main(["--work", str(again), "--family", "tiny", "--count", "6", "--test-count", "2",
                        "--resolution", "64", "--views", "2", "--render-size", "64", "--workers", "2",
                        "--prepare-shards", "1", "--device", "cpu", "--skip-eval", "--networks", "ss_flow",
                        "--init-from", str(release), "--ss-encoder", str(encoder),
                        "--ss-flow-anneal", "3"]) == 0
    assert sorted(p.name for p in (again / "runs").iterdir()) == ["ss_flow"]
    # --ss-flow-anneal: that many steps, the rate falling along a cosine (to 5 % at step 3).
    trained = json.loads((again / "runs" / "ss_flow" / "config.json").read_text())["trainer"]["args"]
    assert trained["max_steps"] == 3 and trained["lr_schedule"]["name"] == "cosine"
    assert trained["train_image_encoder"] is False
    assert json.loads((again / "runs" / "ss_flow" / "done.json").read_text()) == {"step": 3}
    log_lines = (again / "runs" / "ss_flow" / "log.jsonl").read_text().splitlines()
    rates = [json.loads(line)["lr"] for line in log_lines]
    assert rates[-1] == pytest.approx(trained["optimizer"]["lr"] * (0.05 + 0.95 * 0.25), rel=1e-9)
    for key, ref in models.items():
        new = (again / "release" / f"{ref}.safetensors").read_bytes()
        old = (release / f"{ref}.safetensors").read_bytes()
        assert (new != old) if key == "sparse_structure_flow_model" else (new == old), key
    assert (again / "data" / "ss_latents" / encoder.name).is_dir()  # the latents it trained on
