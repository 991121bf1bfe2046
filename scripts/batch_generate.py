"""Headless batch generation: many images -> one .glb and/or .blend each, plus a JSON report.

Run it inside Blender or with the ``bpy`` module::

    blender --background --python scripts/batch_generate.py -- --input DIR --output OUT [options]
    .venv/bin/python scripts/batch_generate.py --input a.png b.png --output OUT [options]
    .venv/bin/python scripts/batch_generate.py --input jobs.json --output OUT

``--input`` takes a folder (its image files), image files, or a manifest::

    {"defaults": {"pipeline_type": "1024_cascade", "texture_size": 2048},
     "items": [{"image": "chair.png", "seed": 7, "name": "chair_a", "faces": 100000,
                "steps": {"shape": 20}, "guidance": {"shape": 6.0}}, "lamp.png",
               {"image": "car_front.png", "views": ["car_side.png", "car_back.png"],
                "multiview": "stochastic"}]}

Image paths in a manifest are relative to the manifest. ``views`` are more pictures of the
item's object (up to 5 besides ``image``); ``multiview`` says how they are combined
("stochastic", the default, or "multidiffusion"). Every item gets a fresh scene;
a failed item is recorded and the batch goes on. ``OUT/report.json`` lists each item's
status (ok, failed, skipped), timings, outputs and error; it is rewritten after every
item. Items already done (ok in an earlier report, outputs present) are skipped unless
``--force``. The exit code is 1 when any item failed, 2 for bad arguments, else 0.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tga", ".tif", ".tiff", ".exr"}
ITEM_KEYS = {"image", "name", "seed", "pipeline_type", "texture_size", "faces", "steps", "guidance", "views",
             "multiview"}
STAGES = ("sparse_structure", "shape", "texture")


def _addon():
    """The add-on package: the installed extension when Blender has it enabled, else this checkout's."""
    for name, module in list(sys.modules.items()):
        if name.startswith("bl_ext.") and name.endswith(".trellis2_blender"):
            return module
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("trellis2_blender")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="batch_generate.py", description=__doc__.splitlines()[0])
    parser.add_argument("--input", nargs="+", required=True, type=Path,
                        help="a folder of images, image files, or a manifest .json")
    parser.add_argument("--output", required=True, type=Path, help="folder for outputs and report.json")
    parser.add_argument("--format", default="glb,blend", help="comma-separated: glb, blend (default both)")
    parser.add_argument("--preview", action="store_true", help="also render a 256 px Cycles preview PNG")
    parser.add_argument("--pipeline-type", default="1024_cascade",
                        choices=("512", "1024", "1024_cascade", "1536_cascade"))
    parser.add_argument("--seed", type=int, default=42, help="seed for items that do not set one")
    parser.add_argument("--texture-size", type=int, default=2048)
    parser.add_argument("--faces", type=int, default=200_000, help="face target of the mesh")
    parser.add_argument("--backend-python", default="", help="the backend's interpreter (default: found)")
    parser.add_argument("--model", default="", help="Hugging Face repo id or local folder")
    parser.add_argument("--device", default="", help="auto, cuda or cpu")
    parser.add_argument("--low-vram", action="store_true")
    parser.add_argument("--background-removal", choices=["none", "solid", "rmbg"], default=None,
                        help="pictures without transparency: refuse, plain-background keyer, or "
                             "RMBG-2.0 (rmbg consents to running that model's own code; default: the "
                             "add-on's setting)")
    parser.add_argument("--rmbg-model", default="",
                        help="local RMBG-2.0 / BiRefNet folder for --background-removal rmbg")
    parser.add_argument("--online", action="store_true", help="allow downloading missing weights")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per item")
    parser.add_argument("--force", action="store_true", help="redo items that are already done")
    args = parser.parse_args(argv)
    args.formats = {f.strip() for f in args.format.split(",") if f.strip()}
    if not args.formats <= {"glb", "blend"} or not args.formats:
        parser.error("--format takes glb, blend or both")
    return args


def collect_items(inputs: list[Path], args: argparse.Namespace) -> list[dict]:
    """Every item to make, with its own settings filled in from the manifest and the options."""
    defaults = {"pipeline_type": args.pipeline_type, "seed": args.seed, "texture_size": args.texture_size,
                "faces": args.faces, "steps": {}, "guidance": {}}
    items: list[dict] = []
    for path in inputs:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            items += [{**defaults, "image": str(p.resolve())} for p in files]
        elif path.suffix.lower() == ".json":
            manifest = json.loads(path.read_text(encoding="utf-8"))
            entries = manifest if isinstance(manifest, list) else manifest.get("items", [])
            local = {**defaults, **(manifest.get("defaults", {}) if isinstance(manifest, dict) else {})}
            for entry in entries:
                entry = {"image": entry} if isinstance(entry, str) else dict(entry)
                unknown = set(entry) - ITEM_KEYS
                if unknown:
                    raise ValueError(f"{path}: unknown item keys {sorted(unknown)}")
                image = Path(entry["image"])
                entry["image"] = str(image if image.is_absolute() else (path.parent / image).resolve())
                entry["views"] = [str(v if v.is_absolute() else (path.parent / v).resolve())
                                  for v in map(Path, entry.get("views", []))]
                items.append({**local, **entry})
        else:
            items.append({**defaults, "image": str(path.resolve())})
    names: dict[str, int] = {}
    for item in items:
        base = item.get("name") or Path(item["image"]).stem
        names[base] = names.get(base, 0) + 1
        item["name"] = base if names[base] == 1 else f"{base}_{names[base]}"
    return items


def _write_json(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
    os.replace(tmp, path)


def _clear_scene(bpy) -> None:
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    bpy.data.orphans_purge(do_local_ids=True, do_linked_ids=True, do_recursive=True)


def run_item(item: dict, args, session, addon, bpy) -> dict:
    jobs = importlib.import_module(addon.__name__ + ".jobs")
    scene_io = importlib.import_module(addon.__name__ + ".scene_io")
    name = item["name"]
    out = args.output
    record: dict = {"name": name, "image": item["image"], "seed": item["seed"], "status": "failed",
                    "seconds": {}, "outputs": {}}
    t0 = time.monotonic()
    spec = jobs.GenerateSpec(
        image=item["image"], name=name, output_dir=str(out / ".jobs" / name),
        pipeline_type=item["pipeline_type"], seed=int(item["seed"]),
        **{stage: (item["steps"].get(stage), item["guidance"].get(stage)) for stage in STAGES},
        face_target=int(item["faces"]), texture_size=int(item["texture_size"]),
        views=tuple(item.get("views", ())),
        **({"multiview": item["multiview"]} if item.get("multiview") else {}))
    for picture in (item["image"], *item.get("views", ())):
        if not Path(picture).is_file():
            record["error"] = {"code": "invalid_request", "message": f"image not found: {picture}"}
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
            path = out / f"{name}.glb"
            bpy.ops.export_scene.gltf(filepath=str(path), export_format="GLB", use_selection=True)
            record["outputs"]["glb"] = str(path)
        if "blend" in args.formats:
            path = out / f"{name}.blend"
            bpy.ops.wm.save_as_mainfile(filepath=str(path), copy=True, compress=True)
            record["outputs"]["blend"] = str(path)
        if args.preview:
            render = importlib.import_module(addon.__name__ + ".render")
            record["outputs"]["preview"] = str(render.render_preview(obj, out / f"{name}.png"))
    except Exception as exc:  # noqa: BLE001 - one bad item must not stop the batch
        record["error"] = {"code": "import_failed", "message": f"{type(exc).__name__}: {exc}"}
        return record
    finally:
        _clear_scene(bpy)
    record["seconds"]["import_export"] = round(time.monotonic() - t1, 3)
    record["status"] = "ok"
    return record


def _already_done(previous: dict, item: dict) -> bool:
    rec = previous.get(item["name"])
    if not rec or rec.get("status") not in ("ok", "skipped"):
        return False
    if rec.get("image") != item["image"] or rec.get("seed") != item["seed"]:
        return False
    return all(Path(p).is_file() for p in rec.get("outputs", {}).values()) and bool(rec.get("outputs"))


def main(argv: list[str]) -> int:
    import bpy

    args = parse_args(argv)
    args.output = args.output.resolve()
    args.output.mkdir(parents=True, exist_ok=True)
    try:
        items = collect_items(args.input, args)
    except (OSError, ValueError, KeyError) as exc:
        sys.stderr.write(f"batch_generate: bad input: {exc}\n")
        return 2
    if not items:
        sys.stderr.write("batch_generate: no images found\n")
        return 2

    addon = _addon()
    preferences = importlib.import_module(addon.__name__ + ".preferences")
    session_mod = importlib.import_module(addon.__name__ + ".session")
    settings = preferences.backend_settings(bpy.context, offline=not args.online)
    overrides = {}
    if args.backend_python:
        overrides["python"] = str(Path(args.backend_python).expanduser().absolute())
    if args.model:
        model = Path(args.model).expanduser()
        overrides["model_source"] = str(model.resolve()) if model.is_dir() else args.model
    if args.device:
        overrides["device"] = args.device
    if args.low_vram:
        overrides["low_vram"] = True
    if args.background_removal:
        overrides["background_removal"] = args.background_removal
    if args.rmbg_model:
        overrides["background_remover"] = str(Path(args.rmbg_model).expanduser().resolve())
    settings = session_mod.BackendSettings(**{**settings.__dict__, **overrides})
    problem = settings.problem()
    if problem:
        sys.stderr.write(f"batch_generate: {problem} (use --backend-python)\n")
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
                record = run_item(item, args, session, addon, bpy)
            report["items"].append(record)
            sys.stderr.write(f"[{index}/{len(items)}] {item['name']}: {record['status']}"
                             f"{' - ' + record['error']['message'] if record.get('error') else ''}\n")
            report["summary"] = {s: sum(r["status"] == s for r in report["items"])
                                 for s in ("ok", "failed", "cancelled", "skipped")}
            report["seconds"] = round(time.monotonic() - t_all, 3)
            _write_json(report_path, report)
    finally:
        session.stop()
    failed = report["summary"]["failed"] + report["summary"]["cancelled"]
    sys.stdout.write(json.dumps({"report": str(report_path), **report["summary"]}) + "\n")
    return 1 if failed else 0


def _argv() -> list[str]:
    argv = sys.argv
    return argv[argv.index("--") + 1:] if "--" in argv else argv[1:]


if __name__ == "__main__":
    sys.exit(main(_argv()))
