"""Held-out evaluation of stage 1 alone: does the sparse-structure flow put voxels where the object is?

The whole-pipeline evaluation (:mod:`backend.train.evaluation`) needs all six networks trained.
Stage 1 (sparse-structure flow -> SS decoder) is the cheapest to train and fixes the coarse shape
every later stage refines, so it is worth scoring on its own: for every held-out object, the
structure sampled from its condition picture is compared with the object's own occupancy.

- Prediction: the release's stage 1 exactly as generation runs it (the picture preprocessed and
  encoded as the pipeline does, the release's sampler settings, a fresh generator per object
  seeded by ``seed``), on the ``grid``^3 grid the 512 pipeline uses (32: the decoder's 64^3
  occupancy max-pooled, a cell is occupied when any child is).
- Ground truth: the data toolkit's 64^3 occupancy of the object (``ss_occupancy/ID.npz``),
  max-pooled the same way.
- Scores: IoU, precision (predicted cells that are occupied) and recall (occupied cells that are
  predicted). Occupancy is of the surface, so a cell off by one along the normal counts as a miss:
  IoU is strict; ``dilated_iou`` also counts a prediction within one cell (26-neighbourhood) of the
  truth, and vice versa.

Pictures the pipeline refuses (e.g. a see-through object with no opaque pixel) score as an
empty prediction with the refusal in ``error``; the summary counts them as ``failed``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from backend.pipeline.api import SamplerOverrides

from .data.layout import DataLayout, pooled_occupancy

log = logging.getLogger(__name__)

STRUCTURE_GRID = 32  # the 512 pipeline's stage-1 grid


@dataclass(frozen=True)
class StructureScore:
    """One object's stage-1 scores against its own occupancy."""

    object_id: str
    predicted: int
    occupied: int
    iou: float
    precision: float
    recall: float
    dilated_iou: float
    error: str = ""  # why the pipeline could not generate from the picture (scored as empty)


def _dilated(occ: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(occ.astype(np.float32))[None, None]
    return (F.max_pool3d(t, 3, stride=1, padding=1)[0, 0] > 0).numpy()


def score_structure(object_id: str, predicted: np.ndarray, truth: np.ndarray,
                    error: str = "") -> StructureScore:
    """Compare two bool occupancy grids of the same size (see the module docstring)."""
    if predicted.shape != truth.shape:
        raise ValueError(f"grids differ: predicted {predicted.shape}, truth {truth.shape}")
    inter, union = int((predicted & truth).sum()), int((predicted | truth).sum())
    n_pred, n_true = int(predicted.sum()), int(truth.sum())
    # Dilated: a predicted cell counts as right within one cell of the truth, and vice versa.
    near_truth, near_pred = _dilated(truth), _dilated(predicted)
    hits_pred, hits_true = int((predicted & near_truth).sum()), int((truth & near_pred).sum())
    missed = (n_pred - hits_pred) + (n_true - hits_true)
    dilated_iou = (hits_pred + hits_true) / (hits_pred + hits_true + 2 * missed) if n_pred + n_true else 1.0
    return StructureScore(
        object_id=object_id,
        predicted=n_pred,
        occupied=n_true,
        iou=inter / union if union else 1.0,
        precision=inter / n_pred if n_pred else 0.0,
        recall=inter / n_true if n_true else 0.0,
        dilated_iou=float(dilated_iou),
        error=error,
    )


_LABELS = (("guidance_strength", "g"), ("steps", "s"), ("rescale_t", "t"), ("guidance_rescale", "r"))


def sampler_label(overrides: SamplerOverrides) -> str:
    """Short name of the settings ``overrides`` sets, e.g. ``g5,s25`` (``default`` when none)."""
    parts = [f"{short}{getattr(overrides, field):g}" for field, short in _LABELS
             if getattr(overrides, field) is not None]
    return ",".join(parts) or "default"


def sample_structures(release: Path, pictures: Sequence[Path], *, device: str, seed: int,
                      grid: int = STRUCTURE_GRID,
                      overrides: SamplerOverrides | None = None) -> list[np.ndarray | str]:
    """Stage 1 of ``release`` for each picture, as generation runs it: bool ``[grid]^3`` each, or
    the message of the pipeline's refusal of that picture (e.g. no opaque foreground).

    ``overrides`` replace the release's stage-1 sampler settings (None: keep them).
    """
    from backend.pipeline.api import GenerateRequest
    from backend.pipeline.errors import InputError
    from backend.pipeline.image import load_and_preprocess
    from backend.pipeline.image_to_3d import stage_params, view_conditions
    from backend.pipeline.progress import Tracker
    from backend.pipeline.runtime import ModelStore, Runtime
    from backend.pipeline.sampler import make_generator
    from backend.pipeline.structure import FlowStructure

    from .evaluation import _encoder_dependencies

    runtime = Runtime(model=str(release), device=device, offline=True,
                      dependencies=_encoder_dependencies(release))
    store = ModelStore(runtime)
    request = GenerateRequest(images=(pictures[0],), output_dir=Path("."),
                              sparse_structure=overrides or SamplerOverrides())
    params = stage_params(store, request).sparse_structure
    dino, structure = store.conditioner(), FlowStructure()
    grids = []
    for picture in pictures:
        try:
            image = load_and_preprocess(picture, None)
        except InputError as exc:
            log.warning("%s: %s", picture, exc)
            grids.append(str(exc))
            continue
        with store.on_device(dino.model):
            cond, neg = view_conditions(dino, [image], 512, 1, None)
        with torch.no_grad():
            gen, tracker = make_generator(seed), Tracker(None, None)
            tracker.begin("sparse_structure")
            coords = structure.occupancy(store, cond, neg, params, gen, grid, tracker)
        occ = np.zeros((grid,) * 3, dtype=bool)
        c = coords[:, 1:].long().cpu().numpy()
        occ[c[:, 0], c[:, 1], c[:, 2]] = True
        grids.append(occ)
    return grids


def evaluate_structure(releases: dict[str, Path], data_dir: Path, out_dir: Path, *, device: str = "cpu",
                       seed: int = 0, limit: int | None = None, view: int | None = None,
                       split: str | None = "test",
                       samplers: Sequence[SamplerOverrides] = ()) -> dict[str, dict[str, float]]:
    """Score stage 1 of every named release on the objects of ``data_dir``.

    ``samplers``: score each release once per set of stage-1 sampler settings instead of with its
    own (results named ``NAME@`` + :func:`sampler_label`), to choose them on training objects
    before a held-out run.

    Objects: the prepared records of ``split`` (None: every prepared object), sorted by id, the
    first ``limit``; each is shown as its condition view ``view`` (None: its most photo-like view,
    :meth:`DataLayout.photo_view`). Writes ``structure_results.jsonl`` (one line per object and release) and
    ``structure_summary.json`` (means and medians per release) into ``out_dir``; returns the summary.
    """
    layout = DataLayout(data_dir)
    records = [r for r in layout.read_records()
               if r.get("status") == "ok" and (split is None or r.get("split") == split)]
    ids = [r["id"] for r in records][:limit]
    if not ids:
        raise ValueError(f"{data_dir}: no prepared objects" + (f" in the {split!r} split" if split else ""))
    pictures = [layout.render_view(i, layout.photo_view(i) if view is None else view) for i in ids]
    truths = []
    for i in ids:
        with np.load(layout.ss_occupancy(i)) as npz:
            truths.append(pooled_occupancy(npz["cells"], STRUCTURE_GRID))
    out_dir.mkdir(parents=True, exist_ok=True)
    summary, lines = {}, []
    runs = [(f"{name}@{sampler_label(o)}", release, o) for name, release in releases.items()
            for o in samplers] or [(name, release, None) for name, release in releases.items()]
    for name, release, overrides in runs:
        log.info("stage 1 of %s on %d objects", name, len(ids))
        predicted = sample_structures(release, pictures, device=device, seed=seed, overrides=overrides)
        scores = [score_structure(i, np.zeros_like(t), t, error=p) if isinstance(p, str)
                  else score_structure(i, p, t) for i, p, t in zip(ids, predicted, truths)]
        lines += [json.dumps({"release": name, **asdict(s)}) for s in scores]
        summary[name] = {
            "objects": len(scores),
            "failed": sum(1 for s in scores if s.error),
            **{f"{k}_mean": float(np.mean([getattr(s, k) for s in scores])) for k in
               ("iou", "dilated_iou", "precision", "recall")},
            **{f"{k}_median": float(np.median([getattr(s, k) for s in scores]))
               for k in ("iou", "dilated_iou")},
            "predicted_cells_median": float(np.median([s.predicted for s in scores])),
            "occupied_cells_median": float(np.median([s.occupied for s in scores])),
        }
    (out_dir / "structure_results.jsonl").write_text("\n".join(lines) + "\n")
    (out_dir / "structure_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
