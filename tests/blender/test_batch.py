"""The headless batch script: a folder with a good image, a corrupt file and a transparent image (real
backend), and a manifest's per-item settings (the fake generator: only the bookkeeping is under test)."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.blender.runner import PYTHON, REPO, run_python

pytestmark = [pytest.mark.blender, pytest.mark.slow]


def test_batch_folder_report_exit_code_and_rerun(tmp_path, inputs, bpy_python, opaque_tiny_checkpoint):
    """The real backend on the tiny checkpoint whose texture decoder outputs alpha 1 (conftest), so
    the backend's alpha verdict is OPAQUE for both pictures: the RGB one goes through the default
    plain-background keyer, the transparent one is used as it is."""
    folder = tmp_path / "batch_in"
    folder.mkdir()
    for key in ("opaque", "corrupt", "transparent"):
        shutil.copy(inputs[key], folder / inputs[key].name)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "batch_out"
    argv = [str(REPO / "scripts" / "batch_generate.py"), "--input", str(folder), "--output", str(out),
            "--backend-python", str(PYTHON), "--model", str(opaque_tiny_checkpoint), "--device", "cpu",
            "--pipeline-type", "512", "--seed", "5", "--texture-size", "256", "--faces", "1000",
            "--background-removal", "solid"]
    user = tmp_path / "blender_user"
    first = run_python(argv, python=bpy_python, user_dir=user, timeout=400)
    assert first.returncode == 1, first.describe()
    report = json.loads((out / "report.json").read_text())
    items = {r["name"]: r for r in report["items"]}
    assert sorted(items) == ["broken", "leaf", "teapot"]
    assert report["summary"] == {"ok": 2, "failed": 1, "cancelled": 0, "skipped": 0}
    broken = items["broken"]
    assert broken["status"] == "failed"
    assert broken["error"]["code"] == "invalid_input"
    assert "broken.png" in broken["error"]["message"]
    for name in ("teapot", "leaf"):
        rec = items[name]
        assert rec["status"] == "ok", rec
        assert rec["alpha_mode"] == "OPAQUE"
        assert rec["seed"] == 5
        assert rec["seconds"]["backend"] > 0 and "import_export" in rec["seconds"]
        assert set(rec["outputs"]) == {"glb", "blend"}
        glb = out / f"{name}.glb"
        assert glb.read_bytes()[:4] == b"glTF"
        assert (out / f"{name}.blend").stat().st_size > 1000

    second = run_python(argv, python=bpy_python, user_dir=user, timeout=400)
    assert second.returncode == 1, second.describe()
    report = json.loads((out / "report.json").read_text())
    statuses = {r["name"]: r["status"] for r in report["items"]}
    assert statuses == {"teapot": "skipped", "leaf": "skipped", "broken": "failed"}


def _run_fake_batch(manifest, out, formats, bpy_python, fake_backend_python, model_dir) -> dict:
    """Run the batch script on ``manifest`` with the fake generator; returns its report."""
    run = run_python([str(REPO / "scripts" / "batch_generate.py"), "--input", str(manifest), "--output",
                      str(out), "--format", formats, "--backend-python", str(fake_backend_python),
                      "--model", str(model_dir)], python=bpy_python, user_dir=out.parent / "u", timeout=240)
    assert run.returncode == 0, run.describe()
    return json.loads((out / "report.json").read_text())


def test_batch_manifest_per_item_settings(tmp_path, inputs, bpy_python, fake_backend_python, model_dir):
    manifest = tmp_path / "jobs.json"
    side = tmp_path / "pot_side.png"
    side.write_bytes(inputs["opaque"].read_bytes())
    manifest.write_text(json.dumps({
        "defaults": {"texture_size": 128},
        "items": [{"image": str(inputs["opaque"]), "name": "pot_a", "seed": 11, "steps": {"shape": 3}},
                  {"image": str(inputs["opaque"]), "name": "pot_b", "seed": 12},
                  {"image": str(inputs["opaque"]), "name": "pot_c", "seed": 13, "views": ["pot_side.png"],
                   "multiview": "multidiffusion"}],
    }))
    out = tmp_path / "out"
    report = _run_fake_batch(manifest, out, "blend", bpy_python, fake_backend_python, model_dir)
    assert [(r["name"], r["seed"], r["status"]) for r in report["items"]] == [
        ("pot_a", 11, "ok"), ("pot_b", 12, "ok"), ("pot_c", 13, "ok")]
    # The manifest's views (relative to the manifest) and mode reached the backend.
    received = json.loads((out / ".jobs" / "pot_c" / "received_request.json").read_text())
    assert received["images"] == [str(inputs["opaque"]), str(side)]
    assert received["multiview"] == "multidiffusion"
    single = json.loads((out / ".jobs" / "pot_b" / "received_request.json").read_text())
    assert single["multiview"] is None and len(single["images"]) == 1
    assert all(set(r["outputs"]) == {"blend"} for r in report["items"])
    assert not list(out.glob("*.glb"))
    assert single["export"]["write_glb"] is False  # no GLB asked of the backend either


def test_batch_glb_is_the_backends_own(tmp_path, inputs, bpy_python, fake_backend_python, model_dir):
    """One GLB producer: the batch asks the backend for a GLB and hands that file out unchanged
    (for a generated item and a retexture), instead of exporting the scene with Blender's exporter."""
    mesh = tmp_path / "old_pot.ply"
    mesh.write_text("not read by the fake generator beyond its existence")
    manifest = tmp_path / "jobs.json"
    manifest.write_text(json.dumps({"items": [{"image": str(inputs["opaque"]), "name": "pot"},
                                              {"image": str(inputs["opaque"]), "mesh": str(mesh),
                                               "name": "pot_new"}]}))
    out = tmp_path / "out"
    report = _run_fake_batch(manifest, out, "glb", bpy_python, fake_backend_python, model_dir)
    for record in report["items"]:
        name = record["name"]
        assert record["status"] == "ok", record
        assert record["outputs"] == {"glb": str(out / f"{name}.glb")}
        received = json.loads((out / ".jobs" / name / "received_request.json").read_text())
        assert received["export"]["write_glb"] is True
        backend_glb = out / ".jobs" / name / f"{name}.glb"
        assert (out / f"{name}.glb").read_bytes() == backend_glb.read_bytes()
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
