"""The shape SC-VAE's rendered losses: gradients of each term against float64 finite
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
from backend.train.objectives import ShapeVaeArgs
from backend.train.render_losses import RenderedShapeLoss, RenderLossWeights
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
