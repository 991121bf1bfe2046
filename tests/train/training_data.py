"""Tiny training data and configs for the trainer tests (CPU, seconds).

:func:`build_training_data` writes three thin textured boxes (a few thousand voxels each at
resolution 64, since ``prepare`` scales every mesh to the unit cube, thin shapes are what keeps
them small), runs the data toolkit's ``prepare`` on them (2 condition views of 64 px), writes a
tiny image encoder, trains the three tiny VAEs for two steps each, and ``encode``s the latents
the tiny flow configs read (``{ss,shape,pbr}_latents/<tiny encoder name>``, ``latent_stats.json``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from backend.meshio import write_glb, z_up_to_y_up
from backend.train.config import TrainConfig, parse_config
from tests.fixtures.meshes import textured_box

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "backend" / "train" / "configs" / "tiny"
VAES = ("ss_vae", "shape_vae", "tex_vae")
FLOWS = ("ss_flow", "shape_flow", "tex_flow")
ENCODER_PRETRAINING = "image_encoder"  # configs/tiny/image_encoder.json
RESOLUTION, VIEWS, RENDER_SIZE = 64, 2, 64
# Thin boxes: longest side 1 after normalisation, so the surface (voxel count) stays small.
OBJECTS = {"rod_x": (1.0, 0.14, 0.1), "rod_y": (0.12, 1.0, 0.18), "post_z": (0.2, 0.16, 1.0)}
ENCODER_SIZE = {"hidden_size": 32, "layers": 2, "heads": 2}  # cond_channels 32 of the tiny flows


def tiny_config_dict(name: str) -> dict[str, Any]:
    """The raw JSON of ``configs/tiny/NAME.json``."""
    return json.loads((TINY / f"{name}.json").read_text())


def tiny_config(name: str, **trainer_args: Any) -> TrainConfig:
    """The tiny config ``name`` with ``trainer.args`` keys replaced (``optimizer={"lr": ..}`` merges)."""
    raw = copy.deepcopy(tiny_config_dict(name))
    args = raw["trainer"]["args"]
    for key, value in trainer_args.items():
        if isinstance(value, dict) and isinstance(args.get(key), dict):
            args[key] = {**args[key], **value}
        else:
            args[key] = value
    return parse_config(raw, f"tiny/{name}.json")


def write_meshes(folder: Path) -> Path:
    """Three thin boxes with the checker PBR material of ``textured_box`` as Y-up GLBs."""
    folder.mkdir(parents=True, exist_ok=True)
    base = textured_box()  # a 0.6 cube
    for name, dims in OBJECTS.items():
        mesh = dataclasses.replace(base, vertices=base.vertices / 0.6 * np.asarray(dims))
        write_glb(folder / f"{name}.glb", z_up_to_y_up(mesh))
    return folder


@dataclass(frozen=True)
class TrainingData:
    """What :func:`build_training_data` wrote."""

    data: Path  # data-toolkit folder with O-Voxels, renders and latents of all three encoders
    image_encoder: Path  # tiny DINOv3-architecture folder
    runs: Path  # runs/<vae name> of the two-step VAE trainings whose encoders made the latents


def make_trainer(name: str, output: Path, tdata: TrainingData, *, resume: bool = False,
                 config: TrainConfig | None = None, init_from: Path | None = None, **trainer_args: Any):
    """A :class:`~backend.train.trainer.Trainer` of the tiny config ``name`` on ``tdata`` (CPU)."""
    from backend.train.trainer import Trainer

    config = config if config is not None else tiny_config(name, **trainer_args)
    reads_pictures = name.endswith("_flow") or name == ENCODER_PRETRAINING
    encoder = str(tdata.image_encoder) if reads_pictures else None
    return Trainer(config, output, tdata.data, device="cpu", image_encoder=encoder, resume=resume,
                   init_from=init_from)


def build_training_data(root: Path) -> TrainingData:
    """Meshes -> prepare -> image encoder -> 2-step VAEs -> encode (see the module docstring)."""
    from backend.train.conditioning import write_image_encoder
    from backend.train.data import PrepareOptions, encode_dataset, load_encoder, prepare_dataset

    meshes = write_meshes(root / "meshes")
    data = root / "data"
    summary = prepare_dataset(PrepareOptions(
        input_dir=meshes, output_dir=data, resolution=RESOLUTION, views=VIEWS, render_size=RENDER_SIZE,
        supersample=1, workers=1, device="cpu"))
    assert (summary.done, summary.failed) == (len(OBJECTS), 0)
    encoder = write_image_encoder(root / "image_encoder", seed=0, **ENCODER_SIZE)
    tdata = TrainingData(data, encoder, root / "runs")
    encoders = {}
    for name in VAES:
        trainer = make_trainer(name, tdata.runs / name, tdata)
        trainer.run(max_steps=2)
        stem = trainer.loop.release_names["encoder"]
        encoders[name] = load_encoder(tdata.runs / name / "export" / stem, "cpu")
    encode_dataset(data, encoders["shape_vae"], encoders["tex_vae"], encoders["ss_vae"], device="cpu")
    return tdata
