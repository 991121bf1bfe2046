"""Shared pieces of the ``generate`` / ``retexture`` commands: options, progress bar, summary."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from backend.fileio import output_folder_problem

from .api import ExportOptions, JobResult, Progress, SamplerOverrides
from .errors import PipelineError
from .model_source import BUNDLED_MINI, BUNDLED_MINI_DESCRIPTION, BUNDLED_MINI_MODEL, BUNDLED_MINI_RELEASE
from .runtime import DEFAULT_MODEL, Runtime


def add_runtime_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("runtime")
    g.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"local TRELLIS.2 folder, Hugging Face repo id, or '{BUNDLED_MINI_MODEL}' for the "
                        f"bundled mini model (small, {BUNDLED_MINI_DESCRIPTION}; for trying things out). "
                        f"Default {DEFAULT_MODEL}; when its weights are neither local nor downloadable "
                        "(offline, not cached, hub unreachable or access refused) the bundled mini model "
                        "is used instead, with a warning, if this installation has it")
    g.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    g.add_argument("--low-vram", action="store_true", help="move each network to the GPU only for its stage")
    g.add_argument("--offline", action="store_true", help="never download; the model must be local/cached")
    g.add_argument("--attention", default=None, help="attention backend for the flow models (e.g. sdpa)")
    g.add_argument("--rembg", choices=["none", "solid", "birefnet"], default="none",
                   help="background removal for images without alpha (default: none = require alpha)")
    g.add_argument("--rembg-model", default=None,
                   help="local BiRefNet / RMBG-2.0 folder for --rembg birefnet")
    g.add_argument("--allow-remote-code", action="store_true",
                   help="consent to run the Python code shipped in --rembg-model")


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("export")
    g.add_argument("--texture-size", type=int, default=2048)
    g.add_argument("--faces", type=int, default=500_000, help="decimation target (faces)")
    g.add_argument("--texture-format", choices=["png", "webp"], default="png")
    g.add_argument("--alpha-mode", choices=["auto", "MASK", "BLEND"], default="auto")
    g.add_argument("--double-sided", action="store_true")
    g.add_argument("--rasterizer", choices=["auto", "ours", "nvdiffrast"], default="auto",
                   help="'ours' avoids nvdiffrast's non-commercial licence")
    g.add_argument("--unwrap", choices=["auto", "fast", "xatlas"], default="auto")
    g.add_argument("--no-glb", action="store_true", help="only write the Blender result folder")
    g.add_argument("--no-direct", action="store_true", help="only write the GLB")


def add_sampler_arguments(p: argparse.ArgumentParser, stage: str, flag: str) -> None:
    g = p.add_argument_group(f"{stage} sampler (default: pipeline.json)")
    g.add_argument(f"--{flag}-steps", type=int, default=None)
    g.add_argument(f"--{flag}-guidance", type=float, default=None, help="guidance strength")
    g.add_argument(f"--{flag}-rescale", type=float, default=None, help="guidance rescale")
    g.add_argument(f"--{flag}-rescale-t", type=float, default=None)


def overrides(args: argparse.Namespace, flag: str, steps: int | None = None) -> SamplerOverrides:
    key = flag.replace("-", "_")
    own = getattr(args, f"{key}_steps")
    return SamplerOverrides(steps=own if own is not None else steps,
                            guidance_strength=getattr(args, f"{key}_guidance"),
                            guidance_rescale=getattr(args, f"{key}_rescale"),
                            rescale_t=getattr(args, f"{key}_rescale_t"))


def export_options(args: argparse.Namespace) -> ExportOptions:
    return ExportOptions(texture_size=args.texture_size, faces=args.faces, texture_format=args.texture_format,
                         write_glb=not args.no_glb, write_direct=not args.no_direct,
                         alpha_mode=args.alpha_mode, double_sided=args.double_sided,
                         rasterizer=args.rasterizer, unwrap=args.unwrap)


def runtime(args: argparse.Namespace, bundled_release: Path | None = BUNDLED_MINI_RELEASE) -> Runtime:
    """The runtime the options ask for; ``bundled_release`` is the bundled mini release folder."""
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return Runtime(model=args.model, device=device, low_vram=args.low_vram, offline=args.offline,
                   attention_backend=args.attention, bundled_release=bundled_release)


def remover(args: argparse.Namespace, device: str):
    from .rembg import make_remover

    return make_remover(args.rembg, args.rembg_model, args.allow_remote_code, device)


class ProgressBar:
    """One line per stage on stderr, redrawn in place: ``[shape LR] ######---- 7/12``."""

    def __init__(self, stream=None, width: int = 30) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.stage = ""
        self.t0 = time.perf_counter()

    def __call__(self, p: Progress) -> None:
        if p.stage != self.stage:
            if self.stage:
                self.stream.write("\n")
            self.stage = p.stage
        filled = int(self.width * p.step / max(p.total, 1))
        label = f"{p.stage}{' ' + p.message if p.message and p.message != 'done' else ''}"
        elapsed = time.perf_counter() - self.t0
        self.stream.write(f"\r{label:<34} [{'#' * filled}{'-' * (self.width - filled)}] "
                          f"{p.step}/{p.total} {100 * p.fraction:5.1f}% {elapsed:6.1f}s")
        self.stream.flush()

    def close(self) -> None:
        if self.stage:
            self.stream.write("\n")
            self.stream.flush()


def summary(result: JobResult) -> str:
    lines = ["", "summary:"]
    for stage, s in result.seconds_per_stage.items():
        lines.append(f"  {stage:<18} {s:8.2f} s")
    lines.append(f"  {'total':<18} {sum(result.seconds_per_stage.values()):8.2f} s")
    for a in result.assets:
        files = ", ".join(str(p) for p in (a.glb, a.direct) if p)
        lines.append(f"  {a.name}: {a.faces} faces, {a.vertices} vertices, {a.texture_size} px textures, "
                     f"alpha {a.alpha_mode} -> {files}")
    lines.append(f"  peak memory: {result.peak_memory_bytes / 2**30:.2f} GiB")
    model = next((a.extra["model"] for a in result.assets if "model" in a.extra), None)
    if model is not None:
        note = f" - {BUNDLED_MINI_DESCRIPTION}" if model.get("source") == BUNDLED_MINI else ""
        lines.append(f"  model: {model.get('source')} ({model.get('path')}){note}")
    return "\n".join(lines) + "\n"


def run_generator(args: argparse.Namespace, make_request, method: str,
                  bundled_release: Path | None = BUNDLED_MINI_RELEASE) -> int:
    """Build the request and a generator from ``args`` and run ``Trellis2Generator.<method>``
    (``"generate"`` or ``"retexture"``) with a progress bar; returns the exit status.

    ``bundled_release`` is the bundled mini release folder (``--model mini``, and the fallback
    for unavailable official weights); None disables both."""
    from .generator import Trellis2Generator

    def job(bar):
        # before any model is loaded: a bad destination must not cost the whole run first
        problem = output_folder_problem(args.output)
        if problem is not None:
            raise PipelineError(f"-o/--output {str(args.output)!r} cannot be used: {problem}",
                                "give a folder that can be created or written")
        request = make_request(args)
        rt = runtime(args, bundled_release)
        gen = Trellis2Generator(rt, remover=remover(args, rt.device))
        args.output.mkdir(parents=True, exist_ok=True)
        return getattr(gen, method)(request, on_progress=bar)

    return run_job(job, ProgressBar())


def run_job(job, bar: ProgressBar) -> int:
    """Run ``job(bar)`` and print a summary or a one-line error; returns the exit status."""
    from .api import Cancelled

    try:
        result = job(bar)
    except PipelineError as e:
        bar.close()
        sys.stderr.write(f"error: {e}\n")
        return 2
    except Cancelled:
        bar.close()
        sys.stderr.write("cancelled\n")
        return 130
    bar.close()
    sys.stderr.write(summary(result))
    return 0
