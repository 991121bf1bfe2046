"""Held-out evaluation of a trained TRELLIS.2 release: surface metrics, baselines, tables and a picture grid.

Metrics: :mod:`backend.train.metrics` (Chamfer distance, F-score at 1% and 5% of the diagonal,
base-colour error, after canonical normalization).

The driver :func:`evaluate_release` generates one asset per held-out object from one condition
view with our pipeline and scores the *decoded* mesh (the networks' output before the export's
cleanup, decimation, unwrapping and baking; base colour per vertex from the decoded PBR voxels)
against the object's ground-truth mesh, runs the
baselines (the same networks with random weights; nearest-picture retrieval from the training
split), and writes ``results.jsonl``, ``summary.json``, ``table.md`` and ``grid.png``.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from backend.colorspace import srgb_to_linear
from backend.fileio import write_atomic
from backend.geometry import MeshError, TriangleMesh
from backend.pipeline.api import GenerateRequest, SamplerOverrides

from .metrics import (
    F_SCORE_FRACTIONS,
    SurfaceMetrics,
    SurfaceReference,
    canonical_normalize,
    compare_samples,
    surface_reference,
)

log = logging.getLogger(__name__)


METHOD_OURS = "ours"
BASELINE_RANDOM = "random"
BASELINE_RETRIEVAL = "retrieval"
BASELINES = (BASELINE_RANDOM, BASELINE_RETRIEVAL)

STRUCTURE_FLOW = "flow"  # stage 1 as the release predicts it (the product)
STRUCTURE_TRUE = "true"  # stage 1 answered by each object's own occupancy (an ablation)
STRUCTURES = (STRUCTURE_FLOW, STRUCTURE_TRUE)

GRID_ROWS = 8
GRID_COLUMNS = ("input", METHOD_OURS, BASELINE_RETRIEVAL, "ground truth")
RETRIEVAL_PICTURE_SIDE = 32


class EvaluationError(RuntimeError):
    """The evaluation cannot run at all (no held-out objects, no release); says what is missing."""


# ================================================================================ baselines


def write_random_release(release_dir: str | Path, out_dir: str | Path, seed: int = 0) -> Path:
    """A copy of a release whose networks have the same configs but freshly initialised random weights.

    Every ``ckpts/NAME.json`` of ``release_dir`` is rebuilt with
    :func:`backend.models.tiny_checkpoint.write_checkpoint` (the class's own initialisation from a
    forked torch generator seeded by ``seed``; the global torch RNG is left alone). That helper
    shifts a sparse-structure decoder's output bias so about 0.2% of the grid decodes as
    occupied, which keeps random-weight runs tractable; everything else is as initialised.
    ``pipeline.json``, ``texturing_pipeline.json`` and every other folder (the frozen image
    encoder) are copied unchanged; an absolute image-encoder path inside ``release_dir`` is
    redirected to the copy. Networks that ``pipeline.json`` takes from outside the release stay
    what they are (logged).

    Returns ``out_dir``. Raises EvaluationError when the release has no ``ckpts/*.json``.
    """
    from backend.models.loading import read_model_config
    from backend.models.tiny_checkpoint import write_checkpoint

    source, target = Path(release_dir).resolve(), Path(out_dir).resolve()
    configs = sorted((source / "ckpts").glob("*.json"))
    if not configs:
        raise EvaluationError(f"{source}: no ckpts/*.json to copy the network configs from")
    ckpts = target / "ckpts"
    ckpts.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for path in configs:
            spec = read_model_config(path)
            write_checkpoint(ckpts, path.stem, spec.name, spec.args)
    for child in source.iterdir():
        if child.is_dir() and child.name != "ckpts":
            shutil.copytree(child, target / child.name, dirs_exist_ok=True)
    for name in ("pipeline.json", "texturing_pipeline.json"):
        if not (source / name).is_file():
            continue
        doc = json.loads((source / name).read_text(encoding="utf-8"))
        args = doc.get("args", {})
        encoder = args.get("image_cond_model", {}).get("args", {})
        encoder_path = Path(str(encoder.get("model_name", "")))
        if encoder_path.is_absolute() and encoder_path.is_relative_to(source):
            encoder["model_name"] = str(target / encoder_path.relative_to(source))
        for key, ref in args.get("models", {}).items():
            if not str(ref).startswith("ckpts/"):
                log.warning("random release: %s = %s is taken from outside the release (not randomised)",
                            key, ref)
        write_atomic(target / name, json.dumps(doc, indent=2).encode())
    log.info("wrote a random-weight copy of %s to %s", source, target)
    return target


def _encoder_dependencies(release_dir: Path) -> dict[str, str]:
    """Image-encoder name -> absolute folder when ``pipeline.json`` names a folder relative to the release."""
    doc = json.loads((release_dir / "pipeline.json").read_text(encoding="utf-8"))
    name = str(doc.get("args", {}).get("image_cond_model", {}).get("args", {}).get("model_name", ""))
    if name and not Path(name).is_absolute() and (release_dir / name).is_dir():
        return {name: str((release_dir / name).resolve())}
    return {}


def retrieval_vector(picture: str | Path) -> np.ndarray:
    """A condition picture as the model would see it (alpha crop, premultiplied on black), downscaled.

    Returns a float32 vector of ``RETRIEVAL_PICTURE_SIDE^2 x 3`` values in [0, 1] (box filter).
    Raises the pipeline's InputError for unreadable pictures or an empty foreground.
    """
    from backend.pipeline.image import load_and_preprocess

    side = RETRIEVAL_PICTURE_SIDE
    small = load_and_preprocess(picture, None).resize((side, side), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32).reshape(-1) / 255.0


class PictureRetrieval:
    """Nearest training object by pixel L2 between downscaled premultiplied condition pictures.

    Every condition picture of every training object is indexed (``renders_cond/{id}/*.png``);
    the answer for a query picture is the object owning the nearest one.
    """

    def __init__(self, data_dir: str | Path, object_ids: Sequence[str]) -> None:
        vectors, owners = [], []
        for object_id in object_ids:
            for picture in sorted((Path(data_dir) / "renders_cond" / object_id).glob("*.png")):
                try:
                    vectors.append(retrieval_vector(picture))
                except Exception as exc:  # noqa: BLE001 - one bad picture must not stop the index
                    log.warning("retrieval index: skipping %s (%s)", picture, exc)
                    continue
                owners.append(object_id)
        if not vectors:
            raise EvaluationError(f"{data_dir}: no usable condition picture among the training objects")
        self.vectors = np.stack(vectors)
        self.owners = owners

    def nearest(self, picture: str | Path) -> tuple[str, float]:
        """The training object whose picture is nearest to ``picture``, and that L2 distance."""
        distances = np.linalg.norm(self.vectors - retrieval_vector(picture)[None], axis=1)
        best = int(np.argmin(distances))
        return self.owners[best], float(distances[best])


# ================================================================================ the driver


@dataclass
class ObjectResult:
    """One method's outcome on one held-out object (a JSON line of ``results.jsonl``).

    ``status`` is "ok" or "failed"; a failure keeps the error message, counts as F-score 0 and has
    no Chamfer distance or colour error (None in JSON).
    """

    object_id: str
    method: str
    status: str
    chamfer: float | None = None
    f_score_1pct: float = 0.0
    f_score_5pct: float = 0.0
    color_error: float | None = None
    prediction: str | None = None
    error: str | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluationReport:
    """Where :func:`evaluate_release` wrote its outputs, and the per-method summary it computed."""

    results: Path
    summary: Path
    table: Path
    grid: Path
    methods: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class _HeldOut:
    object_id: str
    picture: Path
    gt_mesh: Path
    occupancy: Path  # the data toolkit's 64^3 cells of the object (``ss_occupancy``)


def read_mesh_z_up(path: str | Path) -> TriangleMesh:
    """A mesh file read in the pipeline's Z-up frame (glTF files are Y-up)."""
    from backend.meshio import read_mesh, y_up_to_z_up

    mesh = read_mesh(path)
    return y_up_to_z_up(mesh) if Path(path).suffix.lower() in (".glb", ".gltf") else mesh


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def summarize(results: Sequence[ObjectResult], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per method: object and failure counts, Chamfer median/mean over successes, F-score means and
    medians over all objects (failures count as 0), colour-error median/mean over successes."""
    summary = {}
    for method in methods:
        rows = [r for r in results if r.method == method]
        ok = [r for r in rows if r.status == "ok"]
        chamfer = np.array([r.chamfer for r in ok], dtype=np.float64)
        color = np.array([r.color_error for r in ok], dtype=np.float64)
        f1 = np.array([r.f_score_1pct for r in rows], dtype=np.float64)
        f5 = np.array([r.f_score_5pct for r in rows], dtype=np.float64)

        def stat(fn, values):
            return _finite_or_none(float(fn(values))) if len(values) else None

        summary[method] = {
            "objects": len(rows), "failed": len(rows) - len(ok),
            "chamfer_median": stat(np.median, chamfer), "chamfer_mean": stat(np.mean, chamfer),
            "f_score_1pct_mean": stat(np.mean, f1), "f_score_1pct_median": stat(np.median, f1),
            "f_score_5pct_mean": stat(np.mean, f5), "f_score_5pct_median": stat(np.median, f5),
            "color_error_median": stat(np.median, color), "color_error_mean": stat(np.mean, color),
        }
    return summary


def markdown_table(summary: dict[str, dict[str, Any]]) -> str:
    """The summary as a Markdown table (one row per method) with a note on the conventions."""

    def cell(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    lines = ["| method | objects | failed | Chamfer median | Chamfer mean | F@1% mean | F@5% mean "
             "| colour error mean |",
             "|---|---|---|---|---|---|---|---|"]
    for method, s in summary.items():
        lines.append(f"| {method} | {s['objects']} | {s['failed']} | {cell(s['chamfer_median'])} "
                     f"| {cell(s['chamfer_mean'])} | {cell(s['f_score_1pct_mean'])} "
                     f"| {cell(s['f_score_5pct_mean'])} | {cell(s['color_error_mean'])} |")
    lines += ["", "Both meshes are normalized on their own (bounding box centred, longest side 1). Chamfer: "
              "mean of the two directed mean nearest-neighbour distances (unsquared); lower is better. "
              "F@t: F-score at t of the ground-truth bounding-box diagonal; failures count as 0. Colour "
              "error: mean absolute sRGB [0, 1] base-colour difference from each ground-truth sample to "
              "the nearest predicted sample. Chamfer and colour error are over successful objects only."]
    return "\n".join(lines) + "\n"


def _score(prediction: Path | TriangleMesh, reference: SurfaceReference, num_points: int, seed: int,
           nn_device: str | None) -> SurfaceMetrics:
    mesh = prediction if isinstance(prediction, TriangleMesh) else read_mesh_z_up(prediction)
    pred = surface_reference(mesh, num_points, seed + 1)
    return compare_samples(pred.samples, reference.samples, reference.diagonal, nn_device)


def decoded_mesh(asset: Any) -> TriangleMesh:
    """A decoded sample (:class:`backend.pipeline.stages.DecodedAsset`) as a Z-up mesh whose vertex
    colours (linear, as glTF's) are the base colour its PBR voxels hold (sRGB) at each vertex."""
    vertices = np.asarray(asset.vertices, dtype=np.float64)
    if len(asset.faces) == 0:
        raise MeshError("the decoded shape has no surface")
    srgb = np.clip(asset.attribute_fn()(vertices.astype(np.float32))[:, :3], 0.0, 1.0)
    linear = srgb_to_linear(np.asarray(srgb, dtype=np.float64))
    colors = np.concatenate([linear, np.ones((len(vertices), 1))], axis=1)
    return TriangleMesh(vertices, np.asarray(asset.faces, dtype=np.int64), vertex_colors=colors)


def _failed(object_id: str, method: str, exc: BaseException, seconds: float) -> ObjectResult:
    log.warning("%s / %s failed: %s: %s", object_id, method, type(exc).__name__, exc)
    return ObjectResult(object_id, method, "failed", error=f"{type(exc).__name__}: {exc}", seconds=seconds)


def _succeeded(object_id: str, method: str, metrics: SurfaceMetrics, prediction: Path,
               seconds: float, **extra: Any) -> ObjectResult:
    return ObjectResult(object_id, method, "ok", chamfer=metrics.chamfer, f_score_1pct=metrics.f_score_1pct,
                        f_score_5pct=metrics.f_score_5pct, color_error=metrics.color_error,
                        prediction=str(prediction), seconds=seconds, extra=dict(extra))


class TrueOccupancy:
    """A structure sampler that answers stage 1 with the object's own occupancy.

    An ablation: with a perfect sparse structure, the scores measure the shape and texture flows
    and the decoders alone, so the gap to the product's scores is what stage 1 costs. ``cells``
    (``[K, 3]`` cells of the 64^3 grid, set before each object) are max-pooled to the asked grid,
    like stage 1 pools its decoded occupancy. The cascades' high-resolution grid stays the
    release's (the shape decoder's subdivision of the generated shape).
    """

    def __init__(self) -> None:
        from backend.pipeline.structure import FlowStructure

        self.cells: np.ndarray | None = None
        self._flow = FlowStructure()

    def occupancy(self, store, cond, neg_cond, params, gen, grid, tracker) -> torch.Tensor:
        from backend.train.data.layout import pooled_occupancy

        if self.cells is None:
            raise EvaluationError("TrueOccupancy: no object's occupancy was set")
        xyz = torch.from_numpy(pooled_occupancy(self.cells, grid)).nonzero().int()  # [K, 3]
        samples = neg_cond.shape[0]  # one unconditional row per sample, whatever the views
        batch = torch.arange(samples, dtype=torch.int32).repeat_interleave(len(xyz))[:, None]
        return torch.cat([batch, xyz.repeat(samples, 1)], dim=1).to(neg_cond.device)

    def cascade(self, store, low_res_shape, target, max_tokens):
        return self._flow.cascade(store, low_res_shape, target, max_tokens)


def _generated_results(release: Path, method: str, objects: Sequence[_HeldOut],
                       references: dict[str, SurfaceReference | Exception], out_dir: Path, *, device: str,
                       seed: int, pipeline_type: str, steps: int | None,
                       num_points: int, nn_device: str | None, structure: str) -> list[ObjectResult]:
    """Generate every object with one generator (networks stay loaded) and score each decoded mesh
    (also written, vertex-coloured, to ``OUT/predictions/{method}/{id}.glb``). ``structure``: one
    of :data:`STRUCTURES`."""
    from backend.meshio import write_glb, z_up_to_y_up
    from backend.pipeline.generator import Trellis2Generator
    from backend.pipeline.runtime import Runtime

    runtime = Runtime(model=str(release), device=device, offline=True,
                      dependencies=_encoder_dependencies(release))
    true_occupancy = TrueOccupancy() if structure == STRUCTURE_TRUE else None
    generator = Trellis2Generator(runtime, structure=true_occupancy)
    overrides = SamplerOverrides(steps=steps)
    folder = out_dir / "predictions" / method
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    for number, obj in enumerate(objects, 1):
        start = time.perf_counter()
        try:
            reference = references[obj.object_id]
            if isinstance(reference, Exception):
                raise reference
            if true_occupancy is not None:
                with np.load(obj.occupancy) as npz:
                    true_occupancy.cells = npz["cells"]
            request = GenerateRequest(images=(obj.picture,), output_dir=folder, pipeline_type=pipeline_type,
                                      seed=seed, sparse_structure=overrides, shape=overrides,
                                      texture=overrides, name=obj.object_id)
            mesh = decoded_mesh(generator.decode(request)[0])
            glb = folder / f"{obj.object_id}.glb"
            write_glb(glb, z_up_to_y_up(mesh))
            metrics = _score(mesh, reference, num_points, seed, nn_device)
            results.append(_succeeded(obj.object_id, method, metrics, glb, time.perf_counter() - start,
                                      faces=mesh.num_faces))
        except Exception as exc:  # noqa: BLE001 - one object's failure is a result, not the end of the run
            results.append(_failed(obj.object_id, method, exc, time.perf_counter() - start))
        log.info("%s %d/%d %s: %s", method, number, len(objects), obj.object_id, results[-1].status)
    return results


def _retrieval_results(data_dir: Path, mesh_dir: Path, objects: Sequence[_HeldOut],
                       references: dict[str, SurfaceReference | Exception], *, seed: int,
                       num_points: int, nn_device: str | None) -> list[ObjectResult]:
    """The nearest training object's ground-truth mesh as the prediction of every held-out object."""
    from backend.train.datasets import read_records

    start = time.perf_counter()
    try:
        index = PictureRetrieval(data_dir, [r["id"] for r in read_records(data_dir, "train")])
    except Exception as exc:  # noqa: BLE001 - no index: every object fails, the run goes on
        seconds = time.perf_counter() - start
        return [_failed(obj.object_id, BASELINE_RETRIEVAL, exc, seconds) for obj in objects]
    log.info("retrieval index: %d pictures of %d training objects", len(index.owners), len(set(index.owners)))
    results = []
    for obj in objects:
        start = time.perf_counter()
        try:
            reference = references[obj.object_id]
            if isinstance(reference, Exception):
                raise reference
            owner, distance = index.nearest(obj.picture)
            prediction = mesh_dir / f"{owner}.glb"
            metrics = _score(prediction, reference, num_points, seed, nn_device)
            results.append(_succeeded(obj.object_id, BASELINE_RETRIEVAL, metrics, prediction,
                                      time.perf_counter() - start, retrieved=owner,
                                      picture_distance=distance))
        except Exception as exc:  # noqa: BLE001
            results.append(_failed(obj.object_id, BASELINE_RETRIEVAL, exc, time.perf_counter() - start))
    return results


def grid_camera():
    """The fixed 3/4 view of the picture grid: yaw -45 deg (between +X and -Y), 30 deg up, framing
    the canonically normalized mesh's circumsphere."""
    from backend.render import framing_fov, orbit_camera

    radius = 2.4
    return orbit_camera(-math.pi / 4, math.pi / 6, radius, framing_fov(radius))


def _over_white(rgba: np.ndarray) -> Image.Image:
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8), "RGB")


def _note_cell(side: int, text: str) -> Image.Image:
    cell = Image.new("RGB", (side, side), (200, 200, 200))
    ImageDraw.Draw(cell).text((4, side // 2 - 6), text, fill=(90, 0, 0))
    return cell


def _mesh_cell(path: Path | None, side: int, device: str) -> Image.Image:
    from backend.render import render_mesh

    if path is None:
        return _note_cell(side, "failed / n/a")
    try:
        mesh = canonical_normalize(read_mesh_z_up(path))
        # Geometry and colour are what is compared: draw every material opaque (random or
        # half-trained networks often decode a faint alpha that would hide the shape).
        mesh = replace(mesh, materials=[replace(m, alpha_mode="OPAQUE") for m in mesh.materials])
        return _over_white(render_mesh(mesh, grid_camera(), side, device=device).rgba_uint8())
    except Exception as exc:  # noqa: BLE001 - a picture that cannot be drawn is marked, not fatal
        log.warning("grid: cannot render %s (%s)", path, exc)
        return _note_cell(side, "render failed")


def _picture_cell(path: Path, side: int) -> Image.Image:
    try:
        with Image.open(path) as picture:
            rgba = np.asarray(picture.convert("RGBA"))
    except Exception as exc:  # noqa: BLE001
        log.warning("grid: cannot read %s (%s)", path, exc)
        return _note_cell(side, "unreadable")
    cell = _over_white(rgba)
    cell.thumbnail((side, side), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    canvas.paste(cell, ((side - cell.width) // 2, (side - cell.height) // 2))
    return canvas


def write_grid(path: Path, rows: Sequence[tuple[str, Path, dict[str, Path | None]]], cell: int,
               device: str, columns: Sequence[str] = GRID_COLUMNS) -> Path:
    """A PNG of one row per object and ``columns`` (of ``GRID_COLUMNS``), written atomically.

    Args:
        rows: ``(object id, condition picture, {column: mesh file or None})`` per row; the
            "input" column shows the picture, the others render the mesh (canonically normalized,
            every material drawn opaque, from :func:`grid_camera`, over white); None or a missing
            column is a grey "n/a" cell.
        cell: side of one cell in pixels.
    """
    header = 16
    grid = Image.new("RGB", (cell * len(columns), header + cell * len(rows)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for c, title in enumerate(columns):
        draw.text((c * cell + 4, 2), title, fill=(0, 0, 0))
    for r, (object_id, picture, meshes) in enumerate(rows):
        top = header + r * cell
        for c, column in enumerate(columns):
            if column == "input":
                image = _picture_cell(picture, cell)
                ImageDraw.Draw(image).text((3, 3), object_id, fill=(0, 0, 160))
            else:
                image = _mesh_cell(meshes.get(column), cell, device)
            grid.paste(image, (c * cell, top))

    def save(handle):
        grid.save(handle, format="PNG")

    return write_atomic(path, save)


def _write_results(path: Path, results: Sequence[ObjectResult]) -> None:
    lines = []
    for r in results:
        row = asdict(r)
        for key in ("chamfer", "color_error"):
            row[key] = _finite_or_none(row[key])
        lines.append(json.dumps(row))
    write_atomic(path, ("\n".join(lines) + "\n").encode())


def evaluate_release(release_dir: str | Path, data_dir: str | Path, mesh_dir: str | Path, out_dir: str | Path,
                     *, device: str = "cuda", view: int | None = None, seed: int = 0,
                     pipeline_type: str = "512", limit: int | None = None,
                     baselines: Sequence[str] = BASELINES, num_points: int = 50_000,
                     steps: int | None = None, grid_cell: int = 256,
                     structure: str = STRUCTURE_FLOW) -> EvaluationReport:
    """Evaluate a release on the held-out objects of a data folder, with baselines; write the reports.

    For every record of ``DATA/metadata.jsonl`` with split "test" and status "ok" (sorted by id,
    the first ``limit``), the condition picture ``DATA/renders_cond/{id}/{view:03d}.png`` (``view``
    None: each object's most photo-like view, :meth:`DataLayout.photo_view`) is
    generated with the release (networks loaded once, kept warm; ``pipeline_type``; ``seed``;
    ``steps`` sampler steps per stage, None = pipeline.json's) and its decoded mesh is scored
    against ``MESH/{id}.glb`` (see the module docstring; ground-truth samples use ``seed``,
    predicted ones ``seed + 1``). No export runs: its decimation of a dense, badly shaped surface
    can take minutes on its own, and the scores would then measure the exporter as well.

    ``structure`` "flow" runs stage 1 as the release does; "true" answers it with each object's
    own occupancy (``DATA/ss_occupancy/{id}.npz``, :class:`TrueOccupancy`) for the release and
    the random baseline alike: an ablation that shows what stage 1 costs.

    Baselines (``baselines``, any of "random", "retrieval"):
        random: the same configs with random weights (:func:`write_random_release` into
            ``OUT/random_release``), run exactly like the release.
        retrieval: the ground-truth mesh of the training object with the nearest condition
            picture (:class:`PictureRetrieval`).

    A failure on one object (unreadable picture, no voxels, unreadable mesh, ...) is recorded and
    never stops the run. Writes, atomically, into ``out_dir``: ``results.jsonl`` (one
    :class:`ObjectResult` per object and method), ``summary.json``, ``table.md`` and ``grid.png``
    (the first 8 objects; columns input / ours / retrieval / ground truth). Generated assets go
    to ``OUT/predictions/{method}/{id}.glb`` (the decoded mesh with vertex colours).

    Raises:
        EvaluationError: no held-out objects; ValueError: an unknown baseline name;
        backend.train.datasets.DataError: no ``metadata.jsonl``.
    """
    from backend.train.conditioning import condition_image_path
    from backend.train.data.layout import DataLayout
    from backend.train.datasets import read_records

    release_dir, data_dir, mesh_dir, out_dir = (Path(p) for p in (release_dir, data_dir, mesh_dir, out_dir))
    if structure not in STRUCTURES:
        raise ValueError(f"unknown structure {structure!r} (choose from {', '.join(STRUCTURES)})")
    unknown = sorted(set(baselines) - set(BASELINES))
    if unknown:
        raise ValueError(f"unknown baseline {unknown[0]!r} (choose from {', '.join(BASELINES)})")
    records = read_records(data_dir, "test")
    records = records[:limit] if limit is not None else records
    if not records:
        raise EvaluationError(f"{data_dir}: no held-out objects (split 'test', status 'ok')")
    layout = DataLayout(data_dir)
    views = {r["id"]: layout.photo_view(r["id"]) if view is None else view for r in records}
    objects = [_HeldOut(r["id"], condition_image_path(data_dir, r["id"], views[r["id"]]),
                        mesh_dir / f"{r['id']}.glb", layout.ss_occupancy(r["id"])) for r in records]
    out_dir.mkdir(parents=True, exist_ok=True)
    nn_device = device if torch.device(device).type == "cuda" else None
    log.info("evaluating %s on %d held-out objects (view %s, seed %d)", release_dir, len(objects),
             "nearest a photo's pitch" if view is None else view, seed)

    references: dict[str, SurfaceReference | Exception] = {}
    for obj in objects:
        try:
            references[obj.object_id] = surface_reference(read_mesh_z_up(obj.gt_mesh), num_points, seed)
        except Exception as exc:  # noqa: BLE001 - recorded as a failure of every method on this object
            references[obj.object_id] = exc

    methods = [METHOD_OURS, *(b for b in BASELINES if b in baselines)]
    results_path = out_dir / "results.jsonl"
    common = dict(device=device, seed=seed, pipeline_type=pipeline_type, steps=steps,
                  num_points=num_points, nn_device=nn_device, structure=structure)
    results = _generated_results(release_dir, METHOD_OURS, objects, references, out_dir, **common)
    _write_results(results_path, results)
    if BASELINE_RANDOM in baselines:
        start = time.perf_counter()
        try:
            random_release = write_random_release(release_dir, out_dir / "random_release", seed)
        except Exception as exc:  # noqa: BLE001 - no random release: every object fails for this baseline
            seconds = time.perf_counter() - start
            results += [_failed(o.object_id, BASELINE_RANDOM, exc, seconds) for o in objects]
        else:
            results += _generated_results(random_release, BASELINE_RANDOM, objects, references, out_dir,
                                          **common)
        _write_results(results_path, results)
    if BASELINE_RETRIEVAL in baselines:
        results += _retrieval_results(data_dir, mesh_dir, objects, references, seed=seed,
                                      num_points=num_points, nn_device=nn_device)
        _write_results(results_path, results)

    summary = summarize(results, methods)
    summary_path = write_atomic(out_dir / "summary.json", json.dumps({
        "release": str(release_dir), "data": str(data_dir), "meshes": str(mesh_dir), "views": views,
        "seed": seed, "pipeline_type": pipeline_type, "steps": steps, "num_points": num_points,
        "stage_1": "each object's true occupancy" if structure == STRUCTURE_TRUE else "the release's flow",
        "held_out_objects": len(objects), "f_score_fractions_of_gt_diagonal": list(F_SCORE_FRACTIONS),
        "chamfer": "mean of the two directed mean nearest distances, unsquared, canonical normalization",
        "color_error": "mean absolute sRGB [0, 1] difference, GT sample -> nearest predicted sample",
        "methods": summary,
    }, indent=2).encode())
    table_path = write_atomic(out_dir / "table.md", markdown_table(summary).encode())

    by_key = {(r.object_id, r.method): r for r in results}

    def prediction(object_id: str, method: str) -> Path | None:
        result = by_key.get((object_id, method))
        return Path(result.prediction) if result is not None and result.status == "ok" else None

    rows = [(o.object_id, o.picture, {METHOD_OURS: prediction(o.object_id, METHOD_OURS),
                                      BASELINE_RETRIEVAL: prediction(o.object_id, BASELINE_RETRIEVAL),
                                      "ground truth": o.gt_mesh if o.gt_mesh.is_file() else None})
            for o in objects[:GRID_ROWS]]
    # The retrieval column only where that baseline ran (a grey "n/a" column would read as failures).
    columns = [c for c in GRID_COLUMNS if c != BASELINE_RETRIEVAL or BASELINE_RETRIEVAL in baselines]
    grid_path = write_grid(out_dir / "grid.png", rows, grid_cell, device, columns)
    log.info("evaluation written to %s", out_dir)
    return EvaluationReport(results_path, summary_path, table_path, grid_path, summary)
