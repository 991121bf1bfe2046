"""Train a small TRELLIS.2 from nothing: procedural meshes -> data -> six networks -> release -> evaluation.

Every stage is one of the project's own commands, run as a child process, and every stage resumes:
the toolkit skips finished assets, a finished training is skipped and an unfinished one resumes from
its last checkpoint, so the script can be interrupted and re-run at any point. Two chains share the
GPU: the sparse-structure VAE, its latents and the sparse-structure flow; and the shape and texture
VAEs, their latents and the shape and texture flows. The sparse-structure chain starts by pretraining
the image encoder (``configs/<family>/image_encoder.json``: it learns to predict each object's coarse
occupancy from its condition pictures) next to the sparse-structure VAE; every flow then reads that
encoder's frozen tokens, so the shape and texture flows start as soon as their latents and the
encoder exist and train while the sparse-structure flow does. (Where the sparse-structure flow
trains the encoder further, ``trainer.args.train_image_encoder``, the other two flows wait for it.)

``--networks`` trains only some of them, continuing ``--init-from RELEASE``: the others (and, unless
``image_encoder`` is listed, the image encoder, then kept frozen) come from RELEASE unchanged, and
the release is assembled from the new runs plus RELEASE's networks (e.g. ``--networks ss_vae
ss_flow`` retrains stage 1 alone; ``--networks ss_flow --ss-encoder RUN/export/ss_enc_...`` trains
the flow further on the latents of the encoder RELEASE's decoder was exported with).

    python scripts/train_mini.py --work DIR [--family mini|tiny] [--count 960] [--test-count 48]
        [--resolution 512] [--views 8] [--vae-minutes 5] [--ss-vae-minutes M] [--encoder-minutes 3]
        [--flow-minutes 8] [--ss-flow-minutes M] [--init-from RELEASE] [--networks NAME ...]
        [--ss-encoder STEM] [--device cuda]

Outputs: ``DIR/meshes`` (GLBs + split.json), ``DIR/data`` (training set), ``DIR/runs/<network>``
(checkpoints, logs, loss.png, exported weights), ``DIR/release`` (the official layout) and
``DIR/eval`` (held-out table and picture grid).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "backend" / "train" / "configs"
VAES = ("ss_vae", "shape_vae", "tex_vae")
FLOWS = ("ss_flow", "shape_flow", "tex_flow")
NETWORKS = (*VAES, *FLOWS, "image_encoder")  # image_encoder: its pretraining
STAGE1 = ("ss_vae", "ss_flow", "image_encoder")  # they read only the sparse-structure occupancy
# What each network's outputs train: retraining it alone would leave RELEASE's copies of these
# reading latents (or image tokens) they were not trained on (the texture flow reads shape latents).
READERS = {"ss_vae": ("ss_flow",), "shape_vae": ("shape_flow", "tex_flow"), "tex_vae": ("tex_flow",),
           "image_encoder": FLOWS}
# Flows whose latents only the VAE of the same run can encode: a release ships no sparse-structure
# or texture encoder (the shape flow's latents may come from the release's shape encoder).
NEEDS_NEW_VAE = {"ss_flow": "ss_vae", "tex_flow": "tex_vae"}


def check_networks(networks: list[str], init_from: Path | None, ss_encoder: Path | None = None) -> None:
    """Raise ``ValueError`` (saying what to add) unless ``networks`` (names of ``NETWORKS``) can be
    trained alone, the rest coming from the release ``init_from``; ``ss_encoder`` (the encoder
    paired with that release's sparse-structure decoder) lets the sparse-structure flow train
    without its VAE."""
    if ss_encoder is not None and ("ss_vae" in networks or "ss_flow" not in networks):
        raise ValueError("--ss-encoder encodes the latents of --networks ss_flow trained without ss_vae "
                         "(a new ss_vae run exports its own encoder)")
    if set(networks) == set(NETWORKS):
        return
    if init_from is None:
        raise ValueError(f"--networks {' '.join(networks)} trains only some networks: give the release "
                         "the others come from with --init-from RELEASE")
    for flow, vae in NEEDS_NEW_VAE.items():
        if flow == "ss_flow" and ss_encoder is not None:
            continue
        if flow in networks and vae not in networks:
            hint = " or --ss-encoder the release's decoder was exported with" if flow == "ss_flow" else ""
            raise ValueError(f"--networks: {flow} needs {vae} in the same run (its latents come from "
                             f"{vae}'s encoder, which a release does not ship){hint}")
    for name, readers in READERS.items():
        missing = [r for r in readers if name in networks and r not in networks]
        if missing:
            raise ValueError(f"--networks: a new {name} changes what {', '.join(missing)} learned "
                             f"from; list {' '.join(missing)} too")


def check_ss_encoder(encoder: Path, release: Path) -> None:
    """Raise ``ValueError`` unless ``encoder`` (a checkpoint stem: ``STEM.json`` + ``STEM.safetensors``)
    is the pair of ``release``'s sparse-structure decoder: the VAE run that exported it must have
    exported that decoder, byte for byte, beside it. Latents from any other encoder would train the
    flow on a space the release's decoder cannot read."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from backend.train.release import ReleaseError, release_checkpoint

    missing = [f"{encoder}{suffix}" for suffix in (".json", ".safetensors")
               if not Path(f"{encoder}{suffix}").is_file()]
    if missing:
        raise ValueError(f"--ss-encoder: {', '.join(missing)} not found (give the stem, without the suffix)")
    try:
        decoder = Path(f"{release / release_checkpoint(release, 'sparse_structure_decoder')}.safetensors")
    except ReleaseError as exc:
        raise ValueError(f"--init-from: {exc}") from exc
    beside = encoder.parent / decoder.name
    if not beside.is_file() or beside.read_bytes() != decoder.read_bytes():
        raise ValueError(f"--ss-encoder: {encoder} is not the pair of {decoder}: its VAE run did not export "
                         f"that decoder beside it ({beside} is missing or differs)")


def _child_env() -> dict[str, str]:
    """This environment with the repository first on PYTHONPATH (keeping what was there)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def _log(msg: str) -> None:
    sys.stderr.write(f"[train_mini {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def _run(cmd: list[str], log_file: Path | None = None) -> None:
    _log(" ".join(str(c) for c in cmd))
    env = _child_env()
    out = open(log_file, "a") if log_file else None  # noqa: SIM115 - closed below
    try:
        subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, env=env, stdout=out, stderr=out)
    finally:
        if out:
            out.close()


def _parallel(cmds: dict[str, list[str]], logs: Path) -> None:
    """Run commands concurrently; fail (after all end) if any failed, naming it and its log."""
    env = _child_env()
    procs = {}
    for name, cmd in cmds.items():
        _log(f"{name}: {' '.join(str(c) for c in cmd)}")
        fh = open(logs / f"{name}.log", "a")  # noqa: SIM115 - handed to the child
        procs[name] = (subprocess.Popen([str(c) for c in cmd], cwd=ROOT, env=env, stdout=fh, stderr=fh), fh)
    failed = []
    for name, (proc, fh) in procs.items():
        if proc.wait() != 0:
            failed.append(name)
        fh.close()
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)} (see {logs}/<name>.log)")


def _done(run: Path) -> bool:
    return (
        (run / "export").is_dir()
        and any((run / "export").rglob("*.safetensors"))  # the encoder's run exports a folder
        and (run / "done.json").exists()
    )


def _train_cmds(names, args, work: Path, minutes: float, py: str,
                encoder: Path | None = None, configs: dict[str, Path] | None = None) -> dict[str, list[str]]:
    """The training command of each unfinished run of ``names`` (a started one resumes; a new one
    starts from ``--init-from``'s weights where given: the image encoder's pretraining from the
    release's encoder, passed as ``encoder``). ``configs`` replaces a network's family config."""
    configs = configs or {}
    cmds = {}
    for name in names:
        run = work / "runs" / name
        if _done(run):
            _log(f"{name}: finished earlier, skipped")
            continue
        cmd = [
            py,
            "-m",
            "backend.train",
            "--config",
            configs.get(name, CONFIGS / args.family / f"{name}.json"),
            "--output",
            run,
            "--data",
            work / "data",
            "--device",
            args.device,
            "--max-minutes",
            str(minutes),
        ]
        if encoder is not None:
            cmd += ["--image-encoder", encoder]
        if (run / "ckpts").is_dir() and any((run / "ckpts").glob("*.pt")):
            cmd.append("--resume")
        elif args.init_from is not None and name != "image_encoder":
            cmd += ["--init-from", args.init_from]
        cmds[name] = cmd
    return cmds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True)
    families = sorted(d.name for d in CONFIGS.iterdir() if (d / "image_encoder.json").is_file())
    p.add_argument("--family", default="mini", choices=families)
    p.add_argument("--count", type=int, default=960, help="procedural objects (train + test)")
    p.add_argument("--test-count", type=int, default=48)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--views", type=int, default=8)
    p.add_argument("--render-size", type=int, default=512)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--prepare-shards", type=int, default=2, help="concurrent prepare processes")
    p.add_argument("--device", default="cuda")
    p.add_argument("--vae-minutes", type=float, default=5.0)
    p.add_argument("--flow-minutes", type=float, default=8.0)
    p.add_argument("--ss-vae-minutes", type=float, default=None,
                   help="the sparse-structure VAE's budget (default: --vae-minutes); its flow starts "
                        "when it ends, while the other VAEs train")
    p.add_argument("--encoder-minutes", type=float, default=3.0,
                   help="the image encoder's pretraining budget (beside the sparse-structure VAE)")
    p.add_argument("--ss-flow-minutes", type=float, default=None,
                   help="the sparse-structure flow's budget (default: --flow-minutes); the shape and "
                        "texture flows train beside it")
    p.add_argument("--ss-flow-anneal", type=int, default=None, metavar="STEPS",
                   help="the sparse-structure flow runs STEPS steps (within its minutes) with its "
                        "learning rate falling along a cosine to 5%% of the config's (continuing a "
                        "release for a short while)")
    p.add_argument("--init-from", type=Path, default=None, metavar="RELEASE",
                   help="start every network from this release's weights where it has them (e.g. "
                        "backend/mini_release: training continues across GPU sessions), the image "
                        "encoder's pretraining from RELEASE/image_encoder")
    p.add_argument("--networks", nargs="+", choices=NETWORKS, default=list(NETWORKS), metavar="NAME",
                   help=f"train only these ({', '.join(NETWORKS)}; default: all); the others, and the "
                        "image encoder unless listed, come from --init-from RELEASE, which the release "
                        "is completed from")
    p.add_argument("--ss-encoder", type=Path, default=None, metavar="STEM",
                   help="with --networks ss_flow alone: the sparse-structure encoder (checkpoint stem, "
                        "e.g. RELEASE/ckpts/ss_enc_conv3d_mini_fp16 or RUN/export/...) whose decoder "
                        "--init-from's release ships; it encodes the flow's latents")
    p.add_argument("--eval-limit", type=int, default=0, help="held-out objects to evaluate (0: all)")
    p.add_argument("--skip-eval", action="store_true")
    args = p.parse_args(argv)
    try:
        check_networks(args.networks, args.init_from, args.ss_encoder)
        if args.ss_encoder is not None:
            args.ss_encoder = args.ss_encoder.resolve()
            check_ss_encoder(args.ss_encoder, args.init_from)
    except ValueError as exc:
        p.error(str(exc))
    if args.ss_flow_anneal is not None and args.ss_flow_anneal < 1:
        p.error(f"--ss-flow-anneal must be >= 1 step, got {args.ss_flow_anneal}")
    networks = set(args.networks)
    subset = networks != set(NETWORKS)
    if subset and "image_encoder" not in networks and not (args.init_from / "image_encoder").is_dir():
        p.error(f"--networks without image_encoder: {args.init_from}/image_encoder is missing")
    py = sys.executable
    work = args.work.resolve()
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def stage(name: str, fn) -> None:
        t0 = time.perf_counter()
        fn()
        timings[name] = round(time.perf_counter() - t0, 1)
        _log(f"{name}: {timings[name]} s")

    stage(
        "meshes",
        lambda: _run(
            [
                py,
                "-m",
                "backend.train.procedural",
                "--output",
                work / "meshes",
                "--count",
                args.count,
                "--seed",
                args.seed,
                "--test-count",
                args.test_count,
                "--workers",
                args.workers,
            ],
            logs / "meshes.log",
        ),
    )

    def image_encoder() -> None:
        if (work / "image_encoder" / "config.json").exists():
            return
        sys.path.insert(0, str(ROOT))
        from backend.train.conditioning import IMAGE_ENCODER_SIZES, write_image_encoder

        write_image_encoder(work / "image_encoder", seed=args.seed, **IMAGE_ENCODER_SIZES[args.family])

    if "image_encoder" in networks:  # the seed its pretraining may start from
        stage("image_encoder", image_encoder)
    configs = {n: CONFIGS / args.family / f"{n}.json" for n in NETWORKS}

    def config(name: str) -> dict:
        return json.loads(configs[name].read_text())

    ss_flow = config("ss_flow")
    if "image_encoder" not in networks and "ss_flow" in networks and ss_flow["trainer"]["args"].get(
            "train_image_encoder", False):
        # The release's encoder stays as it is: the flows taken from it were trained with it.
        ss_flow["trainer"]["args"]["train_image_encoder"] = False
        _log("ss_flow: the image encoder stays frozen")
    if args.ss_flow_anneal is not None:
        ss_flow["trainer"]["args"]["max_steps"] = args.ss_flow_anneal
        ss_flow["trainer"]["args"]["lr_schedule"] = {"name": "cosine", "steps": args.ss_flow_anneal}
        _log(f"ss_flow: {args.ss_flow_anneal} steps, learning rate annealed along a cosine")
    if ss_flow != config("ss_flow"):
        configs["ss_flow"] = work / "configs" / "ss_flow.json"
        configs["ss_flow"].parent.mkdir(parents=True, exist_ok=True)
        configs["ss_flow"].write_text(json.dumps(ss_flow, indent=2))

    def prepare() -> None:
        # Renders run in each shard's main process: several shards keep the GPU and the cores busy.
        shards = max(1, args.prepare_shards)
        # The grids the VAE configs train on, besides the main one (e.g. 256 for the mini VAEs).
        vaes = [n for n in ("shape_vae", "tex_vae") if n in networks]
        grids = {config(n)["dataset"]["args"]["resolution"] for n in vaes}
        extra = sorted(grids - {args.resolution})
        ss_grid = config("ss_vae")["dataset"]["args"]["resolution"]
        if networks <= set(STAGE1) and args.resolution != ss_grid:
            _log(f"only stage-1 networks are trained: --resolution {ss_grid} would suffice (they read "
                 f"only the {ss_grid}^3 sparse-structure occupancy) and prepares much faster")
        cmds = {}
        for rank in range(shards):
            cmds[f"prepare_{rank}"] = [
                py, "-m", "backend.train.data", "prepare",
                "--input", work / "meshes", "--output", work / "data",
                "--resolution", args.resolution, "--views", args.views, "--render-size", args.render_size,
                "--workers", max(1, args.workers // shards), "--device", args.device, "--seed", args.seed,
                "--rank", rank, "--world-size", shards,
            ]
            if extra:
                cmds[f"prepare_{rank}"] += ["--extra-resolutions", ",".join(map(str, extra))]
        _parallel(cmds, logs)
        _run([py, "-m", "backend.train.data", "merge", "--data", work / "data"], logs / "merge.log")

    stage("prepare", prepare)

    def new_encoder(run: str) -> Path:
        """The encoder the VAE run ``run`` exported (its checkpoint stem)."""
        names = json.loads((work / "runs" / run / "config.json").read_text())["trainer"]["args"][
            "release_names"]
        return work / "runs" / run / "export" / names["encoder"]

    encoding = threading.Lock()  # the two chains' encode steps both rewrite the merged records

    def encode(encoders: dict[str, Path]) -> None:
        """Latents of every prepared object from the encoders given (``--ss-encoder``: its stem...)."""
        cmd = [py, "-m", "backend.train.data", "encode", "--data", work / "data", "--device", args.device,
               "--conv-backend", config("shape_vae")["trainer"]["args"].get("conv_backend", "torch")]
        for flag, stem in encoders.items():
            cmd += [flag, stem]
        with encoding:
            _run(cmd, logs / "encode.log")

    # A flow config may train the image encoder (trainer.args.train_image_encoder): the other
    # flows, the release and the evaluation then use the encoder it exports.
    trains_encoder = [
        n for n in FLOWS if n in networks and config(n)["trainer"]["args"].get("train_image_encoder", False)
    ]
    if trains_encoder not in ([], ["ss_flow"]):
        raise SystemExit(f"only the sparse-structure flow may train the image encoder, got {trains_encoder}")
    seed_encoder = work / "image_encoder"  # the seed-initialised encoder pretraining starts from
    if args.init_from is not None:
        args.init_from = args.init_from.resolve()
        if (args.init_from / "image_encoder" / "config.json").is_file():
            seed_encoder = args.init_from / "image_encoder"
    # The encoder the flows start from: the pretraining's, or the release's where it is not listed.
    if "image_encoder" in networks:
        first_encoder = work / "runs" / "image_encoder" / "export" / "image_encoder"
    else:
        first_encoder = args.init_from / "image_encoder"
    ss_vae_minutes = args.ss_vae_minutes if args.ss_vae_minutes is not None else args.vae_minutes
    ss_flow_minutes = args.ss_flow_minutes if args.ss_flow_minutes is not None else args.flow_minutes

    encoder = work / "runs" / "ss_flow" / "export" / "image_encoder" if trains_encoder else first_encoder

    def release_shape_encoder() -> Path:
        """The checkpoint stem of ``--init-from``'s shape encoder."""
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        from backend.train.release import release_checkpoint

        return args.init_from / release_checkpoint(args.init_from, "shape_slat_encoder")

    rest = [n for n in ("shape_flow", "tex_flow") if n in networks]
    encoder_pretraining_ended = threading.Event()

    def structure_chain() -> None:
        # Stage 1 needs only the SS VAE: its flow starts as soon as the SS latents exist, while
        # the shape and texture VAEs are still training (the flow is the slowest to learn).
        try:
            cmds = _train_cmds([n for n in ("ss_vae",) if n in networks], args, work, ss_vae_minutes, py,
                               configs=configs)
            if "image_encoder" in networks:
                cmds.update(_train_cmds(["image_encoder"], args, work, args.encoder_minutes, py,
                                        seed_encoder, configs))
            _parallel(cmds, logs)
        finally:
            encoder_pretraining_ended.set()  # the other chain waits for it, failed or not
        if "ss_vae" in networks:
            encode({"--ss-encoder": new_encoder("ss_vae")})
        elif "ss_flow" in networks:
            encode({"--ss-encoder": args.ss_encoder})
        if "ss_flow" in networks:
            _parallel(_train_cmds(["ss_flow"], args, work, ss_flow_minutes, py, first_encoder, configs), logs)

    def latent_chain() -> None:
        vaes = [n for n in ("shape_vae", "tex_vae") if n in networks]
        _parallel(_train_cmds(vaes, args, work, args.vae_minutes, py, configs=configs), logs)
        latents = {}
        if "shape_vae" in networks:
            latents["--shape-encoder"] = new_encoder("shape_vae")
        elif rest:  # both SLat flows read shape latents: the release's shape encoder's, then
            latents["--shape-encoder"] = release_shape_encoder()
        if "tex_vae" in networks:
            latents["--pbr-encoder"] = new_encoder("tex_vae")
        if latents:
            encode(latents)
        if trains_encoder or not rest:
            return  # with trains_encoder these flows need the encoder the sparse-structure flow exports
        encoder_pretraining_ended.wait()
        if "image_encoder" in networks and not _done(work / "runs" / "image_encoder"):
            raise SystemExit(f"the image encoder's pretraining did not finish (see {logs}/image_encoder.log)")
        _parallel(_train_cmds(rest, args, work, args.flow_minutes, py, encoder, configs), logs)

    def chains() -> None:
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = [pool.submit(structure_chain), pool.submit(latent_chain)]
            errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            raise SystemExit("; ".join(str(e) for e in errors))

    stage("vaes_and_flows" if not trains_encoder else "vaes_and_structure", chains)
    if trains_encoder and rest:
        flows = _train_cmds(rest, args, work, args.flow_minutes, py, encoder, configs)
        stage("flows", lambda: _parallel(flows, logs))
    release_cmd = [
        py,
        "-m",
        "backend.train.release",
        "--output",
        work / "release",
        "--data",
        work / "data",
        "--image-encoder",
        encoder,
        "--runs",
        *[work / "runs" / n for n in (*VAES, *FLOWS) if n in networks],
    ]
    if subset:  # the networks not trained here come from the release this run continues
        release_cmd += ["--base", args.init_from]
    stage("release", lambda: _run(release_cmd, logs / "release.log"))
    if not args.skip_eval:
        cmd = [
            py,
            ROOT / "scripts" / "eval_mini.py",
            "--release",
            work / "release",
            "--data",
            work / "data",
            "--meshes",
            work / "meshes",
            "--out",
            work / "eval",
            "--device",
            args.device,
        ]
        if args.eval_limit:
            cmd += ["--limit", args.eval_limit]
        stage("eval", lambda: _run(cmd, logs / "eval.log"))
    (work / "timings.json").write_text(json.dumps(timings, indent=2))
    _log(f"done: {json.dumps(timings)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
