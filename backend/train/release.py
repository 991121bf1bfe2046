"""Trained weights -> a release folder in the official TRELLIS.2 layout.

:func:`export_checkpoint` writes one network as ``NAME.json`` (``{"name", "args"}``) plus
``NAME.safetensors`` in the dtypes the release stores (bf16 DiT block linears, fp16 VAE blocks, fp32
elsewhere), exactly what ``backend.models.loading.load_model`` reads. :func:`assemble_release`
puts the exported networks of the six training runs, the image encoder and the latent statistics
together into ``pipeline.json`` + ``texturing_pipeline.json`` + ``ckpts/``. Given a ``base``
release, the runs may cover only some networks: every role they do not export is copied from the
base (with its latent normalization), and the base's sampler settings are kept. The
sparse-structure encoder travels in ``ckpts/`` beside the decoder it was trained with (no pipeline
names it; a later run of the sparse-structure flow alone encodes its latents with it).

Command line::

    python -m backend.train.release --output RELEASE --data DATA_DIR --image-encoder DIR \\
        --runs RUN_DIR [RUN_DIR ...] [--base OLD_RELEASE]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from backend.fileio import write_atomic
from backend.models.registry import model_class

log = logging.getLogger(__name__)

# Buffers the official files do not carry (the loader computes them from the config).
NOT_STORED = {"rope_phases"}

# The cap on a release that ships inside the repository (``backend/mini_release``): every clone and
# the extension carry it.
BUNDLED_RELEASE_LIMIT_BYTES = 30_000_000

# pipeline.json model key -> (model class, its role in a training run)
_ROLE_OF_CLASS = {
    "SparseStructureFlowModel": "sparse_structure_flow_model",
    "SparseStructureDecoder": "sparse_structure_decoder",
    "FlexiDualGridVaeDecoder": "shape_slat_decoder",
    "FlexiDualGridVaeEncoder": "shape_slat_encoder",
    "SparseUnetVaeDecoder": "tex_slat_decoder",
}


# Every role a release needs, and where each sits in a release's (pipeline.json,
# texturing_pipeline.json) "models" (one entry per role is enough to read a base release).
_ROLE_KEYS = {
    "sparse_structure_flow_model": ("pipeline", "sparse_structure_flow_model"),
    "sparse_structure_decoder": ("pipeline", "sparse_structure_decoder"),
    "shape_slat_flow_model": ("pipeline", "shape_slat_flow_model_512"),
    "shape_slat_decoder": ("pipeline", "shape_slat_decoder"),
    "tex_slat_flow_model": ("pipeline", "tex_slat_flow_model_512"),
    "tex_slat_decoder": ("pipeline", "tex_slat_decoder"),
    "shape_slat_encoder": ("texturing", "shape_slat_encoder"),
}
# The roles whose latents a normalization describes: it comes from the data's latent statistics
# when any of them is newly trained, else from the base release (whose networks it was made for).
_NORMALIZED_ROLES = {
    "shape_slat_normalization": (
        "shape", {"shape_slat_flow_model", "shape_slat_decoder", "shape_slat_encoder"}),
    "tex_slat_normalization": ("pbr", {"tex_slat_flow_model", "tex_slat_decoder"}),
}
_SAMPLERS = ("sparse_structure_sampler", "shape_slat_sampler", "tex_slat_sampler")
# Networks a release carries in ckpts/ beside the decoder they pair with, for training only (no
# pipeline names them): the sparse-structure encoder gives a later run of the sparse-structure
# flow alone its latents (``scripts/train_mini.py --networks ss_flow --ss-encoder``).
_COMPANIONS = {"SparseStructureEncoder": "sparse_structure_decoder"}


def ships_in_release(class_name: str) -> bool:
    """Whether a release carries the networks of this class (of the encoders, the shape one for
    the texturing pipeline and the sparse-structure one beside its decoder, for training)."""
    return class_name in _ROLE_OF_CLASS or class_name in _COMPANIONS or class_name == "SLatFlowModel"


def _copy_checkpoint(source_stem: Path, target_stem: Path) -> None:
    """Copy a checkpoint's ``.json`` and ``.safetensors`` (``STEM.json`` + ``STEM.safetensors``)."""
    target_stem.parent.mkdir(parents=True, exist_ok=True)
    for ext in (".json", ".safetensors"):
        shutil.copy2(f"{source_stem}{ext}", f"{target_stem}{ext}")


def _companions(release: Path) -> dict[str, str]:
    """``class name -> ckpts/NAME`` of the training companions (``_COMPANIONS``) in ``release``."""
    found = {}
    for path in sorted((Path(release) / "ckpts").glob("*.json")):
        cls = json.loads(path.read_text()).get("name")
        if cls in _COMPANIONS and path.with_suffix(".safetensors").is_file():
            found[cls] = f"ckpts/{path.stem}"
    return found


class ReleaseError(ValueError):
    """The runs given cannot make a complete release; says what is missing."""


def _stored_state(name: str, args: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors a release stores for class ``name`` built with ``args``, shapes and dtypes only."""
    with torch.device("meta"):
        model = model_class(name)(**args)
    return {k: v for k, v in model.state_dict().items() if k not in NOT_STORED}


def stored_bytes(name: str, args: dict[str, Any]) -> int:
    """Bytes of tensor data :func:`export_checkpoint` writes for class ``name`` built with ``args``."""
    return sum(v.numel() * v.element_size() for v in _stored_state(name, args).values())


def export_checkpoint(spec: Any, state: dict[str, torch.Tensor], out_dir: Path, name: str) -> Path:
    """Write ``out_dir/name.{json,safetensors}`` from fp32 ``state`` for ``spec`` (class, release args)."""
    expected = _stored_state(spec.name, spec.args)
    tensors = {
        k: v.detach().to(device="cpu", dtype=expected[k].dtype).contiguous()
        for k, v in state.items()
        if k not in NOT_STORED
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / f"{name}.safetensors"
    tmp = weights.with_name(f".{weights.name}.tmp")
    save_file(tensors, str(tmp))
    tmp.replace(weights)
    write_atomic(
        out_dir / f"{name}.json", json.dumps({"name": spec.name, "args": spec.args}, indent=2).encode()
    )
    return weights


def _sampler(strength: float, rescale: float, interval: list[float], rescale_t: float, steps: int) -> dict:
    return {
        "name": "FlowEulerGuidanceIntervalSampler",
        "args": {"sigma_min": 1e-5},
        "params": {
            "steps": steps,
            "guidance_strength": strength,
            "guidance_rescale": rescale,
            "guidance_interval": interval,
            "rescale_t": rescale_t,
        },
    }


def _exports(run: Path) -> list[tuple[str, str, str]]:
    """``(class name, export name, trainer name)`` of every network a run exported."""
    config = json.loads((run / "config.json").read_text())
    out = []
    for path in sorted((run / "export").glob("*.json")):
        cls = json.loads(path.read_text())["name"]
        out.append((cls, path.stem, config["trainer"]["name"]))
    if not out:
        raise ReleaseError(f"{run}: the run exported no network (no export/*.json; has it finished?)")
    return out


def _release_docs(release: Path) -> dict[str, dict[str, Any]]:
    """A release's pipeline args by ``_ROLE_KEYS`` kind (``pipeline``, ``texturing``)."""
    return {kind: json.loads((Path(release) / f"{doc}.json").read_text())["args"]
            for kind, doc in (("pipeline", "pipeline"), ("texturing", "texturing_pipeline"))}


def _checkpoint_of(docs: dict[str, dict[str, Any]], role: str, release: Path) -> str:
    """The ``ckpts/NAME`` stem of ``role`` in a release's :func:`_release_docs`."""
    kind, key = _ROLE_KEYS[role]
    ref = docs[kind]["models"].get(key)
    if ref is None:
        raise ReleaseError(f"{release}: the release has no {key} in its {kind} models")
    return ref


def release_checkpoint(release: Path, role: str) -> str:
    """The ``ckpts/NAME`` stem (relative to ``release``) of the network in ``role`` (a key of
    ``_ROLE_KEYS``, e.g. ``shape_slat_encoder``); :class:`ReleaseError` if the release has none."""
    return _checkpoint_of(_release_docs(release), role, release)


def _read_base(base: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """A base release's (pipeline args, texturing args, role -> ``ckpts/NAME``), its files read once."""
    docs = _release_docs(base)
    roles = {role: _checkpoint_of(docs, role, base) for role in _ROLE_KEYS}
    return docs["pipeline"], docs["texturing"], roles


def assemble_release(
    output: Path,
    runs: list[Path],
    data_dir: Path,
    image_encoder: Path,
    *,
    steps: int = 12,
    base: Path | None = None,
) -> Path:
    """Build the release folder (see the module docstring); returns ``output``.

    Without ``base`` the runs must export every role a release needs (else :class:`ReleaseError`).
    With ``base`` (a release folder) each role the runs do not export is copied from it, a latent
    normalization comes from the base when none of the networks it describes is new (the data
    folder may then hold no statistics for those latents), and the base's sampler settings are
    kept (``steps`` is then unused: they were chosen for the base's networks).
    """
    output = Path(output)
    if base is not None and Path(base).resolve() == output.resolve():
        raise ReleaseError(f"{output}: the output must not be the base release")
    ckpts = output / "ckpts"
    ckpts.mkdir(parents=True, exist_ok=True)
    roles: dict[str, str] = {}
    for run in runs:
        for cls, name, _trainer in _exports(Path(run)):
            if not ships_in_release(cls):
                continue
            _copy_checkpoint(Path(run) / "export" / name, ckpts / name)
            if cls in _COMPANIONS:  # no role: it travels beside the decoder of the same run
                continue
            role = _ROLE_OF_CLASS.get(cls)
            if cls == "SLatFlowModel":
                config = json.loads((Path(run) / "export" / f"{name}.json").read_text())
                role = (
                    "tex_slat_flow_model" if config["args"]["in_channels"] == 64 else "shape_slat_flow_model"
                )
            roles[role] = f"ckpts/{name}"
    new_roles = set(roles)
    base_pipeline: dict[str, Any] = {}
    base_texturing: dict[str, Any] = {}
    if base is not None:
        base = Path(base)
        base_pipeline, base_texturing, base_roles = _read_base(base)
        for role in sorted(set(base_roles) - new_roles):
            _copy_checkpoint(base / base_roles[role], output / base_roles[role])
            roles[role] = base_roles[role]
        for cls, ref in _companions(base).items():  # they pair with the base's decoder
            if _COMPANIONS[cls] not in new_roles:
                _copy_checkpoint(base / ref, output / ref)
        log.info("from the runs: %s; from %s: %s", ", ".join(sorted(new_roles)) or "nothing", base,
                 ", ".join(sorted(set(roles) - new_roles)) or "nothing")
    missing = sorted(set(_ROLE_KEYS) - set(roles))
    if missing:
        raise ReleaseError(f"the runs given export no network for {', '.join(missing)}")
    normalization = {}
    stats = None  # the data's latent statistics, read only when a normalization needs them
    for key, (kind, described) in _NORMALIZED_ROLES.items():
        if base is not None and not described & new_roles:
            normalization[key] = base_pipeline[key]
        else:
            stats = stats or json.loads((Path(data_dir) / "latent_stats.json").read_text())
            normalization[key] = {"mean": stats[kind]["mean"], "std": stats[kind]["std"]}
    samplers = {
        "sparse_structure_sampler": _sampler(7.5, 0.7, [0.6, 1.0], 5.0, steps),
        "shape_slat_sampler": _sampler(7.5, 0.5, [0.6, 1.0], 3.0, steps),
        "tex_slat_sampler": _sampler(1.0, 0.0, [0.6, 0.9], 3.0, steps),
    }
    samplers.update({k: base_pipeline[k] for k in _SAMPLERS if k in base_pipeline})
    encoder_dir = output / "image_encoder"
    if encoder_dir.exists():
        shutil.rmtree(encoder_dir)
    shutil.copytree(image_encoder, encoder_dir)
    models = {
        "sparse_structure_flow_model": roles["sparse_structure_flow_model"],
        "sparse_structure_decoder": roles["sparse_structure_decoder"],
        # The mini release has one resolution: the 1024 entries name the 512 networks.
        "shape_slat_flow_model_512": roles["shape_slat_flow_model"],
        "shape_slat_flow_model_1024": roles["shape_slat_flow_model"],
        "shape_slat_decoder": roles["shape_slat_decoder"],
        "tex_slat_flow_model_512": roles["tex_slat_flow_model"],
        "tex_slat_flow_model_1024": roles["tex_slat_flow_model"],
        "tex_slat_decoder": roles["tex_slat_decoder"],
    }
    common = {
        **normalization,
        "image_cond_model": {"name": "DinoV3FeatureExtractor", "args": {"model_name": "image_encoder"}},
        "rembg_model": {"name": "BiRefNet", "args": {"model_name": "briaai/RMBG-2.0"}},
    }
    pipeline = {
        "name": "Trellis2ImageTo3DPipeline",
        "args": {
            "models": models,
            "sparse_structure_sampler": samplers["sparse_structure_sampler"],
            "shape_slat_sampler": samplers["shape_slat_sampler"],
            "tex_slat_sampler": samplers["tex_slat_sampler"],
            **common,
            "default_pipeline_type": "512",
        },
    }
    texturing = {
        "name": "Trellis2TexturingPipeline",
        "args": {
            "models": {
                "shape_slat_encoder": roles["shape_slat_encoder"],
                "tex_slat_decoder": roles["tex_slat_decoder"],
                "tex_slat_flow_model_512": roles["tex_slat_flow_model"],
                "tex_slat_flow_model_1024": roles["tex_slat_flow_model"],
            },
            "tex_slat_sampler": base_texturing.get("tex_slat_sampler", samplers["tex_slat_sampler"]),
            **common,
        },
    }
    write_atomic(output / "pipeline.json", json.dumps(pipeline, indent=2).encode())
    write_atomic(output / "texturing_pipeline.json", json.dumps(texturing, indent=2).encode())
    size = sum(f.stat().st_size for f in output.rglob("*") if f.is_file())
    log.info("release written to %s: %.1f MB (a bundled release may hold %.0f MB)",
             output, size / 1e6, BUNDLED_RELEASE_LIMIT_BYTES / 1e6)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m backend.train.release", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--output", type=Path, required=True, help="release folder to write")
    parser.add_argument("--data", type=Path, required=True, help="data folder (for latent_stats.json)")
    parser.add_argument("--image-encoder", type=Path, required=True, help="the image encoder folder to ship")
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="finished training run folders")
    parser.add_argument("--steps", type=int, default=12,
                        help="sampler steps per stage in pipeline.json (without --base)")
    parser.add_argument("--base", type=Path, default=None, metavar="RELEASE",
                        help="take every network the runs do not export from this release (and keep "
                             "its sampler settings)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        assemble_release(args.output, args.runs, args.data, args.image_encoder, steps=args.steps,
                         base=args.base)
    except (ReleaseError, OSError, KeyError, ValueError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
