"""The client with awkward paths: undecodable file names and a backend folder holding ':'."""

from __future__ import annotations

import os
import sys

import pytest

from tests.server.conftest import FAKE, REPO_ROOT
from trellis2_blender import protocol
from trellis2_blender.core.client import BackendClient, BackendConfig


def test_an_undecodable_file_name_is_refused_by_the_client_naming_the_field(tmp_path):
    client = BackendClient(BackendConfig(python=sys.executable, backend_root=str(REPO_ROOT),
                                         log_path=str(tmp_path / "log")))
    image = os.fsdecode(b"/tmp/caf\xe9.png")  # Latin-1 bytes on a UTF-8 system: a lone surrogate
    with pytest.raises(protocol.ProtocolError, match=r"images\[0\].*not valid Unicode"):
        client.generate([image], str(tmp_path / "out"))


@pytest.mark.skipif(sys.platform == "win32", reason="':' cannot appear in Windows folder names")
def test_the_backend_starts_from_a_folder_whose_name_holds_the_path_separator(tmp_path, monkeypatch):
    root = tmp_path / "my:backend"
    root.symlink_to(REPO_ROOT, target_is_directory=True)
    monkeypatch.chdir(tmp_path)  # Blender's working folder is anywhere, never the backend's
    args = ("--generator", FAKE, "--device", "cpu", "--offline", "--cache-dir", str(tmp_path / "hf"))
    client = BackendClient(BackendConfig(
        python=sys.executable, backend_root=str(root), log_path=str(tmp_path / "logs" / "backend.log"),
        server_args=args, handshake_timeout_s=60, stop_timeout_s=10))
    try:
        hello = client.start()
        assert hello.version == protocol.PROTOCOL_VERSION
    finally:
        client.stop(timeout=10)
        client.kill()
