"""The protocol module: round trips, validation, limits, the single committed copy and import isolation."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from backend import protocol as p
from scripts import build_extension
from tests.server.test_wire_fields import leaf_field_items

REPO_ROOT = Path(__file__).resolve().parents[2]

EXAMPLES = [
    p.Hello(id="h", version=p.PROTOCOL_VERSION, client="test"),
    p.Load(id="l", source="microsoft/TRELLIS.2-4B", token="hf_x", offline=True, low_vram=True,
           image_encoder="/dino", sparse_structure_decoder="/ssdec", commercial_safe=True),
    p.CheckAccess(id="a", source="microsoft/TRELLIS.2-4B", token="hf_x", background_removal="rmbg"),
    p.AccessReport(job="a", repos=[p.RepoStatus(repo="a/b", purpose="p", licence="MIT", status="ok",
                                                licence_url="https://huggingface.co/a/b", bytes=3)]),
    p.Generate(id="g", images=["/a.png", "/b.png"], output_dir="/out", seed=7,
               shape=p.Sampler(steps=12, guidance_interval=[0.1, 0.9]), export=p.Export(texture_size=1024)),
    p.Retexture(id="r", mesh="/m.glb", image="/a.png", output_dir="/out", resolution=512),
    p.Cancel(id="c", job="g"), p.Status(id="s"), p.Shutdown(id="x"),
    p.HelloReply(job="h", version=1, server="s", pid=12,
                 capabilities={"device": "cpu", "models": {"a/b": True}}),
    p.StatusReply(job="s", state="busy", running="g", queued=["r"], rss_bytes=5),
    p.Log(job=None, level="info", message="hi"),
    p.ProgressEvent(job="g", stage="shape", step=3, total=12, fraction=0.5),
    p.Download(job="l", repo="a/b", file="ckpts/x.safetensors", bytes=10, total=100),
    p.Result(job="g", output_dir="/out", seconds_per_stage={"shape": 1.5},
             assets=[p.Asset(name="a", glb="/out/a.glb", faces=3, extra={"k": [1]})]),
    p.Error(job="g", code="out_of_memory", message="m", hint="h"),
    p.Done(job="g", status="cancelled", seconds=1.0),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(message: p.Message) -> None:
    line = p.encode(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    decode = p.decode_request if type(message) in p.REQUESTS.values() else p.decode_event
    assert decode(line) == message


@pytest.mark.parametrize(("line", "job", "text"), [
    (b'{"type":"hello","id":"a"}', "a", "missing key 'version'"),
    (b'{"type":"hello","id":"a","version":1,"extra":2}', "a",
     "unknown key 'extra'; known: client, id, version"),
    (b'{"type":"hello","id":"a","version":true}', "a", "expected an integer"),
    (b'{"type":"hello","id":"a","version":NaN}', None, "not JSON"),
    (b'{"type":"generate","id":"g","images":"a.png","output_dir":"/o"}', "g", "expected a list"),
    (b'{"type":"generate","id":"g","images":[],"output_dir":"/o","shape":{"steps":"9"}}', "g", "shape.steps"),
    (b'{"type":"cancel","id":"c"}', "c", "missing key 'job'"),
    (b'{"type":"launch","id":"z"}', "z", "unknown message type"),
    (b'{"id":"z"}', "z", "unknown message type"),
    (b'{"type":"status","id":""}', None, "'id' must be"),
    (b'{"type":"status","id":7}', None, "id"),
    (b"[1,2]", None, "JSON object"),
    (b"\xff\xfe{", None, "not JSON"),
    (b"[" * 100_000, None, "not JSON"),
])
def test_invalid_requests_raise_with_the_readable_id(line: bytes, job: str | None, text: str) -> None:
    with pytest.raises(p.ProtocolError, match=None) as info:
        p.decode_request(line)
    assert text in str(info.value)
    assert info.value.job == job


def test_size_limits() -> None:
    big = p.Log(job="j", level="info", message="x" * p.MAX_LINE_BYTES)
    with pytest.raises(p.ProtocolError, match="too large"):
        p.encode(big)
    with pytest.raises(p.ProtocolError, match="too large"):
        p.decode_request(b'{"type":"status","id":"' + b"x" * p.MAX_LINE_BYTES + b'"}')
    with pytest.raises(p.ProtocolError, match="at most"):
        p.decode_request(b'{"type":"status","id":"' + b"x" * (p.MAX_ID_CHARS + 1) + b'"}')


def test_requests_and_events_each_have_unique_types() -> None:
    assert set(p.REQUESTS) == {"hello", "load", "check_access", "generate", "retexture", "cancel", "status",
                               "shutdown"}
    assert set(p.EVENTS) == {"hello", "status", "access", "log", "progress", "download", "result", "error",
                             "done"}


def test_the_contract_is_committed_once() -> None:
    """The add-on's ``protocol`` module is placed from ``backend/protocol.py``, never committed."""
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True,
                             check=True).stdout.splitlines()
    assert [path for path in tracked if Path(path).name == "protocol.py"] == ["backend/protocol.py"]


def test_placing_the_contract_refreshes_a_stale_copy(tmp_path) -> None:
    (tmp_path / "backend").mkdir()
    (tmp_path / "trellis2_blender").mkdir()
    (tmp_path / "backend" / "protocol.py").write_text("PROTOCOL_VERSION = 2\n")
    (tmp_path / "trellis2_blender" / "protocol.py").write_text("PROTOCOL_VERSION = 1\n")
    placed = build_extension.place_contract(tmp_path)
    assert placed.read_text() == "PROTOCOL_VERSION = 2\n"
    assert sorted(p.name for p in placed.parent.iterdir()) == ["protocol.py"]  # no temporary file left


def test_client_imports_neither_torch_numpy_backend_nor_bpy() -> None:
    code = ("import sys; import trellis2_blender.core.client, trellis2_blender.protocol; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'backend', 'bpy'));"
            "sys.exit(f'imported: {bad}' if bad else 0)")
    _run_python(code)


def test_protocol_is_stdlib_only() -> None:
    code = ("import sys; before = set(sys.modules); import backend.protocol; "
            "new = {m.split('.')[0] for m in set(sys.modules) - before} - {'backend'}; "
            "third = sorted(m for m in new if m not in sys.stdlib_module_names); "
            "sys.exit(f'non-stdlib: {third}' if third else 0)")
    _run_python(code)


def _run_python(code: str) -> None:
    """Run ``code`` in a fresh interpreter at the repo root; fail with its stderr."""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


# What version 1 of the wire promises a client that leaves a field out: its default and the values it
# accepts ((low, high) ranges, tuples of choices). A client of this version keeps sending requests
# without the fields it does not set, so changing one of these changes what those requests do: that
# is a new protocol version (and a new record here), never an edit of a constant alone.
_SAMPLER_V1 = {"steps": (None, (1, 1000)), "guidance_strength": None, "guidance_rescale": None,
               "guidance_interval": None, "rescale_t": None}
_EXPORT_V1 = {"export.texture_size": (2048, (16, 8192)), "export.faces": (200_000, (4, None)),
              "export.texture_format": ("png", ("png", "webp")), "export.write_glb": True,
              "export.write_direct": True, "export.unwrap": ("auto", ("auto", "fast", "xatlas")),
              "export.remove_floaters": False, "export.remove_inner_shells": False,
              "export.fill_holes": False, "export.bake_normal_map": True}
_REMOVAL_V1 = ("solid", ("none", "solid", "rmbg"))
WIRE_V1 = {
    "generate": {"pipeline_type": ("1024_cascade", ("512", "1024", "1024_cascade", "1536_cascade")),
                 "seed": 42, "num_samples": (1, (1, 16)), "max_num_tokens": 49152, "name": None,
                 "multiview": (None, ("stochastic", "multidiffusion")),
                 **{f"{stage}.{k}": v for stage in ("sparse_structure", "shape", "texture")
                    for k, v in _SAMPLER_V1.items()}, **_EXPORT_V1},
    "retexture": {"seed": 42, "resolution": (1024, (512, 1024, 1536)), "name": None,
                  **{f"texture.{k}": v for k, v in _SAMPLER_V1.items()}, **_EXPORT_V1},
    "load": {"revision": None, "image_encoder": None, "background_remover": None,
             "background_removal": _REMOVAL_V1, "allow_model_code": False, "token": None, "offline": False,
             "cache_dir": None, "low_vram": False, "sparse_structure_decoder": None,
             "commercial_safe": False, "vram_budget_gib": None},
    "check_access": {"image_encoder": None, "sparse_structure_decoder": None, "background_remover": None,
                     "background_removal": _REMOVAL_V1, "token": None, "offline": False, "cache_dir": None},
}


def _promised(cls: type) -> dict[str, object]:
    """Each optional field of ``cls`` (nested dataclasses opened up) -> default, or (default, limits)."""
    found: dict[str, object] = {}
    for path, f in leaf_field_items(cls):
        if f.default is not dataclasses.MISSING:
            limits = f.metadata.get("choices", f.metadata.get("range"))
            found[path] = f.default if limits is None else (f.default, tuple(limits))
    return found


def test_the_defaults_and_limits_of_this_protocol_version_are_kept():
    assert p.PROTOCOL_VERSION == 1
    assert {kind: _promised(p.REQUESTS[kind]) for kind in WIRE_V1} == WIRE_V1
    # the other requests have no settings to default (hello's client name is not one)
    assert {kind for kind, cls in p.REQUESTS.items() if _promised(cls)} - {"hello"} == set(WIRE_V1)
