"""Headless batch: many images (or mesh + image pairs) -> one .glb and/or .blend each, plus a report.

The installed extension registers it as a Blender command (see :mod:`.cli_command`)::

    blender -c trellis2 --input DIR --output OUT [options]
    blender -c trellis2 --input jobs.json --output OUT

and ``scripts/batch_generate.py`` runs the same code from a checkout. The flags and their
defaults are those of ``python -m backend generate``: ``--pipeline``, ``--seed``, ``--faces``,
``--texture-size``, ``--model``, ``--device``, ``--low-vram``, ``--offline`` (downloading missing
weights is allowed unless Blender's online access is off), ``--rembg`` (``solid`` unless changed),
``--rembg-model``, ``--image-encoder``, ``--ss-decoder``, ``--commercial-safe``.

``--input`` takes a folder (its image files), image files, or a manifest::

    {"defaults": {"pipeline_type": "1024_cascade", "texture_size": 2048},
     "items": [{"image": "chair.png", "seed": 7, "name": "chair_a", "faces": 100000,
                "steps": {"shape": 20}, "guidance": {"shape": 6.0}}, "lamp.png",
               {"image": "car_front.png", "views": ["car_side.png", "car_back.png"],
                "multiview": "stochastic"},
               {"mesh": "old_chair.glb", "image": "walnut.png", "resolution": 512}]}

``views`` are more pictures of the item's object (up to 5 besides ``image``); ``multiview`` says
how they are combined ("stochastic", the default, or "multidiffusion").
An item with a ``mesh`` is a retexture: that mesh gets new PBR textures from ``image``. Paths in
a manifest are relative to the manifest. Every item gets a fresh scene; a failed item is recorded
and the batch goes on. ``OUT/report.json`` lists each item's status (ok, failed, skipped),
timings, outputs and error; it is rewritten after every item. Items already done (ok in an
earlier report, outputs present) are skipped unless ``--force``. The exit code is 1 when any
item failed, 2 for bad arguments, else 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from . import protocol
from .core import atomic

log = logging.getLogger(__name__)

COMMAND = "trellis2"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tga", ".tif", ".tiff", ".exr"}
ITEM_KEYS = {"image", "mesh", "name", "seed", "pipeline_type", "texture_size", "faces", "resolution", "steps",
             "guidance", "views", "multiview"}
STAGES = ("sparse_structure", "shape", "texture")
# --rembg spellings -> protocol.Load.background_removal ("rmbg" kept from earlier releases).
REMBG_TO_PROTOCOL = {**protocol.BACKGROUND_REMOVAL_FLAGS, "rmbg": "rmbg"}


class BatchError(Exception):
    """Bad arguments or input: the batch stops before any item (exit code 2)."""


def build_parser() -> argparse.ArgumentParser:
    """The command's options (those of ``python -m backend generate`` where both have one)."""
    parser = argparse.ArgumentParser(prog=f"blender -c {COMMAND}", description=__doc__.splitlines()[0])
    parser.add_argument("--input", nargs="+", required=True, type=Path,
                        help="a folder of images, image files, or a manifest .json")
    parser.add_argument("-o", "--output", required=True, type=Path, help="folder for outputs and report.json")
    parser.add_argument("--format", default="glb,blend", help="comma-separated: glb, blend (default both)")
    parser.add_argument("--preview", action="store_true", help="also render a 256 px Cycles preview PNG")
    parser.add_argument("--pipeline", "--pipeline-type", dest="pipeline_type",
                        default=protocol.DEFAULT_PIPELINE_TYPE, choices=protocol.PIPELINE_TYPES,
                        help=f"resolution mode (default {protocol.DEFAULT_PIPELINE_TYPE})")
    parser.add_argument("--seed", type=int, default=protocol.DEFAULT_SEED,
                        help="seed for items that do not set one")
    parser.add_argument("--texture-size", type=int, default=protocol.Export.texture_size)
    parser.add_argument("--faces", type=int, default=protocol.Export.faces, help="decimation target (faces)")
    parser.add_argument("--backend-python", default="", help="the backend's interpreter (default: found)")
    parser.add_argument("--model", default="",
                        help=f"local TRELLIS.2 folder, Hugging Face repo id, or "
                             f"'{protocol.BUNDLED_MINI_MODEL}' (default: the add-on's Model Source "
                             "preference, microsoft/TRELLIS.2-4B unless changed)")
    parser.add_argument("--device", default="",
                        help="auto, cuda, cuda:N, mps or cpu (default: the add-on's)")
    parser.add_argument("--low-vram", action="store_true",
                        help="move each network to the GPU only for its stage")
    parser.add_argument("--offline", action="store_true",
                        help="never download; without it, missing weights are downloaded when Blender's "
                             "online access is on")
    parser.add_argument("--online", action="store_true", help=argparse.SUPPRESS)  # earlier releases' opt-in
    parser.add_argument("--rembg", "--background-removal", dest="rembg", choices=sorted(REMBG_TO_PROTOCOL),
                        default=protocol.DEFAULT_BACKGROUND_REMOVAL,
                        help="pictures without transparency: none (refuse), solid (plain-background keyer) "
                             "or birefnet (RMBG-2.0 / BiRefNet; consents to running that model's own code); "
                             f"default {protocol.DEFAULT_BACKGROUND_REMOVAL}")
    parser.add_argument("--rembg-model", "--rmbg-model", dest="rembg_model", default="",
                        help="local RMBG-2.0 / BiRefNet folder for --rembg birefnet")
    parser.add_argument("--image-encoder", default="", help="local DINOv3 folder, used instead of the hub")
    parser.add_argument("--ss-decoder", default="",
                        help="local microsoft/TRELLIS-image-large folder, used instead of the hub")
    parser.add_argument("--commercial-safe", action="store_true",
                        help="never use nvdiffrast or RMBG-2.0 / BiRefNet (non-commercial licences)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per item")
    parser.add_argument("--force", action="store_true", help="redo items that are already done")
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.formats = {f.strip() for f in args.format.split(",") if f.strip()}
    if not args.formats <= {"glb", "blend"} or not args.formats:
        parser.error("--format takes glb, blend or both")
    return args


def collect_items(inputs: list[Path], args: argparse.Namespace) -> list[dict]:
    """Every item to make, with its own settings filled in from the manifest and the options."""
    defaults = {"pipeline_type": args.pipeline_type, "seed": args.seed, "texture_size": args.texture_size,
                "faces": args.faces, "resolution": protocol.Retexture.resolution, "steps": {}, "guidance": {}}
    items: list[dict] = []
    for path in inputs:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            items += [{**defaults, "image": str(p.resolve())} for p in files]
        elif path.suffix.lower() == ".json":
            items += _manifest_items(path, defaults)
        else:
            items.append({**defaults, "image": str(path.resolve())})
    names: dict[str, int] = {}
    for item in items:
        base = item.get("name") or Path(item.get("mesh") or item["image"]).stem
        names[base] = names.get(base, 0) + 1
        item["name"] = base if names[base] == 1 else f"{base}_{names[base]}"
    return items


def _manifest_items(path: Path, defaults: dict) -> list[dict]:
    manifest = json.loads(path.read_text(encoding="utf-8"))
    entries = manifest if isinstance(manifest, list) else manifest.get("items", [])
    local = {**defaults, **(manifest.get("defaults", {}) if isinstance(manifest, dict) else {})}
    items = []
    for entry in entries:
        entry = {"image": entry} if isinstance(entry, str) else dict(entry)
        unknown = set(entry) - ITEM_KEYS
        if unknown:
            raise BatchError(f"{path}: unknown item keys {sorted(unknown)} "
                             f"(known: {', '.join(sorted(ITEM_KEYS))})")
        if "image" not in entry:
            raise BatchError(f"{path}: an item has no 'image'")
        for key in ("image", "mesh"):
            if key in entry:
                file = Path(entry[key])
                entry[key] = str(file if file.is_absolute() else (path.parent / file).resolve())
        entry["views"] = [str(v if v.is_absolute() else (path.parent / v).resolve())
                          for v in map(Path, entry.get("views", []))]
        items.append({**local, **entry})
    return items


def _write_json(path: Path, data: dict) -> None:
    atomic.write_bytes(path, json.dumps(data, indent=2).encode("utf-8"))


def _clear_scene(bpy) -> None:
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    bpy.data.orphans_purge(do_local_ids=True, do_linked_ids=True, do_recursive=True)


def _spec(item: dict, out: Path, formats: set[str]):
    from .core import jobs

    sampler = {stage: (item["steps"].get(stage), item["guidance"].get(stage)) for stage in STAGES}
    common = dict(image=item["image"], name=item["name"], output_dir=str(out / ".jobs" / item["name"]),
                  seed=int(item["seed"]), texture_size=int(item["texture_size"]), write_glb="glb" in formats)
    if "mesh" in item:
        return jobs.RetextureSpec(mesh=item["mesh"], resolution=int(item["resolution"]),
                                  texture=sampler["texture"], **common)
    return jobs.GenerateSpec(pipeline_type=item["pipeline_type"], face_target=int(item["faces"]), **sampler,
                             views=tuple(item.get("views", ())),
                             **({"multiview": item["multiview"]} if item.get("multiview") else {}), **common)


def run_item(item: dict, args, session) -> dict:
    import bpy

    from . import scene_io
    from .core import jobs

    name = item["name"]
    out = args.output
    record: dict = {"name": name, "image": item["image"], "seed": item["seed"], "status": "failed",
                    "seconds": {}, "outputs": {}}
    if "mesh" in item:
        record["mesh"] = item["mesh"]
    t0 = time.monotonic()
    spec = _spec(item, out, args.formats)
    missing = [f for f in (item["image"], item.get("mesh"), *item.get("views", ()))
               if f and not Path(f).is_file()]
    if missing:
        record["error"] = {"code": "invalid_request", "message": f"file not found: {missing[0]}"}
        return record
    job = session.wait(session.submit(jobs.Job(spec)), timeout=args.timeout)
    record["seconds"]["backend"] = round(time.monotonic() - t0, 3)
    if job.result is not None:
        record["seconds"]["stages"] = job.result.seconds_per_stage
    if job.state != jobs.OK:
        err = job.error
        record["status"] = "cancelled" if job.state == jobs.CANCELLED else "failed"
        record["error"] = ({"code": err.code, "message": err.message, "hint": err.hint} if err is not None
                           else {"code": job.state, "message": job.state})
        return record
    t1 = time.monotonic()
    _clear_scene(bpy)
    context = bpy.context
    context.scene.cursor.location = (0.0, 0.0, 0.0)
    try:
        obj = scene_io.import_result(context, job.result_file(), name=name, settings=spec.record())
        record["alpha_mode"] = ("BLEND" if obj.data.materials[0].surface_render_method == "BLENDED"
                                else "OPAQUE")
        record["vertices"], record["faces"] = len(obj.data.vertices), len(obj.data.polygons)
        if "glb" in args.formats:
            record["outputs"]["glb"] = str(_copy_glb(job.glb_file(), out / f"{name}.glb"))
        if "blend" in args.formats:
            path = out / f"{name}.blend"
            bpy.ops.wm.save_as_mainfile(filepath=str(path), copy=True, compress=True)
            record["outputs"]["blend"] = str(path)
        if args.preview:
            from . import render

            record["outputs"]["preview"] = str(render.render_preview(obj, out / f"{name}.png"))
    except Exception as exc:  # noqa: BLE001 - one bad item must not stop the batch
        record["error"] = {"code": "import_failed", "message": f"{type(exc).__name__}: {exc}"}
        return record
    finally:
        _clear_scene(bpy)
    record["seconds"]["import_export"] = round(time.monotonic() - t1, 3)
    record["status"] = "ok"
    return record


def _copy_glb(source: str | None, path: Path) -> Path:
    """The backend's GLB of the item (generate and retexture both write one when asked) at ``path``,
    whole or not at all. Blender does not export it again: the backend is the one GLB writer."""
    if not source or not Path(source).is_file():
        raise FileNotFoundError(f"the backend wrote no GLB for {path.stem} (expected {source or 'one'})")
    atomic.write_bytes(path, Path(source).read_bytes())
    return path


def _already_done(previous: dict, item: dict) -> bool:
    rec = previous.get(item["name"])
    if not rec or rec.get("status") not in ("ok", "skipped"):
        return False
    if [rec.get(k) for k in ("image", "seed", "mesh")] != [item["image"], item["seed"], item.get("mesh")]:
        return False
    return all(Path(p).is_file() for p in rec.get("outputs", {}).values()) and bool(rec.get("outputs"))


def backend_settings(args: argparse.Namespace, online_access: bool):
    """The add-on's backend settings with the command line's choices applied on top."""
    import bpy

    from . import preferences
    from .core import session

    settings = preferences.backend_settings(bpy.context, offline=args.offline or not online_access)
    overrides: dict[str, object] = {"background_removal": REMBG_TO_PROTOCOL[args.rembg]}
    if args.backend_python:
        overrides["python"] = str(Path(args.backend_python).expanduser().absolute())
    if args.model:
        model = Path(args.model).expanduser()
        overrides["model_source"] = str(model.resolve()) if model.is_dir() else args.model
    if args.device:
        overrides["device"] = args.device
    if args.low_vram:
        overrides["low_vram"] = True
    if args.rembg_model:
        overrides["background_remover"] = str(Path(args.rembg_model).expanduser().resolve())
    if args.image_encoder:
        overrides["image_encoder"] = str(Path(args.image_encoder).expanduser().resolve())
    if args.ss_decoder:
        overrides["sparse_structure_decoder"] = str(Path(args.ss_decoder).expanduser().resolve())
    if args.commercial_safe:
        overrides["commercial_safe"] = True
    fields = {f: getattr(settings, f) for f in settings.__dataclass_fields__}
    return session.BackendSettings(**{**fields, **overrides})


@contextlib.contextmanager
def _console_log() -> Iterator[None]:
    """The command's progress lines on stderr while it runs (the add-on's own log file stays as it is)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{COMMAND}: %(message)s"))
    logger = logging.getLogger(__package__)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(min(level or logging.INFO, logging.INFO))
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def main(argv: list[str]) -> int:
    """Run the batch for the command-line arguments ``argv``; returns the exit code (0, 1 or 2).

    The last line on stdout is a JSON summary: ``{"report": path, "ok": n, "failed": n, ...}``.
    """
    try:
        args = parse_args(argv)
    except SystemExit as exc:  # argparse's own exit (--help: 0, bad flags: 2) as a return code
        return int(exc.code or 0)
    with _console_log():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    import bpy

    from .core import session as session_mod
    args.output = args.output.resolve()
    try:
        args.output.mkdir(parents=True, exist_ok=True)
        items = collect_items(args.input, args)
    except (OSError, ValueError, KeyError, BatchError) as exc:
        log.error("bad input: %s", exc)
        return 2
    if not items:
        log.error("no images found in %s", ", ".join(map(str, args.input)))
        return 2
    settings = backend_settings(args, bpy.app.online_access)
    problem = settings.problem()
    if problem:
        log.error("%s (or pass --backend-python)", problem)
        return 2

    report_path = args.output / "report.json"
    previous = {}
    if report_path.is_file() and not args.force:
        try:
            previous = {r["name"]: r for r in json.loads(report_path.read_text())["items"]}
        except (ValueError, KeyError, TypeError):
            previous = {}
    report = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "output": str(args.output),
              "backend": {"python": settings.python, "model": settings.model_source}, "items": []}
    session = session_mod.BackendSession(settings)
    t_all = time.monotonic()
    try:
        for index, item in enumerate(items, 1):
            if _already_done(previous, item):
                record = {**previous[item["name"]], "status": "skipped", "previous_status": "ok"}
            else:
                record = run_item(item, args, session)
            report["items"].append(record)
            log.info("[%d/%d] %s: %s%s", index, len(items), item["name"], record["status"],
                     f" - {record['error']['message']}" if record.get("error") else "")
            report["summary"] = {s: sum(r["status"] == s for r in report["items"])
                                 for s in ("ok", "failed", "cancelled", "skipped")}
            report["seconds"] = round(time.monotonic() - t_all, 3)
            _write_json(report_path, report)
    finally:
        session.stop()
    failed = report["summary"]["failed"] + report["summary"]["cancelled"]
    sys.stdout.write(json.dumps({"report": str(report_path), **report["summary"]}) + "\n")
    return 1 if failed else 0
