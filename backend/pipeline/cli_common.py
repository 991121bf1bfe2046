"""Shared pieces of the ``generate`` / ``retexture`` commands: options, progress bar, summary."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from pathlib import Path

from backend import protocol
from backend.fileio import output_folder_problem

from .accelerator import DEVICE_CHOICES, resolve_device
from .api import UNWRAP_METHODS, ExportOptions, JobResult, Progress, SamplerOverrides
from .errors import PipelineError
from .licences import check_background_removal
from .model_source import (
    BUNDLED_MINI,
    BUNDLED_MINI_DESCRIPTION,
    BUNDLED_MINI_MODEL,
    BUNDLED_MINI_RELEASE,
    DINOV3_REPO,
    SS_DECODER_REPO,
    TRELLIS2_EXTERNAL_REFERENCES,
)
from .runtime import DEFAULT_MODEL, Runtime


def add_runtime_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("runtime")
    g.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"local TRELLIS.2 folder, Hugging Face repo id, or '{BUNDLED_MINI_MODEL}' for the "
                        f"bundled mini model (small, {BUNDLED_MINI_DESCRIPTION}; for trying things out). "
                        f"Default {DEFAULT_MODEL}; when its weights are neither local nor downloadable "
                        "(offline, not cached, hub unreachable or access refused) the bundled mini model "
                        "is used instead, with a warning, if this installation has it")
    g.add_argument("--device", default="auto",
                   help=f"torch device: {', '.join(DEVICE_CHOICES)} "
                        "(default auto: CUDA, else Apple MPS, else CPU)")
    memory = g.add_mutually_exclusive_group()
    memory.add_argument("--low-vram", action="store_true",
                        help="move each network to the GPU only for its stage")
    memory.add_argument("--vram-budget", type=vram_budget, default=None, metavar="GIB",
                        help="keep networks on the GPU while their weights fit GIB gibibytes; a stage that "
                             "needs room first moves the least recently used others to host memory "
                             "(None: every network stays on the GPU once loaded)")
    g.add_argument("--offline", action="store_true", help="never download; the model must be local/cached")
    g.add_argument("--attention", default=None, help="attention backend for the flow models (e.g. sdpa)")
    g.add_argument("--batched-cfg", action="store_true",
                   help="run each guided sampler step's conditional and unconditional passes as one "
                        "batched network call (same results; not yet timed on a GPU, so off by default)")
    g.add_argument("--fp8", action="store_true",
                   help="FP8 (e4m3) matmuls in the flow models' transformer blocks: faster on GPUs with FP8 "
                        "tensor cores (compute capability 8.9+: Ada, Hopper), results change slightly "
                        "(see the README's FP8 section)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the flow models' transformer blocks (the first job compiles them; "
                        "not yet timed in the pipeline on a GPU, so off by default)")
    g.add_argument("--image-encoder", default=None, metavar="DIR",
                   help=f"local copy of {DINOV3_REPO} (gated on Hugging Face), used instead of the hub")
    g.add_argument("--ss-decoder", default=None, metavar="DIR",
                   help=f"local copy of {SS_DECODER_REPO} (at least its "
                        f"{TRELLIS2_EXTERNAL_REFERENCES[SS_DECODER_REPO][0]}.json/.safetensors), used "
                        "instead of the hub")
    g.add_argument("--rembg", choices=tuple(protocol.BACKGROUND_REMOVAL_FLAGS),
                   default=protocol.DEFAULT_BACKGROUND_REMOVAL,
                   help="background removal for images without alpha: none (require alpha), solid (cut out "
                        "a plain, uniform background; busy pictures are refused) or birefnet (a local "
                        f"BiRefNet / RMBG-2.0 folder); default {protocol.DEFAULT_BACKGROUND_REMOVAL}")
    g.add_argument("--rembg-model", default=None,
                   help="local BiRefNet / RMBG-2.0 folder for --rembg birefnet")
    g.add_argument("--allow-remote-code", action="store_true",
                   help="consent to run the Python code shipped in --rembg-model")
    g.add_argument("--commercial-safe", action="store_true",
                   help="never use the parts under non-commercial licences: nvdiffrast (the texture baker "
                        "uses our rasterizer) and RMBG-2.0 / BiRefNet background removal (see NOTICE)")


def vram_budget(text: str) -> float:
    """``--vram-budget``'s value: GiB above 0 (argparse names the option in its error)."""
    try:
        gib = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of GiB, got {text!r}") from None
    problem = protocol.vram_budget_problem(gib)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return gib


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("export")
    g.add_argument("--texture-size", type=int, default=protocol.Export.texture_size)
    g.add_argument("--faces", type=int, default=protocol.Export.faces, help="decimation target (faces)")
    g.add_argument("--texture-format", choices=protocol.TEXTURE_FORMATS,
                   default=protocol.Export.texture_format)
    g.add_argument("--alpha-mode", choices=["auto", "MASK", "BLEND"], default="auto")
    g.add_argument("--double-sided", action="store_true")
    g.add_argument("--rasterizer", choices=["auto", "ours", "nvdiffrast"], default="auto",
                   help="'ours' avoids nvdiffrast's non-commercial licence")
    g.add_argument("--unwrap", choices=UNWRAP_METHODS, default=protocol.Export.unwrap,
                   help="UV method: 'fast' axis-projection charts take seconds at any size but cut more "
                        "seams and use the texture less well; 'xatlas' packs fewer, larger charts (sharper "
                        "textures at the same size) but takes minutes on large meshes; 'auto' uses xatlas "
                        "for small meshes and the fast charts for large ones")
    g.add_argument("--remove-floaters", action="store_true", help="drop small pieces beside the object")
    g.add_argument("--remove-inner-shells", action="store_true",
                   help="drop pieces enclosed by another closed piece (never seen, they cost triangles)")
    g.add_argument("--fill-holes", action="store_true", help="close small holes in the surface")
    g.add_argument("--no-normal-map", action="store_true",
                   help="do not bake a normal map of the full-resolution surface onto the decimated mesh")
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
                         rasterizer=args.rasterizer, unwrap=args.unwrap, remove_floaters=args.remove_floaters,
                         remove_inner_shells=args.remove_inner_shells, fill_holes=args.fill_holes,
                         bake_normal_map=not args.no_normal_map)


def runtime(args: argparse.Namespace, bundled_release: Path | None = BUNDLED_MINI_RELEASE) -> Runtime:
    """The runtime the options ask for; ``bundled_release`` is the bundled mini release folder."""
    device = resolve_device(args.device)
    return Runtime(model=args.model, device=device, low_vram=args.low_vram,
                   vram_budget_gib=args.vram_budget, offline=args.offline,
                   attention_backend=args.attention, bundled_release=bundled_release,
                   dependencies=local_copies(args), commercial_safe=args.commercial_safe,
                   batched_cfg=args.batched_cfg, fp8=args.fp8, compile_blocks=args.compile)


def local_copies(args: argparse.Namespace) -> dict[str, str]:
    """Repo id -> local folder for the dependencies the options name (``--image-encoder``, ...)."""
    named = {DINOV3_REPO: args.image_encoder, SS_DECODER_REPO: args.ss_decoder}
    return {repo: str(Path(folder).expanduser()) for repo, folder in named.items() if folder}


def remover(args: argparse.Namespace, device: str):
    from .rembg import make_remover

    if args.commercial_safe:
        check_background_removal(args.rembg)
    return make_remover(args.rembg, args.rembg_model, args.allow_remote_code, device)


class ProgressBar:
    """One line per stage on stderr, redrawn in place: ``[shape LR] ######---- 7/12``.

    Log records written while a bar line is open start on a line of their own (see
    :meth:`above_logs`), instead of being glued onto the bar.
    """

    def __init__(self, stream=None, width: int = 30) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.stage = ""
        self.t0 = time.perf_counter()
        self._open = False  # a bar line is on screen without its newline

    def break_line(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False

    @contextlib.contextmanager
    def above_logs(self, logger: logging.Logger | None = None):
        """While active, every handler of ``logger`` (default: the root logger) ends the bar's line
        before it writes a record."""
        logger = logger or logging.getLogger()

        def end_bar_line(_record: logging.LogRecord) -> bool:
            self.break_line()
            return True

        handlers = list(logger.handlers)
        for handler in handlers:
            handler.addFilter(end_bar_line)
        try:
            yield self
        finally:
            for handler in handlers:
                handler.removeFilter(end_bar_line)

    def __call__(self, p: Progress) -> None:
        if p.stage != self.stage:
            self.break_line()
            self.stage = p.stage
        filled = int(self.width * p.step / max(p.total, 1))
        label = f"{p.stage}{' ' + p.message if p.message and p.message != 'done' else ''}"
        elapsed = time.perf_counter() - self.t0
        self.stream.write(f"\r{label:<34} [{'#' * filled}{'-' * (self.width - filled)}] "
                          f"{p.step}/{p.total} {100 * p.fraction:5.1f}% {elapsed:6.1f}s")
        self.stream.flush()
        self._open = True

    def close(self) -> None:
        self.break_line()


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

    _quiet_library_progress()
    bar = ProgressBar()
    with bar.above_logs():
        return run_job(job, bar)


def _quiet_library_progress() -> None:
    """Our bar is the only progress display: the Hugging Face libraries' own bars are turned off."""
    try:
        from huggingface_hub.utils import disable_progress_bars
        from transformers.utils import logging as transformers_logging
    except ImportError:
        return
    disable_progress_bars()
    transformers_logging.disable_progress_bar()


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
