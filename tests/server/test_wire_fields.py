"""Every field on the wire reaches the backend, and no default drifts between the layers.

Each request message is enumerated field by field (nested ``Sampler`` and ``Export`` included):
a table gives every field a value that is not its default, and the tests prove that value
arrives in the pipeline's request, both through the server's conversion in-process and from
the add-on's job specs through a real backend process. The tables must name every field, so a
field added to the contract without a way to the pipeline fails here as well.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import typing
from pathlib import Path

import pytest

from backend import protocol
from backend.server import jobs as server_jobs
from tests.server.conftest import REPO_ROOT
from tests.server.recording_generator import LOAD_SPEC_FILE, REQUEST_FILE
from trellis2_blender.core import jobs as addon_jobs
from trellis2_blender.core.client import BackendClient, BackendConfig
from trellis2_blender.core.session import BackendSession, BackendSettings

RECORDING = "tests.server.recording_generator:RecordingGenerator"


def leaf_field_items(cls: type, prefix: str = ""):
    """``(dotted path, dataclasses.Field)`` of every leaf field of ``cls``, nested dataclasses opened up."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from leaf_field_items(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, f


def leaf_fields(cls: type) -> dict[str, object]:
    """Dotted path -> default of every field of ``cls`` (``dataclasses.MISSING`` when it has none)."""
    found: dict[str, object] = {}
    for path, f in leaf_field_items(cls):
        if f.default is not dataclasses.MISSING:
            found[path] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            found[path] = f.default_factory()
        else:
            found[path] = dataclasses.MISSING
    return found


def nested(flat: dict[str, object]) -> dict[str, object]:
    """``{"export.faces": 5}`` -> ``{"export": {"faces": 5}}``."""
    out: dict[str, object] = {}
    for path, value in flat.items():
        *parents, leaf = path.split(".")
        node = out
        for name in parents:
            node = node.setdefault(name, {})  # type: ignore[assignment]
        node[leaf] = value
    return out


def received(message: type, flat: dict[str, object]) -> protocol.Message:
    """The message as the server decodes it from a line carrying ``flat``'s values."""
    line = json.dumps({"type": message.TYPE, "id": "job-1", **nested(flat)})
    return protocol.decode_request(protocol.encode(protocol.decode_request(line)))


def lookup(obj: object, path: str) -> object:
    for name in path.split("."):
        obj = obj[name] if isinstance(obj, dict) else getattr(obj, name)
    return obj


def plain(value: object) -> object:
    """Paths as strings and tuples as lists: how the wire spells what the pipeline holds."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _sampler_values(steps: int, strength: float, rescale: float, interval: list[float], t: float, stage: str):
    return {f"{stage}.steps": steps, f"{stage}.guidance_strength": strength,
            f"{stage}.guidance_rescale": rescale,
            f"{stage}.guidance_interval": interval, f"{stage}.rescale_t": t}


EXPORT_VALUES = {
    "export.texture_size": 1024, "export.faces": 12_345, "export.texture_format": "webp",
    "export.write_glb": False, "export.write_direct": False, "export.unwrap": "xatlas",
    "export.remove_floaters": True, "export.remove_inner_shells": True, "export.fill_holes": True,
    "export.bake_normal_map": False,
}


def generate_values(tmp_path: Path) -> dict[str, object]:
    images = []
    for name in ("front.png", "side.png"):
        (tmp_path / name).write_bytes(b"\x89PNG\r\n\x1a\n")
        images.append(str(tmp_path / name))
    return {
        "images": images, "output_dir": str(tmp_path / "out"), "pipeline_type": "1536_cascade", "seed": 7,
        "num_samples": 3, "max_num_tokens": 30_000, "name": "wired", "multiview": "multidiffusion",
        **_sampler_values(5, 3.5, 0.25, [0.1, 0.9], 2.0, "sparse_structure"),
        **_sampler_values(6, 4.5, 0.35, [0.2, 0.8], 3.0, "shape"),
        **_sampler_values(7, 5.5, 0.45, [0.3, 0.7], 4.0, "texture"),
        **EXPORT_VALUES,
    }


def retexture_values(tmp_path: Path) -> dict[str, object]:
    (tmp_path / "in.ply").write_bytes(b"ply\n")
    (tmp_path / "ref.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return {
        "mesh": str(tmp_path / "in.ply"), "image": str(tmp_path / "ref.png"),
        "output_dir": str(tmp_path / "out"),
        "seed": 8, "resolution": 512, "name": "rewired",
        **_sampler_values(9, 2.5, 0.15, [0.05, 0.95], 1.5, "texture"),
        **EXPORT_VALUES,
    }


# Wire messages whose fields each go to one pipeline request field of the same path; ``id`` is
# the job's name on the wire, not a setting.
CASES = [
    pytest.param(protocol.Generate, generate_values, server_jobs.to_generate, id="generate"),
    pytest.param(protocol.Retexture, retexture_values, server_jobs.to_retexture, id="retexture"),
]


@pytest.mark.parametrize("message, values, convert", CASES)
def test_the_table_names_every_field_with_a_value_other_than_its_default(message, values, convert, tmp_path):
    defaults = leaf_fields(message)
    table = values(tmp_path)
    assert set(table) == set(defaults) - {"id"}
    assert [path for path, value in table.items() if value == defaults[path]] == []


@pytest.mark.parametrize("message, values, convert", CASES)
def test_every_field_on_the_wire_reaches_the_pipeline_request(message, values, convert, tmp_path):
    table = values(tmp_path)
    request = convert(received(message, table))
    arrived = {path: plain(lookup(request, path)) for path in table}
    assert arrived == {path: plain(value) for path, value in table.items()}


@pytest.mark.parametrize("message, values, convert", CASES)
def test_a_request_without_settings_gets_the_pipelines_defaults(message, values, convert, tmp_path):
    """The wire's defaults and the pipeline's are the same values (one place defines both)."""
    required = {path: value for path, value in values(tmp_path).items()
                if leaf_fields(message)[path] is dataclasses.MISSING}
    request = convert(received(message, required))
    pipeline_defaults = type(request)(**{k: getattr(request, k) for k in required})
    for path in set(leaf_fields(message)) - {"id"} - set(required):
        assert plain(lookup(request, path)) == plain(lookup(pipeline_defaults, path)), path


def test_message_defaults_are_the_contracts_constants():
    assert leaf_fields(protocol.Generate)["pipeline_type"] == protocol.DEFAULT_PIPELINE_TYPE
    assert leaf_fields(protocol.Generate)["seed"] == protocol.DEFAULT_SEED
    assert leaf_fields(protocol.Retexture)["seed"] == protocol.DEFAULT_SEED
    assert leaf_fields(protocol.Generate)["max_num_tokens"] == protocol.DEFAULT_MAX_NUM_TOKENS
    assert leaf_fields(protocol.Retexture)["resolution"] == protocol.DEFAULT_RETEXTURE_RESOLUTION
    assert protocol.DEFAULT_RETEXTURE_RESOLUTION in protocol.RETEXTURE_RESOLUTIONS
    export = leaf_fields(protocol.Export)
    assert export["faces"] == protocol.DEFAULT_FACES
    assert export["texture_size"] == protocol.DEFAULT_TEXTURE_SIZE
    assert protocol.MIN_TEXTURE_SIZE <= min(protocol.TEXTURE_SIZE_CHOICES)
    assert max(protocol.TEXTURE_SIZE_CHOICES) <= protocol.MAX_TEXTURE_SIZE
    assert protocol.DEFAULT_TEXTURE_SIZE in protocol.TEXTURE_SIZE_CHOICES
    assert export["texture_format"] in protocol.TEXTURE_FORMATS
    assert export["unwrap"] in protocol.UNWRAP_METHODS
    for message in (protocol.Load, protocol.CheckAccess):
        assert leaf_fields(message)["background_removal"] == protocol.DEFAULT_BACKGROUND_REMOVAL
    assert protocol.DEFAULT_BACKGROUND_REMOVAL in protocol.BACKGROUND_REMOVAL_MODES
    assert set(protocol.BACKGROUND_REMOVAL_FLAGS.values()) == set(protocol.BACKGROUND_REMOVAL_MODES)


@pytest.mark.parametrize("path, value", [
    ("export.texture_size", protocol.MAX_TEXTURE_SIZE + 1),
    ("export.texture_size", protocol.MIN_TEXTURE_SIZE - 1),
    ("pipeline_type", "2048"), ("export.texture_format", "jpg"), ("shape.steps", protocol.MAX_STEPS + 1),
    ("shape.steps", 0), ("num_samples", protocol.MAX_SAMPLES + 1), ("multiview", "vote"),
    ("export.faces", protocol.MIN_FACES - 1),
    ("export.unwrap", "smart"),
])
def test_the_server_refuses_values_outside_the_contracts_limits(path, value, tmp_path):
    """Decoding is the server's one check of choices and limits; it names the field."""
    table = {k: v for k, v in generate_values(tmp_path).items() if k in ("images", "output_dir")}
    with pytest.raises(protocol.ProtocolError, match=f"generate.{path} must be") as refused:
        received(protocol.Generate, {**table, path: value})
    assert (refused.value.code, refused.value.job) == ("invalid_request", "job-1")


def test_the_largest_texture_the_server_accepts_is_one_the_pipeline_accepts(tmp_path):
    table = {k: v for k, v in generate_values(tmp_path).items() if k in ("images", "output_dir")}
    for size in (protocol.MIN_TEXTURE_SIZE, protocol.MAX_TEXTURE_SIZE):
        message = received(protocol.Generate, {**table, "export.texture_size": size})
        assert server_jobs.to_generate(message).export.texture_size == size


# --- from the add-on's job specs through a real backend process -------------------------------

def _spec_sampler(stage: str, steps: int, guidance: float, rescale: float) -> dict[str, object]:
    """The wire paths a job spec's (steps, guidance, rescale) sampler tuple sets."""
    return {f"{stage}.steps": steps, f"{stage}.guidance_strength": guidance,
            f"{stage}.guidance_rescale": rescale}


def _session(tmp_path: Path, **settings: object) -> BackendSession:
    def client(config: BackendConfig) -> BackendClient:
        args = ("--generator", RECORDING, *config.server_args, "--cache-dir", str(tmp_path / "hf"))
        return BackendClient(dataclasses.replace(config, server_args=args, handshake_timeout_s=60,
                                                 stop_timeout_s=10))

    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    return BackendSession(BackendSettings(python=sys.executable, backend_root=str(REPO_ROOT),
                                          log_path=str(tmp_path / "backend.log"), model_source=str(model),
                                          device="cpu", offline=True, **settings), client_factory=client)


def _run(session: BackendSession, spec) -> dict:
    job = session.wait(session.submit(addon_jobs.Job(spec)), timeout=60)
    assert job.state == addon_jobs.OK, job.error_text()
    return json.loads((Path(spec.output_dir) / REQUEST_FILE).read_text())


def test_every_setting_of_the_addons_jobs_reaches_the_pipeline(tmp_path):
    values = generate_values(tmp_path)
    generate = addon_jobs.GenerateSpec(
        image=values["images"][0], views=(values["images"][1],), name="wired",
        output_dir=str(tmp_path / "gen"),
        pipeline_type="1536_cascade", seed=7, sparse_structure=(5, 3.5, 0.25), shape=(3, 4.5, 0.35),
        texture=(7, 5.5, 0.45), face_target=12_345, texture_size=1024, num_samples=3,
        multiview="multidiffusion",
        unwrap="xatlas", remove_floaters=True, remove_inner_shells=True, fill_holes=True, write_glb=True)
    expected_generate = {
        "images": values["images"], "name": "wired", "output_dir": str(tmp_path / "gen"),
        "pipeline_type": "1536_cascade", "seed": 7, "num_samples": 3, "multiview": "multidiffusion",
        **_spec_sampler("sparse_structure", 5, 3.5, 0.25), **_spec_sampler("shape", 3, 4.5, 0.35),
        **_spec_sampler("texture", 7, 5.5, 0.45), "export.faces": 12_345, "export.texture_size": 1024,
        "export.unwrap": "xatlas", "export.remove_floaters": True, "export.remove_inner_shells": True,
        "export.fill_holes": True, "export.write_glb": True,
    }
    files = retexture_values(tmp_path)
    retexture = addon_jobs.RetextureSpec(mesh=files["mesh"], image=files["image"], name="rewired",
                                         output_dir=str(tmp_path / "tex"), seed=8, resolution=512,
                                         texture=(4, 2.5, 0.15), texture_size=1024,
                                         write_glb=True)
    expected_retexture = {"mesh": files["mesh"], "image": files["image"], "name": "rewired",
                          "output_dir": str(tmp_path / "tex"), "seed": 8, "resolution": 512,
                          **_spec_sampler("texture", 4, 2.5, 0.15), "export.texture_size": 1024,
                          "export.write_glb": True}
    # Every spec field is a setting on the wire except ``kind`` (which message is sent).
    for spec, expected in ((generate, expected_generate), (retexture, expected_retexture)):
        defaults = {f.name: f.default for f in dataclasses.fields(spec) if f.name != "kind"}
        assert [name for name, default in defaults.items() if getattr(spec, name) == default] == []
        defaults_on_wire = leaf_fields(protocol.Generate if spec.kind == "generate" else protocol.Retexture)
        # The add-on's write_glb default (False) is not the wire's (True): the next test sees it arrive.
        assert [p for p, v in expected.items() if v == defaults_on_wire[p] and p != "export.write_glb"] == []

    session = _session(tmp_path)
    try:
        for spec, expected in ((generate, expected_generate), (retexture, expected_retexture)):
            request = _run(session, spec)
            assert {path: plain(lookup(request, path)) for path in expected} == expected
    finally:
        session.stop()


def test_the_addons_backend_settings_reach_the_loaded_generator(tmp_path):
    defaults = BackendSettings(python="", backend_root="", log_path="", model_source="")
    chosen = {"low_vram": True, "commercial_safe": True, "background_removal": "none"}
    assert [name for name, value in chosen.items() if getattr(defaults, name) == value] == []
    session = _session(tmp_path, **chosen)
    try:
        session.start()
        job = addon_jobs.GenerateSpec(image=generate_values(tmp_path)["images"][0], name="x",
                                      output_dir=str(tmp_path / "gen"), shape=(2, None))
        request = _run(session, job)
    finally:
        session.stop()
    loaded = json.loads((tmp_path / "model" / LOAD_SPEC_FILE).read_text())
    assert {name: loaded[name] for name in chosen} == chosen
    assert loaded["device"] == "cpu"
    assert request["export"]["write_glb"] is False  # the scene import needs no GLB


def test_every_field_of_load_reaches_the_resolver_or_the_generator(monkeypatch, tmp_path):
    """Each ``load`` field, set to a value other than its default, arrives where the server uses it:
    the weights resolver (source, revision, local folders, token, offline, cache) or the generator's
    load spec (low VRAM, VRAM budget, background removal, model-code consent, commercial-safe). The
    budget excludes low-VRAM mode, so it arrives with a second load."""
    from backend.pipeline import weights
    from tests.server.test_weights_requests import _serve

    resolved = []

    def resolve(source, config, revision=None, overrides=None, **_):
        resolved.append({"source": source, "revision": revision, "token": config.token,
                         "offline": config.offline, "cache_dir": str(config.cache_dir), **(overrides or {})})
        (tmp_path / "model").mkdir(exist_ok=True)
        return weights.ModelPaths(model_dir=tmp_path / "model", dependencies={})

    monkeypatch.setattr(weights, "resolve", resolve)
    values = {"source": "someone/model", "revision": "v2", "image_encoder": "/dino",
              "background_remover": "/rmbg", "background_removal": "none", "allow_model_code": True,
              "token": "hf_x", "offline": True,
              "cache_dir": str(tmp_path / "cache"), "low_vram": True, "sparse_structure_decoder": "/ssdec",
              "commercial_safe": True}
    budget = {"vram_budget_gib": 6.5}
    defaults = leaf_fields(protocol.Load)
    assert set(values) | set(budget) == set(defaults) - {"id"}
    assert [name for name, value in {**values, **budget}.items() if value == defaults[name]] == []
    budgeted = dataclasses.replace(received(protocol.Load, {**values, "low_vram": False, **budget}),
                                   id="load-2")
    events, specs = _serve(tmp_path, received(protocol.Load, values), budgeted)
    assert {e.job: e.status for e in events if isinstance(e, protocol.Done)} == {
        "job-1": "ok", "load-2": "ok", "bye": "ok"}, events
    call = resolved[0]
    spec, budget_spec = specs
    assert (spec.vram_budget_gib, budget_spec.low_vram, budget_spec.vram_budget_gib) == (None, False, 6.5)
    arrived = {
        "source": call["source"], "revision": call["revision"], "token": call["token"],
        "offline": call["offline"], "cache_dir": call["cache_dir"],
        "image_encoder": call[weights.DINOV3_REPO],
        "background_remover": call[weights.RMBG_REPO],
        "sparse_structure_decoder": call[weights.SS_DECODER_REPO],
        "background_removal": spec.background_removal, "allow_model_code": spec.allow_model_code,
        "low_vram": spec.low_vram, "commercial_safe": spec.commercial_safe}
    assert arrived == values


def test_every_field_of_check_access_reaches_the_access_check(monkeypatch, tmp_path):
    from backend.pipeline import weights
    from tests.server.test_weights_requests import _serve

    asked = []

    def check_access(source, config, overrides):
        asked.append({"source": source, "token": config.token, "offline": config.offline,
                      "cache_dir": str(config.cache_dir), **overrides})
        return []

    monkeypatch.setattr(weights, "check_access", check_access)
    values = {"source": "someone/model", "image_encoder": "/dino", "sparse_structure_decoder": "/ssdec",
              "background_remover": "/rmbg", "background_removal": "rmbg", "token": "hf_x", "offline": True,
              "cache_dir": str(tmp_path / "cache")}
    defaults = leaf_fields(protocol.CheckAccess)
    assert set(values) == set(defaults) - {"id"}
    assert [name for name, value in values.items() if value == defaults[name]] == []
    events, _ = _serve(tmp_path, received(protocol.CheckAccess, values))
    assert [e.status for e in events if isinstance(e, protocol.Done)][0] == "ok", events
    (call,) = asked
    assert {"source": call["source"], "token": call["token"], "offline": call["offline"],
            "cache_dir": call["cache_dir"], "image_encoder": call[weights.DINOV3_REPO],
            "sparse_structure_decoder": call[weights.SS_DECODER_REPO],
            "background_remover": call[weights.RMBG_REPO]} == {k: v for k, v in values.items()
                                                               if k != "background_removal"}
    # Without a local folder, choosing RMBG is what puts its repository on the list.
    asked.clear()
    _serve(tmp_path, received(protocol.CheckAccess, {**values, "background_remover": None}))
    assert asked[0][weights.RMBG_REPO] == weights.RMBG_REPO
    asked.clear()
    _serve(tmp_path, received(protocol.CheckAccess, {**values, "background_remover": None,
                                                     "background_removal": "solid"}))
    assert weights.RMBG_REPO not in asked[0]
