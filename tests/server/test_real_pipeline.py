"""The default generator factory: the real TRELLIS.2 pipeline behind the protocol.

While ``backend.pipeline.generator`` does not exist, ``load`` must fail with a clear
``pipeline_unavailable`` error and the server must stay up. Once it exists, a generate and a
retexture job run through the protocol on the tiny random-weight checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.server.generators import DEFAULT_GENERATOR
from tests.fixtures.tiny_checkpoint import tiny_checkpoint  # noqa: F401 - a fixture
from tests.server.conftest import make_client
from trellis2_blender import protocol as p


@pytest.mark.slow
def test_real_generate_then_retexture_on_the_tiny_checkpoint(tmp_path: Path, tiny_checkpoint: Path) -> None:  # noqa: F811
    from tests.fixtures.images import rgba_transparent

    image = rgba_transparent(tmp_path / "input.png", size=64)
    client = make_client(tmp_path, DEFAULT_GENERATOR)
    client.start()
    try:
        events = client.wait(client.load(str(tiny_checkpoint)), 120)
        assert events[-1].status == "ok", events
        few = p.Sampler(steps=2)
        small = p.Export(texture_size=64, faces=2000)
        events = client.wait(client.generate([str(image)], str(tmp_path / "gen"), pipeline_type="512",
                                             sparse_structure=few, shape=few, texture=few, export=small), 180)
        assert events[-1].status == "ok", events
        (result,) = [e for e in events if isinstance(e, p.Result)]
        asset = result.assets[0]
        assert asset.faces > 0 and any(Path(f).is_file() for f in (asset.glb, asset.direct) if f)
        assert any(isinstance(e, p.ProgressEvent) for e in events)

        mesh = asset.glb or asset.direct
        events = client.wait(client.retexture(mesh, str(image), str(tmp_path / "tex"), resolution=512,
                                              texture=few, export=small), 180)
        assert events[-1].status == "ok", events
        (result,) = [e for e in events if isinstance(e, p.Result)]
        assert all(Path(f).is_file() for a in result.assets for f in (a.glb, a.direct) if f)
    finally:
        client.stop()
        client.kill()


@pytest.mark.slow
def test_background_removal_is_chosen_at_load(tmp_path: Path, tiny_checkpoint: Path) -> None:  # noqa: F811
    from tests.fixtures.images import rgb_on_white

    image = rgb_on_white(tmp_path / "on_white.png", size=64)
    few = p.Sampler(steps=2)
    job = dict(pipeline_type="512", sparse_structure=few, shape=few, texture=few,
               export=p.Export(texture_size=64, faces=2000))
    client = make_client(tmp_path, DEFAULT_GENERATOR)
    client.start()
    try:
        with pytest.raises(p.ProtocolError, match="none, solid, rmbg") as refused:  # checked before sending
            client.load(str(tiny_checkpoint), background_removal="magic")
        assert refused.value.code == "invalid_request"
        # RMBG-2.0 chosen, offline and not cached: a clear error before anything loads.
        rmbg = dict(background_removal="rmbg", allow_model_code=True)
        (err,) = [e for e in client.wait(client.load(str(tiny_checkpoint), **rmbg), 60)
                  if isinstance(e, p.Error)]
        assert err.code == "model_unavailable" and "RMBG-2.0" in err.message + err.hint, err
        # "none": a picture without transparency is refused, and the hint names the setting.
        loaded = client.wait(client.load(str(tiny_checkpoint), background_removal="none"), 120)
        assert loaded[-1].status == "ok", loaded
        events = client.wait(client.generate([str(image)], str(tmp_path / "none"), **job), 120)
        (err,) = [e for e in events if isinstance(e, p.Error)]
        assert "no transparency" in err.message and "Background Removal" in err.hint
        # "solid", the contract's default: the plain-background keyer cuts the object out and the job runs.
        assert p.Load(id="l", source="s").background_removal == p.DEFAULT_BACKGROUND_REMOVAL == "solid"
        loaded = client.wait(client.load(str(tiny_checkpoint)), 120)
        assert loaded[-1].status == "ok", loaded
        events = client.wait(client.generate([str(image)], str(tmp_path / "solid"), **job), 180)
        assert events[-1].status == "ok", events
    finally:
        client.stop()
        client.kill()
