"""What FP8 block linears (``--fp8``) cost in quality: per stage on the same inputs, and end to end.

    python scripts/measure_fp8.py --release DIR --data DATA_DIR --meshes MESH_DIR --out OUT \
        [--limit 8] [--device cuda] [--seed 0]

For every held-out object (split "test", its photo-like condition view) the release runs twice
(pipeline type 512, as the held-out evaluation runs it)
with the same seed: in the device's own precision (bf16 blocks on CUDA, float32 on the CPU) and
with ``Runtime(fp8=True)``. Per stage, each FP8 flow gets exactly the reference's inputs (the
same picture tokens, noise, and the reference's structure / shape latent), so the numbers are
that stage's own error:

- stage 1: relative RMS error of the structure latent and IoU of the occupied voxels (32^3);
- stage 2: relative RMS error of the shape latent on the reference's voxels;
- stage 3: relative RMS error of the texture latent on the reference's shape, and the PSNR of
  the decoded base colour (sRGB, on the same voxels);
- end to end (each path from the picture alone): Chamfer distance and F-score at 5% of each
  decoded mesh against the ground truth, and the Chamfer distance between the two.

Writes OUT/results.jsonl (one line per object) and OUT/table.md (means), and prints the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.pipeline.api import DEFAULT_MULTIVIEW_MODE, GenerateRequest  # noqa: E402
from backend.pipeline.generator import Trellis2Generator  # noqa: E402
from backend.pipeline.image import load_and_preprocess  # noqa: E402
from backend.pipeline.image_to_3d import norms, stage_params, view_conditions  # noqa: E402
from backend.pipeline.runtime import Runtime  # noqa: E402
from backend.pipeline.sampler import make_generator, sample  # noqa: E402
from backend.pipeline.stages import decode, occupied_voxels, sample_shape, sample_texture  # noqa: E402
from backend.train.structure_eval import STRUCTURE_GRID  # noqa: E402

log = logging.getLogger("measure_fp8")
PATHS = ("reference", "fp8")


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    """``||value - reference|| / ||reference||`` over all elements (float64)."""
    value, reference = value.double(), reference.double()
    return float((value - reference).norm() / reference.norm().clamp(min=1e-30))


def voxel_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """IoU of two ``[N, 4]`` voxel sets."""
    sa, sb = set(map(tuple, a.tolist())), set(map(tuple, b.tolist()))
    return len(sa & sb) / max(1, len(sa | sb))


def psnr(value: torch.Tensor, reference: torch.Tensor) -> float:
    """Peak signal-to-noise ratio of values in [0, 1], in dB (inf when identical)."""
    mse = float((value.double().clamp(0, 1) - reference.double().clamp(0, 1)).pow(2).mean())
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def per_stage(generators: dict[str, Trellis2Generator], picture: Path, seed: int) -> dict[str, float]:
    """Each stage's FP8 error on the reference's inputs (see the module docstring)."""
    ref = generators["reference"].store
    request = GenerateRequest(images=(picture,), output_dir=picture.parent, seed=seed, pipeline_type="512")
    params = stage_params(ref, request)
    shape_norm, tex_norm = norms(ref.config)
    dino = ref.conditioner()
    with torch.no_grad(), ref.on_device(dino.model):
        cond, neg = view_conditions(dino, [load_and_preprocess(picture)], 512, 1, DEFAULT_MULTIVIEW_MODE)
    flows = {name: g.store for name, g in generators.items()}
    out: dict[str, float] = {}
    with torch.no_grad():
        decoder = ref.get("sparse_structure_decoder")
        latents, voxels = {}, {}
        for name, store in flows.items():
            flow = store.get("sparse_structure_flow_model")
            r = int(flow.resolution)
            noise = torch.randn(1, int(flow.in_channels), r, r, r, generator=make_generator(seed))
            latents[name] = sample(flow, noise.to(ref.device), cond, neg, params.sparse_structure)
            voxels[name] = occupied_voxels(decoder, latents[name], STRUCTURE_GRID)
        out["structure_latent_rel_error"] = relative_error(latents["fp8"], latents["reference"])
        out["structure_iou"] = voxel_iou(voxels["fp8"], voxels["reference"])
        shapes = {name: sample_shape(store.get("shape_slat_flow_model_512"), voxels["reference"], cond, neg,
                                     params.shape, make_generator(seed + 1), shape_norm)
                  for name, store in flows.items()}
        out["shape_latent_rel_error"] = relative_error(shapes["fp8"].feats, shapes["reference"].feats)
        textures = {name: sample_texture(store.get("tex_slat_flow_model_512"), shapes["reference"], cond, neg,
                                         params.texture, make_generator(seed + 2), shape_norm, tex_norm)
                    for name, store in flows.items()}
        out["texture_latent_rel_error"] = relative_error(textures["fp8"].feats, textures["reference"].feats)
        shape_decoder, tex_decoder = ref.get("shape_slat_decoder"), ref.get("tex_slat_decoder")
        colours = {name: decode(shape_decoder, tex_decoder, shapes["reference"], tex, 512)[0].attrs[:, :3]
                   for name, tex in textures.items()}
        out["base_colour_psnr_db"] = psnr(colours["fp8"], colours["reference"])
    return out


def end_to_end(generators: dict[str, Trellis2Generator], picture: Path, gt_mesh: Path, seed: int,
               points: int) -> dict[str, float]:
    """Both paths from the picture alone, scored against the ground truth and against each other."""
    from backend.train.evaluation import decoded_mesh, read_mesh_z_up
    from backend.train.metrics import compare_meshes

    gt = read_mesh_z_up(gt_mesh)
    meshes, out = {}, {}
    for name, generator in generators.items():
        request = GenerateRequest(images=(picture,), output_dir=picture.parent, seed=seed,
                                  pipeline_type="512")
        meshes[name] = decoded_mesh(generator.decode(request)[0])
        metrics = compare_meshes(meshes[name], gt, points, seed)
        out[f"{name}_chamfer"], out[f"{name}_f_score_5pct"] = metrics.chamfer, metrics.f_score_5pct
    out["chamfer_between"] = compare_meshes(meshes["fp8"], meshes["reference"], points, seed).chamfer
    return out


COLUMNS = (
    ("structure_latent_rel_error", "stage 1 latent, relative error", "{:.4f}"),
    ("structure_iou", "stage 1 voxel IoU", "{:.3f}"),
    ("shape_latent_rel_error", "stage 2 latent, relative error", "{:.4f}"),
    ("texture_latent_rel_error", "stage 3 latent, relative error", "{:.4f}"),
    ("base_colour_psnr_db", "base colour PSNR (dB)", "{:.1f}"),
    ("reference_chamfer", "Chamfer to GT, reference", "{:.4f}"),
    ("fp8_chamfer", "Chamfer to GT, FP8", "{:.4f}"),
    ("reference_f_score_5pct", "F@5%, reference", "{:.3f}"),
    ("fp8_f_score_5pct", "F@5%, FP8", "{:.3f}"),
    ("chamfer_between", "Chamfer FP8 vs reference", "{:.4f}"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--release", type=Path, required=True, help="release folder (pipeline.json + ckpts/)")
    parser.add_argument("--data", type=Path, required=True,
                        help="data folder (metadata.jsonl, renders_cond/)")
    parser.add_argument("--meshes", type=Path, required=True, help="folder of ground-truth {id}.glb")
    parser.add_argument("--out", type=Path, default=Path("out/fp8"), help="output folder")
    parser.add_argument("--limit", type=int, default=8, help="the first N held-out objects")
    parser.add_argument("--device", default="cuda", help="torch device (cuda: compute capability 8.9+)")
    parser.add_argument("--seed", type=int, default=0, help="generation and surface-sampling seed")
    parser.add_argument("--points", type=int, default=50_000, help="surface samples per mesh")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)

    from backend.train.conditioning import condition_image_path
    from backend.train.data.layout import DataLayout
    from backend.train.datasets import read_records

    records = read_records(args.data, "test")[: args.limit]
    if not records:
        sys.stderr.write(f"error: {args.data}: no held-out objects (split 'test')\n")
        return 1
    layout = DataLayout(args.data)
    generators = {name: Trellis2Generator(Runtime(model=str(args.release), device=args.device, offline=True,
                                                  fp8=name == "fp8"))
                  for name in PATHS}
    rows = []
    for record in records:
        object_id = record["id"]
        picture = condition_image_path(args.data, object_id, layout.photo_view(object_id))
        row: dict = {"id": object_id}
        try:
            row.update(per_stage(generators, picture, args.seed))
            gt_mesh = args.meshes / f"{object_id}.glb"
            row.update(end_to_end(generators, picture, gt_mesh, args.seed, args.points))
        except Exception as exc:  # noqa: BLE001 - one object's failure is recorded, the run goes on
            row["error"] = f"{type(exc).__name__}: {exc}"
        rows.append(row)
        log.info("%s", row)
        args.out.mkdir(parents=True, exist_ok=True)  # after every object: a run cut short keeps them
        (args.out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ok = [r for r in rows if "error" not in r]
    lines = [f"FP8 block linears vs the {args.device}'s own precision: {len(ok)} of {len(rows)} held-out "
             f"objects, seed {args.seed}", "", "| measure | mean | median |", "|---|---|---|"]
    for key, label, fmt in COLUMNS:
        values = np.array([r[key] for r in ok], dtype=np.float64)
        finite = values[np.isfinite(values)]
        mean = fmt.format(float(finite.mean())) if len(finite) else "n/a"
        median = fmt.format(float(np.median(values))) if len(values) else "n/a"
        lines.append(f"| {label} | {mean} | {median} |")
    table = "\n".join(lines) + "\n"
    (args.out / "table.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
