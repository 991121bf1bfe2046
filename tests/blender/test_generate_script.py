"""scripts/generate.py: only this run's results become .blend files, and Blender's save stays quiet."""

from __future__ import annotations

import json

import pytest

from scripts import generate
from tests.blender.fake_results import write_result
from tests.blender.runner import run_bpy


def test_only_new_results_are_imported(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    write_result(out / "old", "old")  # from an earlier run
    made = []

    def backend(argv):
        write_result(out / "new", "new")
        return 0

    monkeypatch.setattr(generate, "_run_backend", backend)
    monkeypatch.setattr(generate, "_blend_and_preview", lambda results, _out: made.extend(results) or [])
    assert generate.main(["picture.png", "-o", str(out)]) == 0
    assert made == [out / "new" / "result.json"]


def test_no_direct_says_why_there_is_no_blend(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(generate, "_run_backend", lambda argv: 0)
    monkeypatch.setattr(generate, "_blend_and_preview", lambda results, _out: [])
    assert generate.main(["picture.png", "-o", str(tmp_path / "out"), "--no-direct"]) == 0
    assert "--no-direct writes only the .glb" in capsys.readouterr().err


QUIET_SAVE = """
from pathlib import Path
from scripts.blender_outputs import write_blend_and_preview
written = write_blend_and_preview(Path(ARGS_RESULT), Path(ARGS_OUT), preview_size=32, samples=1)
emit(written)
"""


@pytest.mark.blender
def test_saving_the_blend_prints_no_temporary_name(tmp_path, bpy_python):
    result = write_result(tmp_path / "res" / "demo", "demo")
    out = tmp_path / "out"
    out.mkdir()
    script = f"ARGS_RESULT = {json.dumps(str(result))}\nARGS_OUT = {json.dumps(str(out))}\n" + QUIET_SAVE
    run = run_bpy(script, tmp_path, python=bpy_python, timeout=240)
    assert run.returncode == 0, run.describe()
    assert sorted(p.name for p in out.iterdir()) == ["demo.blend", "demo_preview.png"]
    assert "tmp.blend" not in run.stdout + run.stderr
