"""The SC-VAEs' rendered losses (shape and texture): gradients against float64 finite
differences, training with them lowers them, their config keys are validated, and the shipped
configs set them as documented.

Data: sphere O-Voxels made from a signed distance at resolution 64 (hundreds of voxels,
milliseconds), written into a minimal data folder for the trainer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.ovoxel import save_ovoxel
from backend.train.config import ConfigError, parse_config, split_args
from backend.train.datasets import _pack
from backend.train.image_losses import ssim
from backend.train.objectives import PbrVaeArgs, ShapeVaeArgs
from backend.train.render_losses import (
    PbrRenderLossWeights,
    RenderedPbrLoss,
    RenderedShapeLoss,
    RenderLossWeights,
)
from tests.fixtures.ovoxels import sphere_ovoxel
from tests.train.training_data import ROOT, tiny_config_dict

SPHERES = {"ball_a": (0.12, (0.05, 0.0, 0.0)), "ball_b": (0.16, (0.0, -0.05, 0.03))}
RENDERED = {"lambda_mask": 1.0, "lambda_depth": 10.0, "lambda_normal": 1.0, "lambda_ssim": 0.2,
            "render_resolution": 32}


def _batch(names=tuple(SPHERES), dtype=torch.float32) -> dict:
    ovs = [sphere_ovoxel(SPHERES[n][0], 64, SPHERES[n][1]) for n in names]
    return {
        "coords": _pack([ov.coords for ov in ovs]),
        "vertices": torch.from_numpy(np.concatenate([ov.dual_vertices for ov in ovs])).to(dtype),
        "intersected": torch.from_numpy(np.concatenate([ov.intersected for ov in ovs])).to(dtype),
        "batch_size": len(ovs),
        "resolution": 64,
    }


# ----------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("term", ["mask", "depth", "normal", "ssim"])
def test_each_rendered_term_has_the_gradient_of_finite_differences(term):
    batch = _batch(("ball_a",), torch.float64)
    # One term at a time (SSIM sits inside the normal term, so it comes with the normal L1).
    weights = RenderLossWeights(mask=float(term == "mask"), depth=float(term == "depth"),
                                normal=float(term in ("normal", "ssim")), ssim=float(term == "ssim"),
                                views=1, resolution=24)
    loss_fn = RenderedShapeLoss(weights)
    gen = torch.Generator().manual_seed(1)
    # Offsets away from the ground truth (so no L1 term sits at its kink), split weights around 1.
    offsets = (batch["vertices"] + 0.2 * torch.rand(batch["vertices"].shape, generator=gen,
                                                    dtype=torch.float64) - 0.1).requires_grad_(True)
    split = (0.5 + torch.rand(len(offsets), 1, generator=gen, dtype=torch.float64)).requires_grad_(True)

    def loss(o, s):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(7)  # the same camera every time
            value, _ = loss_fn(batch, o, s)
        return value

    value = loss(offsets, split)
    g_off, g_split = torch.autograd.grad(value, (offsets, split))
    assert g_off.abs().max() > 0 and g_split.abs().max() > 0
    eps = 1e-6
    # The entries with the largest analytic gradient, and a few random ones.
    picks = [(g_off, offsets, int(i)) for i in torch.topk(g_off.abs().reshape(-1), 4).indices]
    picks += [(g_split, split, int(i)) for i in torch.topk(g_split.abs().reshape(-1), 2).indices]
    picks += [(g_off, offsets, int(i)) for i in torch.randint(0, offsets.numel(), (2,), generator=gen)]
    for grad, x, i in picks:
        with torch.no_grad():
            hi, lo = x.detach().contiguous().clone(), x.detach().contiguous().clone()
            hi.view(-1)[i] += eps
            lo.view(-1)[i] -= eps
            args_hi = (hi, split.detach()) if x is offsets else (offsets.detach(), hi)
            args_lo = (lo, split.detach()) if x is offsets else (offsets.detach(), lo)
            reference = (loss(*args_hi) - loss(*args_lo)) / (2 * eps)
        assert float(grad.reshape(-1)[i]) == pytest.approx(float(reference), rel=1e-4, abs=1e-7), (term, i)


def test_ssim_and_the_loss_tell_close_from_far_reconstructions():
    batch = _batch()
    weights = RenderLossWeights(mask=1.0, depth=1.0, normal=1.0, ssim=0.2, resolution=24)
    assert ssim(torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)) < 0.5
    x = torch.rand(2, 3, 16, 16)
    assert float(ssim(x, x)) == pytest.approx(1.0)
    loss_fn = RenderedShapeLoss(weights)
    (pv, pf), (tv, tf) = loss_fn.meshes(batch, batch["vertices"], torch.ones(len(batch["vertices"]), 1), 0)
    assert len(pf) == 2 * len(tf)  # four fan triangles per quad instead of two
    torch.manual_seed(3)
    loss, logs = loss_fn(batch, batch["vertices"], torch.ones(len(batch["vertices"]), 1))
    # Equal offsets: the fan's mid-vertices sit inside each quad, so the renders nearly agree.
    assert logs["render_mask"] < 0.01 and logs["render_normal"] < 0.05
    torch.manual_seed(3)
    far, far_logs = loss_fn(batch, batch["vertices"] * 0.2, torch.ones(len(batch["vertices"]), 1))
    assert far_logs["render_mask"] > 5 * logs["render_mask"] and float(far) > 5 * float(loss)


def test_rendered_losses_reach_offsets_and_split_weights_but_not_the_flags():
    from backend.train.objectives import ShapeVaeObjective
    from backend.train.trainer import build_networks

    config = _rendered_config(lambda_intersected=0.0, lambda_vertex=0.0, lambda_subdiv=0.0, lambda_kl=0.0,
                              render_resolution=24)
    _, args = split_args(config.trainer.args, ShapeVaeArgs, "x")
    torch.manual_seed(0)
    objective = ShapeVaeObjective(build_networks(config), args)
    loss, logs = objective(_batch())
    loss.backward()
    grad = objective.nets["decoder"].output_layer.weight.grad  # [7, C]: offsets 0-2, flags 3-5, split 6
    assert grad[0:3].abs().sum() > 0 and grad[6].abs().sum() > 0
    assert torch.all(grad[3:6] == 0)  # the intersection logits learn from their BCE only
    assert float(loss.detach()) == pytest.approx(
        logs["render_mask"] + 10 * logs["render_depth"] + logs["render_normal"]
        + 0.2 * logs["render_normal_ssim"], rel=1e-5)


# ----------------------------------------------------------------------------------- training
def _data_folder(root: Path) -> Path:
    """A minimal data folder: metadata.jsonl plus ovoxel_64/ID.npz for each sphere."""
    (root / "ovoxel_64").mkdir(parents=True)
    records = []
    for name, (radius, center) in SPHERES.items():
        ov = sphere_ovoxel(radius, 64, center)
        save_ovoxel(root / "ovoxel_64" / f"{name}.npz", ov, compress=False)
        records.append({"id": name, "status": "ok", "split": "train", "resolution": 64,
                        "num_voxels": ov.num_voxels})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


def _rendered_config(**overrides):
    raw = tiny_config_dict("shape_vae")
    raw["trainer"]["args"].update({**RENDERED, **overrides})
    return parse_config(raw, "tiny/shape_vae.json")


@pytest.mark.slow
def test_training_with_rendered_losses_lowers_them(tmp_path):
    from backend.train.trainer import Trainer

    data = _data_folder(tmp_path / "data")
    # lambda_vertex 0: the rendered terms are the only signal on the offsets. Depth weight 1
    # (not the reference's 10): depth errors scale with the camera distance (2 to 100), which
    # makes 12 steps too noisy to judge with 10.
    config = _rendered_config(max_steps=12, i_save=1000, i_log=1, optimizer={"lr": 3e-3}, lambda_vertex=0.0,
                              lambda_depth=1.0, render_views=2, render_resolution=24)
    trainer = Trainer(config, tmp_path / "run", data, device="cpu")
    assert trainer.objective.rendered is not None
    batch = trainer._to_device(trainer.dataset.collate([0, 1], 0))

    def rendered_loss() -> float:
        """The unweighted rendered terms, averaged over four fixed camera draws."""
        total = 0.0
        for seed in (11, 12, 13, 14):
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                _, logs = trainer.objective(batch)
            total += logs["render_mask"] + logs["render_depth"] + logs["render_normal"]
        return total / 4

    before = rendered_loss()
    assert rendered_loss() == before  # the measurement itself is deterministic
    trainer.run()
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert {"render_mask", "render_depth", "render_normal", "render_normal_ssim"} <= set(rows[-1])
    after = rendered_loss()
    assert np.isfinite(before) and after < 0.9 * before, (before, after)
    # The offsets move towards the ground truth although no term compares them directly.
    assert rows[-1]["vertex_mse"] < 0.8 * rows[0]["vertex_mse"]


def test_rendered_losses_are_off_by_default():
    raw = tiny_config_dict("shape_vae")
    _, args = split_args(raw["trainer"]["args"], ShapeVaeArgs, "x")
    assert not args.render_weights().enabled
    assert args.lambda_lpips == 0


# ----------------------------------------------------------------------------------- config
@pytest.mark.parametrize("override, match", [
    ({"lambda_mask": -1.0}, r"x\.json: trainer\.args: lambda_mask must be a finite number >= 0"),
    ({"lambda_depth": "ten"}, r"x\.json: trainer\.args\.lambda_depth: expected a number"),
    ({"render_views": 0}, r"x\.json: trainer\.args: render_views must lie in \[1, 64\]"),
    ({"render_views": 1.5}, r"x\.json: trainer\.args\.render_views: expected an integer"),
    ({"render_resolution": 8}, r"x\.json: trainer\.args: render_resolution must lie in \[16, 4096\]"),
    ({"lambda_normal": 0.0, "lambda_ssim": 0.2}, r"lambda_ssim scales a part of the normal term"),
    ({"lambda_lpips": 0.2}, r"x\.json: trainer\.args: lambda_lpips > 0: LPIPS (needs|lpips_vgg_weights)"),
    ({"lambda_rendr": 1.0}, r"x\.json: trainer\.args: unknown key 'lambda_rendr'"),
])
def test_bad_render_settings_name_the_key(override, match):
    raw = tiny_config_dict("shape_vae")
    raw["trainer"]["args"].update({**RENDERED, **override})
    with pytest.raises(ConfigError, match=match):
        split_args(raw["trainer"]["args"], ShapeVaeArgs, "x.json: trainer.args")


def test_lpips_needs_the_package_and_named_weights(tmp_path, monkeypatch):
    import backend.train.image_losses as image_losses

    monkeypatch.setattr(image_losses.importlib.util, "find_spec", lambda name: None)
    assert "pip install lpips" in image_losses.lpips_problem(str(tmp_path / "vgg.pth"))
    monkeypatch.setattr(image_losses.importlib.util, "find_spec", lambda name: object())
    assert "needs lpips_vgg_weights" in image_losses.lpips_problem("")
    assert "is not a file" in image_losses.lpips_problem(str(tmp_path / "vgg.pth"))
    (tmp_path / "vgg.pth").write_bytes(b"")
    assert image_losses.lpips_problem(str(tmp_path / "vgg.pth")) is None


def test_shipped_configs():
    for family in ("release", "mini", "tiny"):
        path = ROOT / "backend" / "train" / "configs" / family / "shape_vae.json"
        args = json.loads(path.read_text())["trainer"]["args"]
        _, parsed = split_args(args, ShapeVaeArgs, str(path))
        assert parsed.lambda_lpips == 0, path  # no shipped config needs the VGG weights
        if family == "release":
            assert (parsed.lambda_mask, parsed.lambda_depth, parsed.lambda_normal, parsed.lambda_ssim) == (
                1.0, 10.0, 1.0, 0.2)
            assert (parsed.render_views, parsed.render_resolution) == (1, 1024)


# ----------------------------------------------------------------------------------- LPIPS wiring
VGG16_CONVS = {0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128), 10: (128, 256), 12: (256, 256),
               14: (256, 256), 17: (256, 512), 19: (512, 512), 21: (512, 512), 24: (512, 512),
               26: (512, 512), 28: (512, 512)}


def _fake_lpips_module(calls: list):
    """A stand-in for the ``lpips`` package with its VGG slice layout (tiny channel counts)."""
    import importlib.machinery
    import types

    from torch import nn

    class FakeVgg(nn.Module):
        def __init__(self):
            super().__init__()
            bounds = ((1, 0, 4), (2, 4, 9), (3, 9, 16), (4, 16, 23), (5, 23, 30))
            for index, lo, hi in bounds:
                stage = nn.Sequential()
                for layer in range(lo, hi):
                    stage.add_module(str(layer), nn.Conv2d(1, 1, 1) if layer in VGG16_CONVS else nn.ReLU())
                setattr(self, f"slice{index}", stage)

    class LPIPS(nn.Module):
        def __init__(self, net, pretrained, pnet_rand, verbose):
            super().__init__()
            assert (net, pretrained, pnet_rand) == ("vgg", True, True)  # no torchvision download
            self.net = FakeVgg()
            self.dropout = nn.Dropout(0.5)

        def forward(self, a, b):
            calls.append((float(a.detach().min()), float(a.detach().max()), self.training))
            return ((a - b) ** 2).mean(dim=(1, 2, 3), keepdim=True)

    module = types.ModuleType("lpips")
    module.LPIPS = LPIPS
    module.__spec__ = importlib.machinery.ModuleSpec("lpips", None)
    return module


def test_lpips_loads_the_named_vgg_weights_and_compares_in_minus_one_to_one(tmp_path, monkeypatch):
    import sys

    from backend.train.image_losses import load_lpips

    calls: list = []
    monkeypatch.setitem(sys.modules, "lpips", _fake_lpips_module(calls))
    state = {f"features.{i}.{p}": torch.full((1, 1, 1, 1) if p == "weight" else (1,), float(i))
             for i in VGG16_CONVS for p in ("weight", "bias")}
    torch.save(state, tmp_path / "vgg16.pth")
    loss = load_lpips(str(tmp_path / "vgg16.pth"))
    assert float(getattr(loss.network.net.slice5, "28").weight) == 28.0  # features.28 -> slice5.28
    assert not any(p.requires_grad for p in loss.network.parameters())
    value = loss(torch.ones(2, 3, 8, 8), torch.zeros(2, 3, 8, 8))
    assert calls == [(1.0, 1.0, False)] and float(value) == 4.0  # [0, 1] -> [-1, 1], eval mode
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"other\.pth: not torchvision's VGG16 weights"):
        load_lpips(str(tmp_path / "other.pth"))
    (tmp_path / "garbage.pth").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"garbage\.pth: cannot read it as a torch state dict"):
        load_lpips(str(tmp_path / "garbage.pth"))

    raw = tiny_config_dict("shape_vae")
    raw["trainer"]["args"].update({**RENDERED, "render_resolution": 16, "lambda_lpips": 0.2,
                                   "lpips_vgg_weights": str(tmp_path / "vgg16.pth")})
    config = parse_config(raw, "x.json")
    _, args = split_args(config.trainer.args, ShapeVaeArgs, "x")
    from backend.train.objectives import ShapeVaeObjective
    from backend.train.trainer import build_networks

    objective = ShapeVaeObjective(build_networks(config), args).train()
    bad_args = split_args({**config.trainer.args, "lpips_vgg_weights": str(tmp_path / "garbage.pth")},
                          ShapeVaeArgs, "x")[1]
    with pytest.raises(ConfigError, match=r"trainer\.args\.lpips_vgg_weights: .*garbage\.pth"):
        ShapeVaeObjective(build_networks(config), bad_args)
    _, logs = objective(_batch(("ball_a",)))
    assert "render_normal_lpips" in logs and calls[-1][2] is False  # still eval inside a training objective
    assert not any("lpips" in name or "slice" in name for name, _ in objective.named_parameters())


# ----------------------------------------------------------------------------------- texture VAE
PBR_RENDERED = {"lambda_render": 1.0, "lambda_ssim": 0.2, "render_resolution": 24}


def _pbr_batch(names=tuple(SPHERES), dtype=torch.float32) -> dict:
    """Sphere O-Voxels with smooth, varied attributes in [0, 1] (alpha varies too)."""
    ovs = [sphere_ovoxel(SPHERES[n][0], 64, SPHERES[n][1]) for n in names]
    c = np.concatenate([ov.coords for ov in ovs]).astype(np.float64) / 64
    attributes = np.stack([c[:, 0], c[:, 1], 1 - c[:, 2], 0.5 + 0.5 * np.sin(25 * c[:, 0]),
                           0.5 + 0.5 * np.cos(19 * c[:, 1]), 0.6 + 0.4 * np.sin(13 * c[:, 2])], 1)
    return {**_batch(names, dtype), "attributes": torch.from_numpy(attributes).to(dtype)}


def _pbr_loss(loss_fn, batch, predicted, seed=5):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the same cameras every time
        return loss_fn(batch, predicted)


def test_pbr_images_of_identical_attributes_agree_and_perturbations_cost_in_order():
    batch = _pbr_batch()
    loss_fn = RenderedPbrLoss(PbrRenderLossWeights(render=1.0, ssim=0.2, views=2, resolution=32))
    x = batch["attributes"] * 2 - 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        pred, target = loss_fn.images(batch, x)
    assert pred.shape == target.shape == (4, 6, 32, 32)  # 2 samples x 2 views
    covered = target[:, 5] > 0  # alpha > 0 on the surface, 0 on background
    assert 0.02 < float(covered.float().mean()) < 0.9
    # Equal up to the rounding of (a * 2 - 1) * 0.5 + 0.5.
    assert torch.allclose(pred, target, rtol=0, atol=1e-6)
    loss, logs = _pbr_loss(loss_fn, batch, x)
    assert set(logs) == {"render_base_color_ssim", "render_material_ssim"}
    assert float(loss) == pytest.approx(0.0, abs=1e-7) and max(logs.values()) == pytest.approx(0.0, abs=1e-6)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    values = []
    for scale in (0.4, 0.1, 0.02):
        value, logs = _pbr_loss(loss_fn, batch, x + scale * noise)
        assert logs["render_base_color_ssim"] > 0 and logs["render_material_ssim"] > 0
        total = logs["render_base_color_ssim"] + logs["render_material_ssim"]
        assert float(value) == pytest.approx(0.2 * total, rel=1e-5)
        values.append(float(value))
    assert values[0] > values[1] > values[2] > 0, values


def test_pbr_loss_has_the_gradient_of_finite_differences_and_none_for_the_geometry():
    batch = _pbr_batch(("ball_a",), torch.float64)
    batch["vertices"].requires_grad_(True)
    loss_fn = RenderedPbrLoss(PbrRenderLossWeights(render=1.0, ssim=0.2, views=1, resolution=20))
    gen = torch.Generator().manual_seed(2)
    offsets = 0.3 * torch.rand(batch["attributes"].shape, generator=gen, dtype=torch.float64) - 0.15
    predicted = (batch["attributes"] * 2 - 1 + offsets).requires_grad_(True)
    value, _ = _pbr_loss(loss_fn, batch, predicted)
    grad, geometry = torch.autograd.grad(value, (predicted, batch["vertices"]), allow_unused=True)
    assert geometry is None  # the surface is the ground truth's: nothing flows into it
    assert grad[:, 0:3].abs().max() > 0 and grad[:, 3:6].abs().max() > 0
    # Voxels away from every rendered surface point get none (a hidden sphere's back half).
    assert 0 < int((grad.abs().sum(1) > 0).sum()) < len(grad)
    eps = 1e-6
    picks = [int(i) for i in torch.topk(grad.abs().reshape(-1), 6).indices]
    picks += [int(i) for i in torch.nonzero(grad.reshape(-1))[torch.randint(0, 100, (3,), generator=gen)]]
    for i in picks:
        with torch.no_grad():
            hi, lo = predicted.detach().clone(), predicted.detach().clone()
            hi.view(-1)[i] += eps
            lo.view(-1)[i] -= eps
            reference = (_pbr_loss(loss_fn, batch, hi)[0] - _pbr_loss(loss_fn, batch, lo)[0]) / (2 * eps)
        assert float(grad.reshape(-1)[i]) == pytest.approx(float(reference), rel=1e-4, abs=1e-9), i


def test_pbr_objective_adds_the_weighted_rendered_terms():
    from backend.train.objectives import PbrVaeObjective
    from backend.train.trainer import build_networks

    raw = tiny_config_dict("tex_vae")
    raw["trainer"]["args"].update({**PBR_RENDERED, "lambda_render": 2.0})
    config = parse_config(raw, "tiny/tex_vae.json")
    _, args = split_args(config.trainer.args, PbrVaeArgs, "x")
    torch.manual_seed(0)
    objective = PbrVaeObjective(build_networks(config), args)
    plain = PbrVaeObjective(build_networks(config), PbrVaeArgs())
    plain.load_state_dict(objective.state_dict())
    assert objective.rendered is not None and plain.rendered is None
    grads = []
    for obj in (objective, plain):
        torch.manual_seed(1)  # the same posterior noise for both
        loss, logs = obj(_pbr_batch())
        loss.backward()
        grads.append(obj.nets["decoder"].output_layer.weight.grad)
    torch.manual_seed(1)
    loss, logs = objective(_pbr_batch())
    assert logs["render_base_color_ssim"] > 0 and logs["render_material_ssim"] > 0
    rendered = logs["render_base_color_ssim"] + logs["render_material_ssim"]
    expected = logs["l1"] + 1e-6 * logs["kl"] + 2.0 * 0.2 * rendered
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    # The rendered terms add their own gradient at the decoder's output layer.
    assert (grads[0] - grads[1]).abs().max() > 1e-6 * grads[1].abs().max()


def test_pbr_rendered_losses_are_off_by_default():
    from backend.train.objectives import PbrVaeObjective
    from backend.train.trainer import build_networks

    config = parse_config(tiny_config_dict("tex_vae"), "tiny/tex_vae.json")
    _, args = split_args(config.trainer.args, PbrVaeArgs, "x")
    assert not args.render_weights().enabled and args.lambda_lpips == 0
    objective = PbrVaeObjective(build_networks(config), args)
    assert objective.rendered is None
    _, logs = objective(_pbr_batch())
    assert not any(k.startswith("render_") for k in logs)


@pytest.mark.parametrize("override, match", [
    ({"lambda_render": -1.0}, r"x\.json: trainer\.args: lambda_render must be a finite number >= 0"),
    ({"lambda_ssim": "a lot"}, r"x\.json: trainer\.args\.lambda_ssim: expected a number"),
    ({"render_views": 65}, r"x\.json: trainer\.args: render_views must lie in \[1, 64\]"),
    ({"render_resolution": 4097}, r"x\.json: trainer\.args: render_resolution must lie in \[16, 4096\]"),
    ({"lambda_render": 0.0}, r"x\.json: trainer\.args: lambda_ssim scales a part of the rendered term"),
    ({"lambda_ssim": 0.0}, r"x\.json: trainer\.args: lambda_render > 0 weighs the SSIM and LPIPS terms"),
    ({"lambda_lpips": 0.2}, r"x\.json: trainer\.args: lambda_lpips > 0: LPIPS (needs|lpips_vgg_weights)"),
    ({"render_viewz": 2}, r"x\.json: trainer\.args: unknown key 'render_viewz'"),
])
def test_bad_pbr_render_settings_name_the_key(override, match):
    raw = tiny_config_dict("tex_vae")
    raw["trainer"]["args"].update({**PBR_RENDERED, **override})
    with pytest.raises(ConfigError, match=match):
        split_args(raw["trainer"]["args"], PbrVaeArgs, "x.json: trainer.args")


def test_shipped_texture_vae_configs():
    configs = ROOT / "backend" / "train" / "configs"
    for family in ("release", "mini", "tiny"):
        path = configs / family / "tex_vae.json"
        loop, parsed = split_args(json.loads(path.read_text())["trainer"]["args"], PbrVaeArgs, str(path))
        assert not parsed.render_weights().enabled and not loop.finetune_ckpt, path
    path = configs / "release" / "tex_vae_ft512.json"
    raw = json.loads(path.read_text())
    loop, parsed = split_args(raw["trainer"]["args"], PbrVaeArgs, str(path))
    assert (parsed.lambda_render, parsed.lambda_ssim, parsed.lambda_lpips) == (1.0, 0.2, 0.0)
    assert (parsed.render_views, parsed.render_resolution) == (1, 512)
    assert set(loop.finetune_ckpt) == {"encoder", "decoder"} and loop.optimizer.lr == 1e-5
    base = json.loads((configs / "release" / "tex_vae.json").read_text())
    assert raw["models"] == base["models"] and raw["dataset"]["args"]["resolution"] == 512
