"""The request's output ``name`` must be one safe path component: nothing is written outside
``output_dir``, and a rejected request creates no folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.pipeline import api
from backend.pipeline.errors import PipelineError
from trellis2_blender import protocol as p
from trellis2_blender.core.client import BackendClient

BAD_NAMES = ["../../escaped", "../escaped", "/tmp/escaped_abs", "a/b", "a\\b", "..", ".", "x\x00y",
             "x\ny", "c:escaped", ""]


def _files(root: Path) -> set[Path]:
    return {q for q in root.rglob("*")}


@pytest.mark.parametrize("name", BAD_NAMES)
def test_pipeline_requests_reject_unsafe_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(PipelineError, match="name"):
        api.GenerateRequest(images=(tmp_path / "a.png",), output_dir=tmp_path / "out", name=name)
    with pytest.raises(PipelineError, match="name"):
        api.RetextureRequest(mesh=tmp_path / "m.glb", image=tmp_path / "a.png", output_dir=tmp_path / "out",
                             name=name)


@pytest.mark.parametrize("name", ["chair", "My chair.001", "Würfel_2", "a-b c"])
def test_pipeline_requests_accept_plain_names(tmp_path: Path, name: str) -> None:
    assert api.GenerateRequest(images=(tmp_path / "a.png",), output_dir=tmp_path, name=name).name == name
    assert api.RetextureRequest(mesh=tmp_path / "m.glb", image=tmp_path / "a.png", output_dir=tmp_path,
                                name=name).name == name


@pytest.mark.parametrize("name", ["../../escaped", str(Path("/tmp") / "trellis2_escaped_abs")])
def test_server_rejects_escaping_names(backend: BackendClient, image: Path, tmp_path: Path,
                                       name: str) -> None:
    before = _files(tmp_path)
    out = tmp_path / "jobs" / "a" / "b"
    for job in (backend.generate([str(image)], str(out), name=name),
                backend.retexture(str(image), str(image), str(out / "r"), resolution=512, name=name)):
        events = backend.wait(job, 15)
        errors = [e for e in events if isinstance(e, p.Error)]
        assert events[-1].status == "error" and errors and errors[0].code == "invalid_request", events
        assert "name" in errors[0].message
    new = _files(tmp_path) - before
    assert not [q for q in new if "escaped" in q.name], new
    assert not (tmp_path / "jobs").exists()  # a rejected request creates no output_dir
    assert not Path("/tmp/trellis2_escaped_abs.glb").exists()


def test_server_still_writes_plain_names(backend: BackendClient, image: Path, tmp_path: Path) -> None:
    out = tmp_path / "jobs" / "ok"
    events = backend.wait(backend.generate([str(image)], str(out), name="chair.001"), 15)
    assert events[-1].status == "ok", events
    result = next(e for e in events if isinstance(e, p.Result))
    assert Path(result.assets[0].glb).parent == out


def test_rejected_request_creates_no_output_dir(backend: BackendClient, image: Path, tmp_path: Path) -> None:
    bad = [p.Generate(id="bad-g", images=[str(image)], output_dir=str(tmp_path / "g"),
                      export=p.Export(texture_size=1)),
           p.Generate(id="bad-s", images=[str(image)], output_dir=str(tmp_path / "s"),
                      shape=p.Sampler(steps=0)),
           p.Retexture(id="bad-r", mesh=str(image), image=str(image), output_dir=str(tmp_path / "r"),
                       resolution=512, export=p.Export(texture_format="tga"))]
    with pytest.raises(p.ProtocolError, match="texture_size"):  # the client checks before sending ...
        backend.generate([str(image)], str(tmp_path / "g"), export=p.Export(texture_size=1))
    for message in bad:
        with pytest.raises(p.ProtocolError) as refused:
            p.check_request(message)
        assert refused.value.code == "invalid_request"
        backend._write(p.encode(message))  # ... and the server on arrival, when one is sent anyway
        events = backend.wait(message.id, 15)
        assert [e.code for e in events if isinstance(e, p.Error)] == ["invalid_request"], events
        assert events[-1].status == "error", events
    assert not any((tmp_path / d).exists() for d in "gsr")
