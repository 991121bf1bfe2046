"""The job history (trellis2_blender.core.history; no bpy): listing, deleting, the size limit."""

from __future__ import annotations

import os

import pytest

from trellis2_blender.core.history import JOB_FILE, delete_job, list_jobs, prune, write_record


def _job(jobs, name, age, size=1000, results=True):
    folder = jobs / name
    write_record(folder, {"name": name, "kind": "generate", "state": "ok", "seed": 7,
                          "results": [f"{name}/result.json"] if results else []})
    if results:
        (folder / name).mkdir()
        (folder / name / "result.json").write_text("{}")
    (folder / "blob.bin").write_bytes(b"x" * size)
    stamp = 1_700_000_000 + age
    os.utime(folder / JOB_FILE, (stamp, stamp))
    return folder


def test_lists_newest_first_with_settings_and_results(tmp_path):
    _job(tmp_path, "old", 1)
    new = _job(tmp_path, "new", 2)
    (tmp_path / "not_a_job").mkdir()  # no job.json: never listed
    entries = list_jobs(tmp_path)
    assert [e.name for e in entries] == ["new", "old"]
    assert entries[0].results == (new / "new" / "result.json",)
    assert entries[0].settings["seed"] == 7
    assert list_jobs(tmp_path / "missing") == []


def test_prune_deletes_oldest_first_and_only_job_folders(tmp_path):
    a, b, c = (_job(tmp_path, n, age, size=1000) for n, age in (("a", 1), ("b", 2), ("c", 3)))
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "big.bin").write_bytes(b"x" * 5000)
    removed = prune(tmp_path, max_bytes=2500)
    assert removed == [a]
    assert not a.exists() and b.exists() and c.exists() and (foreign / "big.bin").exists()
    # A folder in use stays even when it is the oldest.
    assert prune(tmp_path, max_bytes=1500, keep=frozenset({b})) == [c]
    assert b.exists()


def test_delete_refuses_what_is_not_a_job_folder(tmp_path):
    job = _job(tmp_path, "j", 1)
    other = tmp_path / "photos"
    other.mkdir()
    with pytest.raises(ValueError, match="not a TRELLIS.2 job folder"):
        delete_job(tmp_path, other)
    with pytest.raises(ValueError, match="not a TRELLIS.2 job folder"):
        delete_job(tmp_path / "j", job / "j")  # not directly in the jobs folder
    delete_job(tmp_path, job)
    assert not job.exists()
