"""The add-on's access check, bpy-free: one line per repository, the download consent's summary,
and a check that cannot start says why."""

from __future__ import annotations

from trellis2_blender import protocol
from trellis2_blender.core import access
from trellis2_blender.core.session import BackendSettings


def _repo(repo: str, status: str, size: int = 0) -> protocol.RepoStatus:
    return protocol.RepoStatus(repo=repo, purpose="p", licence="Meta's DINOv3 License", status=status,
                               licence_url=f"https://huggingface.co/{repo}", bytes=size)


def test_each_status_reads_as_one_line():
    level, line = access.describe(_repo("facebook/dinov3", "gated"))
    assert level == "WARNING"
    assert "accept Meta's DINOv3 License at https://huggingface.co/facebook/dinov3" in line
    ok = access.describe(_repo("a/b", "ok", 2_500_000_000))
    assert ok == ("INFO", "a/b (p): readable with your token, 2.50 GB to download")
    offline = access.describe(_repo("a/b", "offline"))[1]
    assert offline.endswith("online access is off (Preferences > System > Network)")


def test_download_summary_totals_what_is_to_fetch_or_names_the_blocker():
    ready, text = access.download_summary([_repo("a/b", "ok", 1_000_000_000), _repo("c/d", "cached"),
                                           _repo("e/f", "ok", 500_000_000)])
    assert ready and text == "To download: 1.50 GB (a/b 1.00 GB, e/f 0.50 GB)."
    ready, text = access.download_summary([_repo("a/b", "ok", 1), _repo("facebook/dinov3", "gated")])
    assert not ready and "facebook/dinov3" in text and "accept" in text
    assert access.download_summary([_repo("a/b", "local")]) == (
        True, "Nothing to download: every model is local or already downloaded.")


def test_a_check_without_a_backend_python_says_why():
    check = access.AccessCheck(BackendSettings(python="", backend_root="/r", log_path="/l", model_source="m"))
    check.start()
    assert check.state == access.ERROR and "Backend Python" in check.message
