"""The six trainers on CPU with the tiny configs: learning, exact resume, crash recovery, errors,
export, release assembly (and generation from it), logs and loss plots.

Data: three thin textured boxes (2-4k voxels at resolution 64, 2 views of 64 px), prepared once
per module (:mod:`tests.train.training_data`), with latents from two-step tiny VAEs.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from backend.train.config import ConfigError, parse_config
from backend.train.datasets import DataError, StepPlan
from tests.train.training_data import (
    ENCODER_PRETRAINING,
    FLOWS,
    OBJECTS,
    ROOT,
    TINY,
    VAES,
    TrainingData,
    build_training_data,
    make_trainer,
    tiny_config,
    tiny_config_dict,
)

pytestmark = pytest.mark.slow
ALL = VAES + FLOWS


@pytest.fixture(scope="module")
def tdata(tmp_path_factory) -> TrainingData:
    return build_training_data(tmp_path_factory.mktemp("training"))


@pytest.fixture(scope="module")
def flow_runs(tdata, tmp_path_factory) -> Path:
    """runs/<flow> of two-step tiny flow trainings (the VAE runs are ``tdata.runs``)."""
    runs = tmp_path_factory.mktemp("flow_runs")
    for name in FLOWS:
        make_trainer(name, runs / name, tdata).run(max_steps=2)
    return runs


def _run_dir(name: str, tdata: TrainingData, flow_runs: Path) -> Path:
    return (tdata.runs if name in VAES else flow_runs) / name


def _fixed_batch(trainer) -> dict:
    """Every training item in one micro-batch (step 0's condition views), on the trainer's device."""
    return trainer._to_device(trainer.dataset.collate(list(range(len(trainer.dataset))), 0))


def _fixed_loss(trainer, batch, seeds=(101, 102, 103, 104)) -> float:
    """The objective on ``batch`` averaged over fixed noise draws; leaves the global RNG untouched."""
    losses = []
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        for seed in seeds:
            torch.manual_seed(seed)
            loss, _ = trainer.objective(batch)
            losses.append(float(loss))
    return float(np.mean(losses))


# ----------------------------------------------------------------------------------- 1. learning
@pytest.mark.parametrize("name", [*ALL, ENCODER_PRETRAINING])
def test_training_lowers_the_loss_on_a_fixed_batch(name, tdata, tmp_path):
    # The flows start from a zero output layer; a higher lr shows their learning within 8 steps.
    lr = 3e-3 if name in FLOWS else 1e-3
    trainer = make_trainer(name, tmp_path / name, tdata, max_steps=8, i_save=1000, optimizer={"lr": lr})
    batch = _fixed_batch(trainer)
    before = _fixed_loss(trainer, batch)
    assert _fixed_loss(trainer, batch) == before  # the measurement itself is deterministic
    trainer.run()
    assert trainer.step == 8
    after = _fixed_loss(trainer, batch)
    assert np.isfinite(before) and after < 0.95 * before, (name, before, after)


def test_texture_vae_with_rendered_losses_lowers_them_on_a_fixed_batch(tdata, tmp_path):
    trainer = make_trainer("tex_vae", tmp_path / "tex_vae", tdata, max_steps=8, i_save=1000,
                           optimizer={"lr": 1e-3}, lambda_render=1.0, lambda_ssim=0.2, render_resolution=24)
    assert trainer.objective.rendered is not None
    batch = _fixed_batch(trainer)

    def rendered() -> float:
        """The unweighted rendered terms, averaged over fixed camera and posterior draws."""
        total = 0.0
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            for seed in (101, 102, 103, 104):
                torch.manual_seed(seed)
                _, logs = trainer.objective(batch)
                total += logs["render_base_color_ssim"] + logs["render_material_ssim"]
        return total / 4

    before, before_rendered = _fixed_loss(trainer, batch), rendered()
    assert _fixed_loss(trainer, batch) == before and before_rendered > 0
    trainer.run()
    rows = [json.loads(line) for line in (tmp_path / "tex_vae" / "log.jsonl").read_text().splitlines()]
    assert {"render_base_color_ssim", "render_material_ssim"} <= set(rows[-1])
    after, after_rendered = _fixed_loss(trainer, batch), rendered()
    assert np.isfinite(before) and after < 0.95 * before, (before, after)
    assert after_rendered < 0.95 * before_rendered, (before_rendered, after_rendered)


# ----------------------------------------------------------------------------------- 2. exact resume
def _state(trainer) -> dict:
    return {
        "nets": {k: net.state_dict() for k, net in trainer.nets.items()},
        "ema": trainer.ema,
        "optimizer": trainer.optimizer.state_dict(),
        "clipper": trainer.clipper.state_dict(),
        "step": trainer.step,
    }


def _assert_identical(a, b, where="state") -> None:
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _assert_identical(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _log_rows(run: Path) -> list[dict]:
    timing = {"samples_per_s", "elapsed_s"}
    return [{k: v for k, v in json.loads(line).items() if k not in timing}
            for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name", ["shape_vae", "tex_flow"])
def test_resume_is_bit_identical_and_exports_load(name, tdata, tmp_path):
    from backend.models.loading import load_model

    a = make_trainer(name, tmp_path / "a", tdata)
    a.run(max_steps=3)
    b = make_trainer(name, tmp_path / "b", tdata)
    b.run(max_steps=2)
    assert [p.name for p in sorted((tmp_path / "b" / "ckpts").glob("*.pt"))] == ["step_0000002.pt"]
    resumed = make_trainer(name, tmp_path / "b", tdata, resume=True)
    assert resumed.step == 2
    resumed.run(max_steps=3)
    assert resumed.step == a.step == 3
    _assert_identical(_state(a), _state(resumed))
    assert _log_rows(tmp_path / "a") == _log_rows(tmp_path / "b")  # same losses and norms at every step
    # An untrained trainer (same seed) differs: the comparison above is not vacuous.
    fresh = make_trainer(name, tmp_path / "c", tdata)
    assert any(not torch.equal(t, a.nets[k].state_dict()[n])
               for k, net in fresh.nets.items() for n, t in net.state_dict().items())

    out = tmp_path / "a"
    ckpts = sorted(p.name for p in (out / "ckpts").glob("*"))
    assert ckpts == ["step_0000002.pt", "step_0000003.pt"]  # i_save 2, keep 2, plus the final one
    assert json.loads((out / "done.json").read_text()) == {"step": 3}
    assert json.loads((out / "config.json").read_text()) == tiny_config(name).to_json()
    for key, stem in a.loop.release_names.items():
        assert (out / "export" / f"{stem}.json").is_file()
        doc = json.loads((out / "export" / f"{stem}.json").read_text())
        assert doc == {"name": a.config.models[key].name, "args": a.config.models[key].args}
        stored = load_file(str(out / "export" / f"{stem}.safetensors"))
        # A flat export folder: load by stem (strict: every key present, every shape right).
        model = load_model(out / "export" / stem)
        loaded = model.state_dict()
        low = torch.bfloat16 if name.endswith("_flow") else torch.float16
        dtypes = {str(t.dtype) for k, t in stored.items() if k.startswith("blocks.")}
        assert str(low) in dtypes
        exported = a.export_state()[key]  # the EMA weights (a scale folded in for the SS VAE)
        for k, t in stored.items():
            ema = exported[k]
            assert torch.equal(t, ema.to(t.dtype)), k  # the EMA weights, in the stored dtype
            assert loaded[k].dtype == t.dtype and torch.equal(loaded[k], t), k
            if t.dtype == low:
                assert k.startswith(("blocks.", "middle_block.")), k
            elif not k.startswith("blocks."):
                assert t.dtype == torch.float32, k


def test_a_cosine_learning_rate_reaches_the_optimizer_and_resumes_exactly(tdata, tmp_path):
    schedule = {"name": "cosine", "steps": 3, "final_ratio": 0.25}
    a = make_trainer("ss_flow", tmp_path / "a", tdata, lr_schedule=schedule)
    base = a.loop.optimizer.lr
    a.run(max_steps=3)
    # Steps 0, 1, 2 update at cos-interpolated rates: 1, (1 + 0.25) / 2 ... of the config's lr.
    expected = [base * (0.25 + 0.75 * 0.5 * (1 + np.cos(np.pi * s / 3))) for s in range(3)]
    assert [r["lr"] for r in _log_rows(tmp_path / "a")] == pytest.approx(expected, rel=1e-12)
    assert a.optimizer.param_groups[0]["lr"] == pytest.approx(expected[-1], rel=1e-12)
    b = make_trainer("ss_flow", tmp_path / "b", tdata, lr_schedule=schedule)
    b.run(max_steps=2)
    resumed = make_trainer("ss_flow", tmp_path / "b", tdata, resume=True, lr_schedule=schedule)
    resumed.run(max_steps=3)
    _assert_identical(_state(a), _state(resumed))
    # The same run at a constant rate ends elsewhere: the schedule changed the updates.
    constant = make_trainer("ss_flow", tmp_path / "c", tdata)
    constant.run(max_steps=3)
    assert any(not torch.equal(t, a.nets[k].state_dict()[n])
               for k, net in constant.nets.items() for n, t in net.state_dict().items())


def test_learning_rate_schedules():
    from backend.train.config import LrScheduleArgs

    assert [LrScheduleArgs().factor(s) for s in (0, 10, 10**6)] == [1.0, 1.0, 1.0]
    cosine = LrScheduleArgs(name="cosine", steps=100, final_ratio=0.1)
    assert cosine.factor(0) == 1.0
    assert cosine.factor(50) == pytest.approx(0.55)
    assert cosine.factor(100) == cosine.factor(5000) == pytest.approx(0.1)
    factors = [cosine.factor(s) for s in range(101)]
    assert all(x > y for x, y in zip(factors, factors[1:]))


def test_the_ss_vae_exports_unit_scale_latents_with_the_same_reconstruction(tdata, tmp_path):
    from backend.models.loading import load_model
    from backend.models.ss_decoder import SparseStructureDecoder
    from backend.models.ss_encoder import SparseStructureEncoder

    trainer = make_trainer("ss_vae", tmp_path / "run", tdata)
    assert trainer.objective_args.standardize_latents  # on in the tiny and mini configs
    trainer.run(max_steps=2)
    occ = trainer.dataset.collate(list(range(len(trainer.dataset))), 0)["occupancy"]
    names = trainer.loop.release_names
    exported_enc = load_model(tmp_path / "run" / "export" / names["encoder"]).float().eval()
    exported_dec = load_model(tmp_path / "run" / "export" / names["decoder"]).float().eval()
    models = trainer.config.models
    raw_enc = SparseStructureEncoder(**{**models["encoder"].args, "dtype": "float32"}).eval()
    raw_dec = SparseStructureDecoder(**{**models["decoder"].args, "dtype": "float32"}).eval()
    raw_enc.load_state_dict({k: t.float() for k, t in trainer.ema["encoder"].items()})
    raw_dec.load_state_dict({k: t.float() for k, t in trainer.ema["decoder"].items()})
    with torch.no_grad():
        raw_mean = raw_enc(occ)
        mean = exported_enc(occ)
        raw_logits, logits = raw_dec(raw_mean), exported_dec(mean)
    scale = torch.tensor(json.loads((tmp_path / "run" / "latent_scale.json").read_text())["rms"])
    assert scale.shape == (raw_mean.shape[1],)
    assert not torch.allclose(scale, torch.ones_like(scale), rtol=0.1)  # a two-step VAE is far from unit
    rms = mean.square().mean(dim=(0, 2, 3, 4)).sqrt()
    torch.testing.assert_close(rms, torch.ones_like(rms), rtol=2e-2, atol=0)  # fp16 blocks as stored
    torch.testing.assert_close(logits, raw_logits, rtol=2e-2, atol=2e-2)
    assert ((logits > 0) == (raw_logits > 0)).float().mean() > 0.999


def test_a_flow_that_trains_its_image_encoder_resumes_exactly_and_exports_it(tdata, tmp_path):
    from backend.pipeline.conditioning import dinov3_tokens
    from backend.train.conditioning import load_image_encoder

    a = make_trainer("ss_flow", tmp_path / "a", tdata, train_image_encoder=True)
    assert set(a.nets) == {"denoiser", "image_encoder"} and a.condition.pixels
    frozen = load_image_encoder(tdata.image_encoder, "cpu").model
    a.run(max_steps=3)
    b = make_trainer("ss_flow", tmp_path / "b", tdata, train_image_encoder=True)
    b.run(max_steps=2)
    resumed = make_trainer("ss_flow", tmp_path / "b", tdata, train_image_encoder=True, resume=True)
    resumed.run(max_steps=3)
    _assert_identical(_state(a), _state(resumed))
    trained = a.nets["image_encoder"].state_dict()
    assert any(not torch.equal(t.float(), trained[k]) for k, t in frozen.state_dict().items())

    stored = load_file(str(tmp_path / "a" / "export" / "image_encoder" / "model.safetensors"))
    assert {t.dtype for t in stored.values()} == {torch.float16}
    exported = load_image_encoder(tmp_path / "a" / "export" / "image_encoder", "cpu").model
    loaded = exported.state_dict()
    assert set(loaded) == set(a.ema["image_encoder"])
    for k, t in a.ema["image_encoder"].items():
        assert torch.equal(loaded[k], t.half().float()), k  # the EMA weights, stored in fp16
    # The exported encoder is what the flow trained with: its tokens match the EMA weights' tokens.
    batch = _fixed_batch(a)
    ema_model = type(frozen)(frozen.config)
    ema_model.load_state_dict(a.ema["image_encoder"])
    with torch.no_grad():
        want = dinov3_tokens(ema_model.eval(), batch["pixels"])
        got = dinov3_tokens(exported, batch["pixels"])
    torch.testing.assert_close(got, want, atol=2e-2, rtol=0)


def test_encoder_pretraining_predicts_occupancy_and_exports_an_encoder_the_flows_read(tdata, tmp_path):
    from backend.train.conditioning import load_image_encoder
    from backend.train.structure_eval import pooled_occupancy

    a = make_trainer(ENCODER_PRETRAINING, tmp_path / "a", tdata, max_steps=3)
    assert set(a.nets) == {"probe", "image_encoder"} and a.condition.pixels
    batch = _fixed_batch(a)
    grid = a.dataset.args.grid
    for row, record in zip(batch["occupancy"], a.dataset.records):
        with np.load(tdata.data / "ss_occupancy" / f"{record['id']}.npz") as npz:
            want = pooled_occupancy(npz["cells"], grid)
        assert row.shape == (grid,) * 3 and torch.equal(row.bool(), torch.from_numpy(want))
    a.objective.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        jittered = a.objective._jitter(batch["pixels"])
    assert not torch.equal(jittered, batch["pixels"])
    a.objective.eval()
    assert torch.equal(a.objective._jitter(batch["pixels"]), batch["pixels"])  # no jitter outside training

    a.run()
    b = make_trainer(ENCODER_PRETRAINING, tmp_path / "b", tdata, max_steps=2)
    b.run()
    resumed = make_trainer(ENCODER_PRETRAINING, tmp_path / "b", tdata, max_steps=3, resume=True)
    resumed.run()
    _assert_identical(_state(a), _state(resumed))

    exported = tmp_path / "a" / "export" / "image_encoder"
    loaded = load_image_encoder(exported, "cpu").model.state_dict()
    assert set(loaded) == set(a.ema["image_encoder"])
    for k, t in a.ema["image_encoder"].items():
        assert torch.equal(loaded[k], t.half().float()), k
    assert [p.name for p in (tmp_path / "a" / "export").iterdir()] == ["image_encoder"]  # the probe stays

    # A flow given the pretrained encoder reads its tokens, not the seed encoder's.
    from backend.train.trainer import Trainer

    frozen = tiny_config("ss_flow", train_image_encoder=False)  # a token cache, not pixels
    flow = Trainer(frozen, tmp_path / "flow", tdata.data, device="cpu", image_encoder=str(exported))
    seed_flow = make_trainer("ss_flow", tmp_path / "seed_flow", tdata, config=frozen)
    assert flow.condition.store.shape == seed_flow.condition.store.shape
    assert not torch.allclose(flow.condition.store.float(), seed_flow.condition.store.float(), atol=1e-2)


def test_only_image_conditioned_trainers_train_an_image_encoder(tdata, tmp_path):
    with pytest.raises(ConfigError, match="train_image_encoder"):
        make_trainer("ss_vae", tmp_path / "v", tdata, train_image_encoder=True)


# ----------------------------------------------------------------------------------- 4. crash recovery
def test_crash_loses_only_the_steps_since_the_last_checkpoint(tdata, tmp_path):
    name = "ss_flow"
    reference = make_trainer(name, tmp_path / "ref", tdata)
    seen_ref = _record_batches(reference)
    reference.run()  # the config's 4 steps; checkpoint at 2
    assert reference.step == 4

    crashing = make_trainer(name, tmp_path / "run", tdata)
    seen = _record_batches(crashing, fail_at=3)
    with pytest.raises(RuntimeError, match="power cut"):
        crashing.run()
    assert crashing.step == 3  # steps 0..2 ran; step 3's data was never delivered
    assert [p.name for p in (tmp_path / "run" / "ckpts").glob("*.pt")] == ["step_0000002.pt"]

    resumed = make_trainer(name, tmp_path / "run", tdata, resume=True)
    assert resumed.step == 2  # the third step (index 2) is lost and redone
    seen_resumed = _record_batches(resumed)
    resumed.run()
    assert resumed.step == 4
    assert seen == seen_ref[:3]  # the same data before the crash ...
    assert seen_resumed == seen_ref[2:]  # ... and after it, from the checkpoint's step on
    _assert_identical(_state(reference), _state(resumed))


def _record_batches(trainer, fail_at: int | None = None) -> list:
    """Wrap the dataset's collate: record ``(step, items, views)``; raise when ``fail_at`` is reached."""
    seen = []
    collate = trainer.dataset.collate

    def wrapped(items, step):
        if step == fail_at:
            raise RuntimeError(f"power cut at step {step}")
        batch = collate(items, step)
        seen.append((step, list(items), batch["view"].tolist()))
        return batch

    trainer.dataset.collate = wrapped
    return seen


def test_step_plan_is_a_pure_function_of_the_step():
    plan = StepPlan(num_items=7, batch_size=2, world_size=3, rank=1, seed=5)
    forward = [plan.items(s) for s in range(12)]
    backward = [StepPlan(7, 2, 3, 1, 5).items(s) for s in reversed(range(12))][::-1]
    assert forward == backward  # no state: order of calls and fresh instances do not matter
    other_seed = StepPlan(7, 2, 3, 1, 6)
    assert [other_seed.items(s) for s in range(12)] != forward
    for num_items, batch, world in [(12, 2, 3), (7, 2, 3), (5, 1, 2), (3, 2, 1)]:
        window = batch * world
        steps = num_items * window  # a whole number of epochs and of windows
        per_rank = [[StepPlan(num_items, batch, world, r, 0).items(s) for s in range(steps)]
                    for r in range(world)]
        stream = []  # the global order: rank r took positions start + r, start + r + world, ...
        for s in range(steps):
            slots = [None] * window
            for r in range(world):
                assert len(per_rank[r][s]) == batch
                slots[r::world] = per_rank[r][s]
            stream += slots
        epochs = [stream[e * num_items:(e + 1) * num_items] for e in range(len(stream) // num_items)]
        for epoch in epochs:
            assert sorted(epoch) == list(range(num_items))  # every item exactly once per epoch
        if num_items > 2:
            assert len({tuple(e) for e in epochs}) > 1  # reshuffled between epochs
        for s in range(num_items // window):  # inside one epoch, ranks never share an item
            flat = [i for r in range(world) for i in per_rank[r][s]]
            assert len(set(flat)) == len(flat)


# ----------------------------------------------------------------------------------- 3. errors
def _config_with(name: str, edit) -> dict:
    raw = json.loads(json.dumps(tiny_config_dict(name)))
    edit(raw)
    return raw


@pytest.mark.parametrize("edit, match", [
    (lambda c: c.update(trainerz={}), r"x\.json: unknown key 'trainerz'"),
    (lambda c: c["models"]["denoiser"].update(name="SLatFlowModelz"),
     r"x\.json: models\.denoiser\.name: unknown model 'SLatFlowModelz'"),
    (lambda c: c["models"]["denoiser"].pop("args"), r"x\.json: models\.denoiser: missing key 'args'"),
    (lambda c: c["dataset"].update(argz={}), r"x\.json: dataset: unknown key 'argz'"),
])
def test_config_structure_errors_name_the_file_and_key(edit, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(_config_with("shape_flow", edit), "x.json")


@pytest.mark.parametrize("name, edit, match", [
    ("shape_flow", lambda c: c["trainer"]["args"].update(max_stepz=3),
     r"x\.json: trainer\.args: unknown key 'max_stepz'"),
    ("ss_vae", lambda c: c["trainer"]["args"]["optimizer"].update(lr="fast"),
     r"x\.json: trainer\.args\.optimizer\.lr: expected a number"),
    ("tex_vae", lambda c: c["trainer"]["args"].update(batch_size_per_gpu=0), r"x\.json: trainer\.args: "),
    ("ss_flow", lambda c: c["trainer"]["args"].update(lr_schedule={"name": "cosine"}),
     r"x\.json: trainer\.args\.lr_schedule: a cosine schedule needs steps >= 1"),
    ("ss_flow", lambda c: c["trainer"]["args"].update(lr_schedule={"name": "linear", "steps": 5}),
     r"x\.json: trainer\.args\.lr_schedule: name must be one of constant, cosine"),
    ("shape_flow", lambda c: c["trainer"].update(name="FlowTrainerz"),
     r"x\.json: trainer\.name: unknown trainer 'FlowTrainerz'"),
    ("shape_flow", lambda c: c["dataset"].update(name="Latentz"), r"x\.json: dataset\.name: unknown dataset"),
    ("shape_flow", lambda c: c["dataset"]["args"].update(max_tokenz=1),
     r"x\.json: dataset\.args: unknown key 'max_tokenz'"),
    ("shape_flow", lambda c: c["models"]["denoiser"]["args"].update(num_blockz=2),
     r"x\.json: models\.denoiser\.args: .*num_blockz"),
    ("shape_flow", lambda c: c["models"]["denoiser"]["args"].update(num_heads=3),
     r"x\.json: models\.denoiser\.args: .*divisible"),
    ("tex_vae", lambda c: c["models"]["decoder"]["args"].update(model_channels=[32, 16]),
     r"x\.json: models\.decoder\.args: "),
    ("ss_vae", lambda c: c["trainer"]["args"]["release_names"].update(denoiser="x"),
     r"release_names names no model 'denoiser'"),
])
def test_trainer_config_errors_name_the_file_and_key(name, edit, match, tdata, tmp_path):
    config = parse_config(_config_with(name, edit), "x.json")
    with pytest.raises(ConfigError, match=match):
        make_trainer(name, tmp_path / "run", tdata, config=config)
    assert not (tmp_path / "run").exists()  # nothing written for a run that cannot start


def test_data_folder_errors_name_the_path(tdata, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = TrainingData(empty, tdata.image_encoder, tdata.runs)
    with pytest.raises(DataError, match=rf"{empty}/metadata\.jsonl: no metadata\.jsonl"):
        make_trainer("ss_vae", tmp_path / "run", bad)
    failed = {"id": "a", "status": "failed", "split": "train"}
    (empty / "metadata.jsonl").write_text(json.dumps(failed) + "\n")
    with pytest.raises(DataError, match=rf"{empty}: no usable training items"):
        make_trainer("shape_vae", tmp_path / "run", bad)
    # Latents named by the config that were never encoded:
    config = _config_with("shape_flow",
                          lambda c: c["dataset"]["args"].update(shape_latent="shape_latents/nope"))
    with pytest.raises(DataError,
                       match=r"shape_latents/nope: no such latent folder \(dataset\.args\.shape_latent\)"):
        make_trainer("shape_flow", tmp_path / "run", tdata, config=parse_config(config, "x.json"))


def test_resume_errors(tdata, tmp_path):
    with pytest.raises(ConfigError, match=rf"--resume: no checkpoint in {tmp_path}/run/ckpts"):
        make_trainer("tex_vae", tmp_path / "run", tdata, resume=True)
    make_trainer("tex_vae", tmp_path / "run", tdata).run(max_steps=1)
    with pytest.raises(ConfigError, match=r"already holds checkpoints: pass --resume"):
        make_trainer("tex_vae", tmp_path / "run", tdata)
    wider = _config_with("tex_vae", lambda c: c["models"]["decoder"]["args"].update(
        model_channels=[32, 16, 16, 8, 16]))
    with pytest.raises(ConfigError, match=rf"{tmp_path}/run/ckpts/step_0000001\.pt: model 'decoder' does not "
                                          "match the config"):
        make_trainer("tex_vae", tmp_path / "run", tdata, resume=True, config=parse_config(wider, "x.json"))


def test_a_new_run_fine_tunes_from_an_exported_checkpoint(tdata, flow_runs, tmp_path):
    export = flow_runs / "shape_flow" / "export"
    stem = export / json.loads((flow_runs / "shape_flow" / "config.json").read_text())["trainer"]["args"][
        "release_names"]["denoiser"]
    stored = load_file(f"{stem}.safetensors")
    scratch = make_trainer("shape_flow", tmp_path / "scratch", tdata)
    tuned = make_trainer("shape_flow", tmp_path / "tuned", tdata, finetune_ckpt={"denoiser": str(stem)})
    weights = tuned.nets["denoiser"].state_dict()
    assert set(stored) <= set(weights)
    for key, value in stored.items():  # bf16/fp16 file tensors, cast into the fp32 training weights
        assert weights[key].dtype == torch.float32
        assert torch.equal(weights[key], value.float()), key
        assert torch.equal(tuned.ema["denoiser"][key], weights[key])  # the EMA starts from them too
    assert any(not torch.equal(scratch.nets["denoiser"].state_dict()[k], weights[k]) for k in stored)
    tuned.run(max_steps=2)
    assert tuned.step == 2 and not tuned.optimizer.state_dict()["state"] == {}
    # Resuming reads the run's own checkpoint: the fine-tune source is not loaded again.
    resumed = make_trainer("shape_flow", tmp_path / "tuned", tdata, resume=True,
                           finetune_ckpt={"denoiser": str(tmp_path / "missing")})
    _assert_identical(_state(resumed), _state(tuned))


def test_init_from_a_release_starts_the_networks_it_holds(tdata, tmp_path):
    run = tdata.runs / "shape_vae"
    names = json.loads((run / "config.json").read_text())["trainer"]["args"]["release_names"]
    release = tmp_path / "release"
    (release / "ckpts").mkdir(parents=True)
    for suffix in (".json", ".safetensors"):  # a release with the decoder only, as a shipped one may be
        shutil.copy(run / "export" / f"{names['decoder']}{suffix}", release / "ckpts")
    stored = load_file(str(release / "ckpts" / f"{names['decoder']}.safetensors"))
    scratch = make_trainer("shape_vae", tmp_path / "scratch", tdata)
    started = make_trainer("shape_vae", tmp_path / "started", tdata, init_from=release)
    decoder = started.nets["decoder"].state_dict()
    assert all(torch.equal(decoder[k], v.float()) for k, v in stored.items())
    assert any(not torch.equal(scratch.nets["decoder"].state_dict()[k], decoder[k]) for k in stored)
    encoder, fresh = started.nets["encoder"].state_dict(), scratch.nets["encoder"].state_dict()
    assert all(torch.equal(encoder[k], fresh[k]) for k in fresh)  # not in the release: its initialisation
    listed = rf"\({names['encoder']}\.json, {names['decoder']}\.json\)"
    with pytest.raises(ConfigError, match=rf"--init-from: {tmp_path}/empty/ckpts has none of this run's "
                                          rf"networks {listed}"):
        make_trainer("shape_vae", tmp_path / "other", tdata, init_from=tmp_path / "empty")


def test_the_init_from_flag_reaches_the_trainer(tmp_path, monkeypatch):
    from backend.train import __main__ as cli
    from backend.train import trainer as trainer_module

    seen = {}

    class Stop(Exception):
        pass

    def fake_trainer(*args, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(trainer_module, "Trainer", fake_trainer)
    config = tmp_path / "c.json"
    config.write_text(json.dumps(tiny_config_dict("shape_flow")))
    with pytest.raises(Stop):
        cli.main(["--config", str(config), "--output", str(tmp_path / "o"), "--data", str(tmp_path),
                  "--device", "cpu", "--init-from", str(tmp_path / "rel")])
    assert seen["init_from"] == tmp_path / "rel" and seen["resume"] is False


@pytest.mark.parametrize("source, match", [
    ("missing", r"finetune_ckpt\.denoiser: .*missing\.json / \.safetensors: checkpoint not found"),
    ("weights.pt", r"finetune_ckpt\.denoiser: .*weights\.pt: pickle-based checkpoints .* are refused"),
    ("ss_flow", r"finetune_ckpt\.denoiser: .*a SparseStructureFlowModel checkpoint, but the model is "
                "SLatFlowModel"),
    ("tex_flow", r"(?s)finetune_ckpt\.denoiser: .*does not match SLatFlowModel .*wrong shape for "
                 r"input_layer\.weight: file \[64, 64\], model \[64, 32\]"),
])
def test_fine_tune_errors_name_the_setting_and_the_file(source, match, tdata, flow_runs, tmp_path):
    if source in FLOWS:
        config = json.loads((flow_runs / source / "config.json").read_text())
        source = str(flow_runs / source / "export" / config["trainer"]["args"]["release_names"]["denoiser"])
    else:
        source = str(tmp_path / source)
    with pytest.raises(ConfigError, match=match):
        make_trainer("shape_flow", tmp_path / "run", tdata, finetune_ckpt={"denoiser": source})
    with pytest.raises(ConfigError, match=r"trainer\.args\.finetune_ckpt names no model 'decoder'"):
        make_trainer("shape_flow", tmp_path / "run", tdata, finetune_ckpt={"decoder": source})
    assert not (tmp_path / "run").exists()


def test_cli_reports_bad_input_with_exit_code_2(tdata, tmp_path, capsys):
    from backend.train.__main__ import main

    config = tmp_path / "bad.json"
    config.write_text(json.dumps(_config_with("ss_vae", lambda c: c["trainer"]["args"].update(max_stepz=3))))
    common = ["--output", str(tmp_path / "out"), "--device", "cpu"]
    assert main(["--config", str(config), "--data", str(tdata.data), *common]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"{config}: trainer.args: unknown key 'max_stepz'" in err
    assert err.count("\n") == 1  # one line, no traceback

    good = tmp_path / "good.json"
    good.write_text(json.dumps(tiny_config_dict("ss_vae")))
    assert main(["--config", str(good), "--data", str(tmp_path / "nowhere"), *common]) == 2
    assert f"error: {tmp_path}/nowhere/metadata.jsonl: no metadata.jsonl" in capsys.readouterr().err

    assert main(["--config", str(tmp_path / "missing.json"), "--data", str(tdata.data), *common]) == 2
    assert f"error: {tmp_path}/missing.json: no such config file" in capsys.readouterr().err

    assert main(["--config", str(good), "--data", str(tdata.data), "--resume", *common]) == 2
    assert "--resume: no checkpoint in" in capsys.readouterr().err

    # A real run through the CLI, then the same command again without --resume.
    assert main(["--config", str(good), "--data", str(tdata.data), "--max-steps", "1", *common]) == 0
    assert (tmp_path / "out" / "ckpts" / "step_0000001.pt").is_file()
    assert main(["--config", str(good), "--data", str(tdata.data), *common]) == 2
    assert "already holds checkpoints: pass --resume" in capsys.readouterr().err


def test_condition_gap_measures_how_much_a_flow_reads_its_picture(tdata, tmp_path):
    trainer = make_trainer("shape_flow", tmp_path / "f", tdata, max_steps=8, i_save=1000,
                           optimizer={"lr": 3e-3})
    trainer.run()
    batch = _fixed_batch(trainer)
    rng = torch.get_rng_state()
    gap = trainer.objective.condition_gap(batch)
    assert torch.equal(rng, torch.get_rng_state())  # training draws are untouched
    assert gap == trainer.objective.condition_gap(batch)  # fixed draws: comparable across steps
    assert gap["cond_loss"] > 0 and gap["cond_gap"] != 0
    # Every sample conditioned on the same picture: swapping conditions changes nothing.
    same = {**batch, "cond": batch["cond"][:1].expand_as(batch["cond"]).contiguous()}
    assert trainer.objective.condition_gap(same)["cond_gap"] == 0


# ----------------------------------------------------------------------------------- 6. logs and plots
@pytest.mark.parametrize("name", ALL)
def test_log_and_loss_plot(name, tdata, flow_runs):
    run = _run_dir(name, tdata, flow_runs)
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]  # i_log 1
    own = {
        "ss_vae": {"bce", "dice", "kl", "iou"},
        "shape_vae": {"intersected_bce", "vertex_mse", "subdiv_bce", "kl", "flag_acc", "subdiv_acc"},
        "tex_vae": {"l1", "kl", "psnr"},
    }.get(name, {"cond_loss", "cond_gap"})
    for row in rows:
        assert set(row) == {"step", "loss", "grad_norm", "clip", "lr", "samples_per_s", "elapsed_s"} | own
        assert all(np.isfinite(v) for v in row.values())
        assert row["lr"] == tiny_config_dict(name)["trainer"]["args"]["optimizer"]["lr"]  # constant schedule
        assert row["loss"] > 0 and row["grad_norm"] > 0 and row["samples_per_s"] > 0
        assert row["clip"] == 1.0  # max_norm until the clipper's buffer is full
    with Image.open(run / "loss.png") as img:
        img.verify()
    with Image.open(run / "loss.png") as img:
        assert img.format == "PNG"
        pixels = np.asarray(img.convert("RGB"))
    panels = len(own) + 2  # every logged quantity but step/timing/clip has a panel
    assert pixels.shape == (panels * 300 + 24, 900, 3)
    ink = (pixels < 250).any(-1)
    assert ink.mean() > 0.005  # axes, labels and curves, not a blank page
    colours = {tuple(c) for c in pixels[ink][::7]}
    assert len(colours) > 5  # several curve colours plus black text and grey frames
    assert json.loads((run / "done.json").read_text()) == {"step": 2}


# ----------------------------------------------------------------------------------- 5. release
def _assemble(tdata, flow_runs, out: Path) -> Path:
    from backend.train.release import assemble_release

    runs = [_run_dir(n, tdata, flow_runs) for n in ALL]
    return assemble_release(out, runs, tdata.data, tdata.image_encoder, steps=2)


def test_the_mini_family_release_fits_the_bundled_limit(tmp_path):
    # A release ships inside the repository: the networks the mini configs define, stored as a
    # release stores them, plus the mini image encoder must stay under the cap.
    from backend.train.conditioning import IMAGE_ENCODER_SIZES, write_image_encoder
    from backend.train.release import BUNDLED_RELEASE_LIMIT_BYTES, ships_in_release, stored_bytes

    configs = Path(__file__).resolve().parents[2] / "backend" / "train" / "configs" / "mini"
    networks = {}
    for path in sorted(configs.glob("*.json")):
        for spec in parse_config(json.loads(path.read_text()), str(path)).models.values():
            if ships_in_release(spec.name):
                networks[f"{path.stem}/{spec.name}"] = stored_bytes(spec.name, spec.args)
    assert sorted(networks) == [
        "shape_flow/SLatFlowModel", "shape_vae/FlexiDualGridVaeDecoder", "shape_vae/FlexiDualGridVaeEncoder",
        "ss_flow/SparseStructureFlowModel", "ss_vae/SparseStructureDecoder", "ss_vae/SparseStructureEncoder",
        "tex_flow/SLatFlowModel", "tex_vae/SparseUnetVaeDecoder",
    ]
    encoder = write_image_encoder(tmp_path / "encoder", **IMAGE_ENCODER_SIZES["mini"])
    encoder_bytes = sum(f.stat().st_size for f in encoder.rglob("*") if f.is_file())
    total = sum(networks.values()) + encoder_bytes
    json_room = 1_000_000  # pipeline.json, ckpts/*.json, the encoder's config
    assert total <= BUNDLED_RELEASE_LIMIT_BYTES - json_room, (networks, encoder_bytes)


def test_release_assembles_and_generates_a_glb(tdata, flow_runs, tmp_path, monkeypatch):
    from backend.meshio import read_gltf
    from backend.models.pipeline_config import read_pipeline_config
    from backend.pipeline.api import ExportOptions, GenerateRequest, SamplerOverrides
    from backend.pipeline.generator import Trellis2Generator
    from backend.pipeline.runtime import Runtime
    from backend.train.release import ReleaseError
    from tests.fixtures import images
    from tests.fixtures.structure import GivenStructure
    from tests.pipeline.conftest import small_shell

    release = _assemble(tdata, flow_runs, tmp_path / "release")
    monkeypatch.chdir(tmp_path)  # anywhere but the release folder
    config = read_pipeline_config(release / "pipeline.json")
    tex = read_pipeline_config(release / "texturing_pipeline.json")
    stats = json.loads((tdata.data / "latent_stats.json").read_text())
    doc = json.loads((release / "pipeline.json").read_text())
    for kind, key in (("shape", "shape_slat_normalization"), ("pbr", "tex_slat_normalization")):
        assert doc["args"][key] == {"mean": stats[kind]["mean"], "std": stats[kind]["std"]}
    assert doc["args"]["image_cond_model"]["args"]["model_name"] == "image_encoder"
    assert (release / "image_encoder" / "config.json").is_file()
    names = {**config.models, **tex.models}
    assert set(names) >= {"sparse_structure_flow_model", "sparse_structure_decoder",
                          "shape_slat_flow_model_512", "shape_slat_decoder", "tex_slat_flow_model_512",
                          "tex_slat_decoder", "shape_slat_encoder"}
    for ref in names.values():
        assert ref.startswith("ckpts/")
        assert (release / f"{ref}.json").is_file() and (release / f"{ref}.safetensors").is_file()
    assert names["shape_slat_flow_model_512"].endswith("img2shape_dit_tiny_512_bf16")
    assert names["tex_slat_flow_model_512"].endswith("imgshape2tex_dit_tiny_512_bf16")
    # The sparse-structure encoder travels beside its decoder, for training; no pipeline names it.
    ss_vae = _run_dir("ss_vae", tdata, flow_runs)
    ss_names = json.loads((ss_vae / "config.json").read_text())["trainer"]["args"]["release_names"]
    shipped = release / "ckpts" / f"{ss_names['encoder']}.safetensors"
    assert shipped.read_bytes() == (ss_vae / "export" / shipped.name).read_bytes()
    assert f"ckpts/{ss_names['encoder']}" not in names.values()

    # As `python -m backend generate --model RELEASE --offline` runs it: no dependencies mapping, so the
    # relative "image_encoder" must resolve against the release folder (not the working directory).
    runtime = Runtime(model=str(release), device="cpu", offline=True)
    # Two-step networks find a near-random sparse structure; a small shell keeps the decode cheap.
    generator = Trellis2Generator(runtime, structure=GivenStructure(lambda grid: small_shell(grid, 0.08)))
    fast = SamplerOverrides(steps=2)
    request = GenerateRequest(images=(images.rgba_transparent(tmp_path / "obj.png"),),
                              output_dir=tmp_path / "out", pipeline_type="512", seed=3, sparse_structure=fast,
                              shape=fast, texture=fast, export=ExportOptions(texture_size=64, faces=800))
    (asset,) = generator.generate(request).assets
    glb = read_gltf(asset.glb)
    assert glb.num_faces > 0 and glb.materials[0].base_color_texture is not None
    assert set(generator.store.loaded()) >= {"sparse_structure_flow_model", "sparse_structure_decoder",
                                             "shape_slat_flow_model_512", "shape_slat_decoder",
                                             "tex_slat_flow_model_512", "tex_slat_decoder"}

    # A release needs all six runs: leaving out the texture VAE is one clear error.
    partial = [_run_dir(n, tdata, flow_runs) for n in ALL if n != "tex_vae"]
    from backend.train.release import assemble_release

    with pytest.raises(ReleaseError, match="tex_slat_decoder"):
        assemble_release(tmp_path / "partial", partial, tdata.data, tdata.image_encoder)


def _altered_release(tdata, flow_runs, out: Path) -> Path:
    """A full release of the tiny runs whose weights, normalizations and sampler settings all
    differ from the runs' (so anything a later release takes from it is recognisable)."""
    from safetensors.torch import save_file

    release = _assemble(tdata, flow_runs, out)
    for weights in (release / "ckpts").glob("*.safetensors"):
        save_file({k: v * 0.5 for k, v in load_file(weights).items()}, str(weights))
    for doc_name in ("pipeline.json", "texturing_pipeline.json"):
        doc = json.loads((release / doc_name).read_text())
        for key in ("shape_slat_normalization", "tex_slat_normalization"):
            doc["args"][key]["mean"] = [m + 0.25 for m in doc["args"][key]["mean"]]
        for key in ("sparse_structure_sampler", "shape_slat_sampler", "tex_slat_sampler"):
            if key in doc["args"]:  # the texturing pipeline has the texture sampler only
                doc["args"][key]["params"]["guidance_strength"] = 5.0
        (release / doc_name).write_text(json.dumps(doc))
    return release


def test_release_takes_the_networks_the_runs_do_not_export_from_a_base(tdata, flow_runs, tmp_path):
    """Stage 1 retrained alone: its networks come from the runs, the shape/texture networks (byte
    for byte), their normalizations and the sampler settings from the base release."""
    from backend.pipeline.runtime import ModelStore, Runtime
    from backend.train.release import ReleaseError, assemble_release

    base = _altered_release(tdata, flow_runs, tmp_path / "base")
    base_doc = json.loads((base / "pipeline.json").read_text())["args"]
    stage1 = [_run_dir(n, tdata, flow_runs) for n in ("ss_vae", "ss_flow")]
    no_stats = tmp_path / "data_without_latent_stats"  # stage-1-only data has no shape/pbr latents
    no_stats.mkdir()
    release = assemble_release(tmp_path / "release", stage1, no_stats, tdata.image_encoder, steps=12,
                               base=base)
    doc = json.loads((release / "pipeline.json").read_text())["args"]
    tex_doc = json.loads((release / "texturing_pipeline.json").read_text())["args"]
    models = {**doc["models"], **tex_doc["models"]}
    assert models == {**base_doc["models"],
                      **json.loads((base / "texturing_pipeline.json").read_text())["args"]["models"]}
    for key, ref in models.items():
        new, old = (release / f"{ref}.safetensors").read_bytes(), (base / f"{ref}.safetensors").read_bytes()
        if key.startswith("sparse_structure"):
            run = _run_dir("ss_flow" if key.endswith("flow_model") else "ss_vae", tdata, flow_runs)
            assert new == (run / "export" / f"{Path(ref).name}.safetensors").read_bytes() and new != old, key
        else:
            assert new == old, key
    for key in ("shape_slat_normalization", "tex_slat_normalization"):
        assert doc[key] == tex_doc[key] == base_doc[key]
    for key in ("sparse_structure_sampler", "shape_slat_sampler", "tex_slat_sampler"):
        assert doc[key] == base_doc[key] and doc[key]["params"]["steps"] == 2  # not steps=12
    assert tex_doc["tex_slat_sampler"]["params"]["guidance_strength"] == 5.0
    store = ModelStore(Runtime(model=str(release), device="cpu", offline=True))
    store.check_checkpoints()
    store.get("sparse_structure_flow_model")

    # A new shape network takes the shape normalization from the data; the texture one stays the base's.
    shape = [_run_dir(n, tdata, flow_runs) for n in ("ss_vae", "ss_flow", "shape_vae", "shape_flow")]
    mixed = assemble_release(tmp_path / "mixed", shape, tdata.data, tdata.image_encoder, base=base)
    doc = json.loads((mixed / "pipeline.json").read_text())["args"]
    stats = json.loads((tdata.data / "latent_stats.json").read_text())
    assert doc["shape_slat_normalization"] == {"mean": stats["shape"]["mean"], "std": stats["shape"]["std"]}
    assert doc["tex_slat_normalization"] == base_doc["tex_slat_normalization"]

    # The sparse-structure encoder goes with the decoder it pairs with: the runs' when they export
    # the decoder, else the base's.
    ss_vae = _run_dir("ss_vae", tdata, flow_runs)
    encoder = json.loads((ss_vae / "config.json").read_text())["trainer"]["args"]["release_names"]["encoder"]
    encoder = f"ckpts/{encoder}.safetensors"
    assert (release / encoder).read_bytes() == (ss_vae / "export" / Path(encoder).name).read_bytes()
    flows_only = [_run_dir(n, tdata, flow_runs) for n in ("shape_flow",)]
    kept = assemble_release(tmp_path / "kept", flows_only, tdata.data, tdata.image_encoder, base=base)
    assert (kept / encoder).read_bytes() == (base / encoder).read_bytes() != (release / encoder).read_bytes()

    # Without a base the same runs are an incomplete release.
    with pytest.raises(ReleaseError, match="shape_slat_decoder"):
        assemble_release(tmp_path / "partial", stage1, no_stats, tdata.image_encoder)


def test_release_image_encoder_resolves_against_the_release_folder(tdata, flow_runs, tmp_path, monkeypatch):
    """pipeline.json names the shipped encoder ``image_encoder``, relative to the release folder, as
    ``python -m backend generate --model RELEASE`` needs it (no ``dependencies`` mapping)."""
    from backend.pipeline.runtime import ModelStore, Runtime

    release = _assemble(tdata, flow_runs, tmp_path / "release")
    monkeypatch.chdir(tmp_path)  # anywhere but the release folder
    store = ModelStore(Runtime(model=str(release), device="cpu", offline=True))
    conditioner = store.conditioner()
    assert conditioner.model.config.hidden_size == 32


def test_objects_are_small(tdata):
    """The fixture's premise: a few thousand voxels per object keeps every test here fast."""
    records = [json.loads(line) for line in (tdata.data / "metadata.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == sorted(OBJECTS)
    assert all(r["status"] == "ok" and 500 < r["num_voxels"] < 5000 for r in records)


# ----------------------------------------------------------------------------------- 7. knobs
def test_conv_backend_reaches_every_sparse_convolution(tdata, tmp_path):
    from backend.sparse.conv import ConvBackend, SparseConv3d

    trainer = make_trainer("shape_vae", tmp_path / "run", tdata, conv_backend="torch")
    convs = [m for net in trainer.nets.values() for m in net.modules() if isinstance(m, SparseConv3d)]
    assert convs and all(m.backend is ConvBackend.TORCH for m in convs)
    default = make_trainer("shape_vae", tmp_path / "run2", tdata)
    assert all(m.backend is None for net in default.nets.values() for m in net.modules()
               if isinstance(m, SparseConv3d))


def test_compiled_networks_compute_the_eager_loss_and_keep_their_weight_names(tdata, tmp_path):
    eager = make_trainer("ss_flow", tmp_path / "eager", tdata, mix_precision="fp32")
    compiled = make_trainer("ss_flow", tmp_path / "compiled", tdata, mix_precision="fp32", compile=True)
    net = compiled.nets["denoiser"]
    assert net._compiled_call_impl is not None  # the trainer's forward goes through torch.compile
    assert list(net.state_dict()) == list(eager.nets["denoiser"].state_dict())
    batch = _fixed_batch(eager)
    assert _fixed_loss(compiled, batch) == pytest.approx(_fixed_loss(eager, batch), rel=1e-5)
    compiled.run(max_steps=2)
    assert compiled.step == 2
    exported = load_file(tmp_path / "compiled" / "export" / "ss_flow_img_dit_tiny_64_bf16.safetensors")
    assert set(exported) == set(eager.nets["denoiser"].state_dict()) - {"rope_phases"}


def test_profile_steps_write_an_op_table(tdata, tmp_path):
    trainer = make_trainer("ss_vae", tmp_path / "run", tdata, max_steps=4)
    trainer.run(profile_steps=1)
    table = (tmp_path / "run" / "profile.txt").read_text()
    assert "Self CPU" in table and "aten::" in table
    assert trainer.step == 4


def test_the_same_command_trains_with_ddp_on_two_processes(tdata, tmp_path):
    """``torchrun --nproc_per_node 2`` (gloo on the CPU): both ranks train, checkpoint, and resume."""
    import subprocess
    import sys

    out = tmp_path / "ddp"
    base = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
            "-m", "backend.train", "--config", str(TINY / "ss_flow.json"), "--output", str(out),
            "--data", str(tdata.data), "--image-encoder", str(tdata.image_encoder), "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for extra in (["--max-steps", "2"], ["--resume", "--max-steps", "3"]):
        proc = subprocess.run(base + extra, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
    state = torch.load(out / "ckpts" / "step_0000003.pt", weights_only=False)
    assert state["step"] == 3 and len(state["rng"]) == 2  # every rank's RNG is saved
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])  # ranks draw different noise
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]


def test_stage_one_evaluation_scores_every_object_against_its_own_occupancy(tdata, flow_runs, tmp_path):
    from backend.train.structure_eval import STRUCTURE_GRID, evaluate_structure, pooled_occupancy

    release = _assemble(tdata, flow_runs, tmp_path / "release")
    releases = {"a": release, "b": release}
    summary = evaluate_structure(releases, tdata.data, tmp_path / "eval", split=None, limit=2, seed=5)
    out = tmp_path / "eval"
    rows = [json.loads(line) for line in (out / "structure_results.jsonl").read_text().splitlines()]
    first_two = sorted(OBJECTS)[:2]
    assert [(r["release"], r["object_id"]) for r in rows] == [(n, i) for n in "ab" for i in first_two]
    for row in rows:
        with np.load(tdata.data / "ss_occupancy" / f"{row['object_id']}.npz") as npz:
            assert row["occupied"] == int(pooled_occupancy(npz["cells"], STRUCTURE_GRID).sum()) > 0
        assert 0.0 <= row["iou"] <= row["dilated_iou"] <= 1.0
    assert rows[:2] == [{**r, "release": "a"} for r in rows[2:]]  # same release, same seed: same structures
    assert summary["a"]["objects"] == 2 and summary["a"]["failed"] == 0
    assert json.loads((out / "structure_summary.json").read_text()) == summary


def test_stage_one_guidance_sweep_scores_the_release_once_per_strength(tdata, flow_runs, tmp_path):
    from backend.pipeline.api import SamplerOverrides
    from backend.train.structure_eval import evaluate_structure

    release = _assemble(tdata, flow_runs, tmp_path / "release")
    summary = evaluate_structure({"a": release}, tdata.data, tmp_path / "eval", split=None, limit=2,
                                 samplers=[SamplerOverrides(guidance_strength=g) for g in (1.0, 7.5, 40.0)])
    lines = (tmp_path / "eval" / "structure_results.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert sorted(summary) == ["a@g1", "a@g40", "a@g7.5"]
    assert [r["release"] for r in rows] == ["a@g1"] * 2 + ["a@g7.5"] * 2 + ["a@g40"] * 2
    # The strength reaches the sampler: the release's own (7.5) gives the unswept structures, and
    # the three strengths do not all give the same ones.
    default = evaluate_structure({"a": release}, tdata.data, tmp_path / "eval0", split=None, limit=2)
    assert default["a"] == summary["a@g7.5"]
    cells = {name: [r["predicted"] for r in rows if r["release"] == name] for name in summary}
    assert len({tuple(v) for v in cells.values()}) > 1, cells


def test_stage_one_evaluation_scores_a_picture_the_pipeline_refuses_as_empty(tdata, flow_runs, tmp_path):
    import shutil

    from backend.train.data.layout import DataLayout
    from backend.train.structure_eval import evaluate_structure

    release = _assemble(tdata, flow_runs, tmp_path / "release")
    data = tmp_path / "data"
    shutil.copytree(tdata.data, data)
    glass = sorted(OBJECTS)[0]
    layout = DataLayout(data)
    view = layout.render_view(glass, layout.photo_view(glass))  # the picture evaluation reads by default
    with Image.open(view) as img:  # a see-through object: no pixel more than 80% opaque
        rgba = np.asarray(img.convert("RGBA")).copy()
    rgba[..., 3] = np.minimum(rgba[..., 3], 100)
    Image.fromarray(rgba).save(view)
    summary = evaluate_structure({"a": release}, data, tmp_path / "eval", split=None, limit=2)
    lines = (tmp_path / "eval" / "structure_results.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert summary["a"]["objects"] == 2 and summary["a"]["failed"] == 1
    refused, scored = rows
    assert refused["object_id"] == glass and "opaque" in refused["error"]
    assert refused["predicted"] == 0 and refused["iou"] == 0.0 and refused["occupied"] > 0
    assert scored["error"] == "" and scored["predicted"] > 0
